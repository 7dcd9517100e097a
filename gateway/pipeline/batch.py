"""The ``batch`` stage: readings grouped into one telemetry message.

A group is sent when it holds ``max_readings``, or once its first reading is
``max_delay_s`` old: checked when the next reading arrives and, between readings, by
the pipeline's timer (``expire``).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.pipeline.pool import Pool, Record


class Batch:
    def __init__(self, max_readings: int, max_delay_s: float, pool: Pool[Record],
                 send: Callable[[list[Record]], None]) -> None:
        self.max_readings = max_readings
        self.max_delay_s = max_delay_s
        self._pool = pool
        self._send = send
        # The group in progress, oldest first.
        self.records: list[Record] = []

    def deadline(self) -> float | None:
        """When the group in progress is due, on the readings' clock."""
        return self.records[0].ts + self.max_delay_s if self.records else None

    def add(self, record: Record) -> None:
        records = self.records
        if records and not self._fits(record.ts):
            self._seal()
        records.append(record)
        if len(records) >= self.max_readings:
            self._seal()

    def expire(self, now: float) -> None:
        if self.records and not self._fits(now):
            self._seal()

    def flush(self) -> None:
        if self.records:
            self._seal()

    def _fits(self, ts: float) -> bool:
        # A wall clock stepped back (NTP on a Pi without RTC) ends the group too, rather
        # than holding it until the clock catches up.
        first = self.records[0].ts
        return first <= ts < first + self.max_delay_s

    def _seal(self) -> None:
        records = self.records
        try:
            self._send(records)
        finally:
            for record in records:
                self._pool.release(record)
            records.clear()
