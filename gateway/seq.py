"""Per-sensor telemetry sequence numbers that never repeat, across restarts too.

Writing the counter for every message would wear the SD card, so the store reserves a
block of numbers on disk and hands them out from memory. After a crash the unused
rest of a block is skipped: consumers see a gap in ``seq``, never a repeat.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.statefile import read_json, write_atomic

BLOCK = 1000

Offload = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]


class SeqCorrupt(Exception):
    pass


class SeqStore:
    def __init__(self, path: Path, offload: Offload, block: int = BLOCK) -> None:
        self._path = path
        self._offload = offload
        self._block = block
        self._next: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Read the reserved high-water marks; numbering resumes above them."""
        data = read_json(self._path) or {}
        if not isinstance(data, dict) or not all(
            isinstance(v, int) and v >= 0 for v in data.values()
        ):
            raise SeqCorrupt(f"{self._path}: expected {{sensor: high-water mark}}")
        self._next = dict(data)
        self._reserved = dict(data)

    async def next(self, sensor: str) -> int:
        seq = self._next.get(sensor, 0)
        if seq >= self._reserved.get(sensor, 0):
            async with self._lock:
                if seq >= self._reserved.get(sensor, 0):
                    reserved = {**self._reserved, sensor: seq + self._block}
                    payload = json.dumps(reserved, sort_keys=True).encode()
                    await self._offload(lambda: write_atomic(self._path, payload))
                    self._reserved = reserved
            seq = self._next.get(sensor, 0)
        self._next[sensor] = seq + 1
        return seq
