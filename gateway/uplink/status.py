"""The device's identity and the retained status payloads (``P/D/status``, docs/PROTOCOL.md
section 3.3).

The online status also names the device's groups, so an operator's
``push-config --group`` learns from the broker alone which devices it should hear from.

They live with the uplink because the uplink publishes them itself (on CONNACK, as the
last will, at shutdown); it sends bytes and knows nothing of readings or the pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway import wire


@dataclass(frozen=True)
class Identity:
    """Who the device says it is in its online status; ``boot_id`` is new at every start."""

    device_id: str
    version: str
    boot_id: str
    groups: tuple[str, ...] = ()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def online(ts: float, version: str, boot_id: str, groups: Sequence[str] = ()) -> bytes:
    """The status published on every CONNACK."""
    return _dumps({"state": wire.Presence.ONLINE, "ts": ts, "version": version, "boot_id": boot_id,
                   "groups": list(groups)})


def offline(reason: str, ts: float | None = None) -> bytes:
    """The status of a device gone: the last will (``connection lost``) or a clean stop."""
    payload: dict[str, Any] = {"state": wire.Presence.OFFLINE, "reason": reason}
    if ts is not None:
        payload["ts"] = ts
    return _dumps(payload)
