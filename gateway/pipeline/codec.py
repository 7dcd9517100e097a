"""Encoding of the telemetry payload (docs/PROTOCOL.md section 3.1)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.pipeline.pool import Record


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def telemetry(device: str, sensor: str, seq: int, readings: Sequence[Mapping[str, float]]) -> bytes:
    return _dumps({"device": device, "sensor": sensor, "seq": seq, "readings": list(readings)})


def telemetry_head(device: str, sensor: str) -> bytes:
    """The constant start of a sensor's telemetry payloads, up to the ``seq`` value."""
    return b'{"device":%b,"sensor":%b,"seq":' % (_dumps(device), _dumps(sensor))


def telemetry_message(head: bytes, seq: int, readings: bytes) -> bytes:
    """A whole telemetry payload from its head, its ``seq`` and ``ReadingsEncoder`` output."""
    return b'%b%d,"readings":%b}' % (head, seq, readings)


class ReadingsEncoder:
    """The ``readings`` array of a telemetry payload, written straight from pooled records.

    Same JSON as ``telemetry`` (floats as ``repr``, no spaces) without building a dict per
    reading, a little faster than ``json.dumps`` of those dicts. One buffer per encoder is
    reused for every message, and the JSON form of each quantity name is kept once.
    JSON has no NaN or infinity, so a non-finite value leaves its quantity out.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._keys: dict[str, bytes] = {}

    def encode(self, readings: Iterable[Record]) -> bytes:
        buffer = self._buffer
        del buffer[:]
        keys = self._keys
        isfinite = math.isfinite
        to_text = float.__repr__
        separator = b"["
        for reading in readings:
            buffer += separator
            buffer += b'{"ts":'
            buffer += to_text(reading.ts).encode()
            for quantity, value in reading.values.items():
                if isfinite(value):
                    key = keys.get(quantity)
                    if key is None:
                        key = keys[quantity] = b",%b:" % _dumps(quantity)
                    buffer += key
                    buffer += to_text(value).encode()
            if reading.zone is not None:
                buffer += b',"zone":%b' % _dumps(reading.zone)
            if reading.anomaly_state is not None:
                buffer += b',"anomaly_state":%b' % _dumps(reading.anomaly_state)
            if reading.out_of_range:
                buffer += b',"out_of_range":%b' % _dumps(reading.out_of_range)
            buffer += b"}"
            separator = b","
        buffer += b"]" if separator == b"," else b"[]"
        return bytes(buffer)

