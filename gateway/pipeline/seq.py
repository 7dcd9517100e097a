"""Per-sensor telemetry sequence numbers that never repeat, across restarts too.

Writing the counter for every message would wear the SD card, so the store reserves a
block of numbers on disk and hands them out from memory. A clean stop writes down the
next number of every sensor (``close``), so the next process goes on with +1. After a
crash the unused rest of a block is skipped: consumers see a gap in ``seq`` (less than a
block), never a repeat.

A corrupt file is set aside and numbering restarts above a floor taken from the clock
(milliseconds since the epoch), far above anything a device has counted to: a device
in a cabinet must come back up, and it still must not repeat a number.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import structlog

from gateway.statefile import Offload, read_json, set_aside, write_atomic

log = structlog.get_logger(__name__)

BLOCK = 1000


class SeqStore:
    def __init__(self, path: Path, offload: Offload, block: int = BLOCK) -> None:
        self._path = path
        self._offload = offload
        self._block = block
        self._next: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._floor = 0
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """Read the reserved high-water marks; numbering resumes above them."""
        try:
            data = read_json(self._path) or {}
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in data.values()
        ):
            aside = set_aside(self._path)
            self._floor = int(time.time() * 1000)
            log.error("seq.corrupt", file=str(self._path), moved_to=str(aside), floor=self._floor)
            data = {}
        self._next = dict(data)
        self._reserved = dict(data)

    async def next(self, sensor: str) -> int:
        seq = self._next.get(sensor, self._floor)
        if seq >= self._reserved.get(sensor, 0):
            async with self._lock:
                if seq >= self._reserved.get(sensor, 0):
                    reserved = {**self._reserved, sensor: seq + self._block}
                    payload = json.dumps(reserved, sort_keys=True).encode()
                    await self._offload(lambda: write_atomic(self._path, payload))
                    self._reserved = reserved
            seq = self._next.get(sensor, self._floor)
        self._next[sensor] = seq + 1
        return seq

    async def close(self) -> None:
        """At a clean stop, once the pipelines have flushed: record the next number of every
        sensor exactly, so the next process continues without a gap. A number handed out
        afterwards reserves a new block first, so none can be handed out twice; a failed
        write leaves the reservations on disk, and only the gap of a crash."""
        async with self._lock:
            exact = dict(self._next)
            # Lowered before the write: a next() meanwhile waits for the lock and reserves.
            reserved, self._reserved = self._reserved, exact
            payload = json.dumps(exact, sort_keys=True).encode()
            try:
                await self._offload(lambda: write_atomic(self._path, payload))
            except OSError as exc:
                log.error("seq.save_failed", file=str(self._path), error=str(exc))
                self._reserved = reserved
