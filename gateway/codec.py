"""Encoding of the payloads of SPEC section 4."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def telemetry(device: str, sensor: str, seq: int, readings: Sequence[Mapping[str, float]]) -> bytes:
    return _dumps({"device": device, "sensor": sensor, "seq": seq, "readings": list(readings)})


def status_online(ts: float, version: str, boot_id: str) -> bytes:
    return _dumps({"state": "online", "ts": ts, "version": version, "boot_id": boot_id})


def status_offline(reason: str, ts: float | None = None) -> bytes:
    payload: dict[str, Any] = {"state": "offline", "reason": reason}
    if ts is not None:
        payload["ts"] = ts
    return _dumps(payload)
