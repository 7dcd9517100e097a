"""The scalar pipeline stages: one small class per configured ``stage``.

A stage takes a pooled record and returns the record to hand on, or None once it has
released the record to the pool or kept it. A stage keeps only per-quantity numbers
between readings, except ``deadband``, which keeps the newest record it held back so a
flush can still send it. A stage that raises has neither kept nor released the record
(it commits only after the last thing that can fail), so the caller releases it.
"""

from __future__ import annotations

import math
from typing import Protocol

from gateway.config import stages as cfg
from gateway.pipeline import severity
from gateway.pipeline.pool import Pool, Record

RecordPool = Pool[Record]


class Step(Protocol):
    name: str
    # Records the stage may keep between calls; the pool is sized from these.
    holds: int

    def process(self, record: Record, pool: RecordPool) -> Record | None: ...

    def flush(self, pool: RecordPool) -> Record | None:
        """What the stage holds back, handed on before a shutdown or reload."""


class Calibrate:
    name = "calibrate"
    holds = 0

    def __init__(self, config: cfg.Calibrate) -> None:
        self._coefficients = {
            quantity: (config.scale.get(quantity, 1.0), config.offset.get(quantity, 0.0))
            for quantity in config.scale.keys() | config.offset.keys()
        }

    def process(self, record: Record, pool: RecordPool) -> Record:
        values = record.values
        for quantity, (scale, offset) in self._coefficients.items():
            value = values.get(quantity)
            if value is not None:
                values[quantity] = value * scale + offset
        return record

    def flush(self, pool: RecordPool) -> None:
        return None


class Range:
    name = "range"
    holds = 0

    def __init__(self, config: cfg.Range) -> None:
        self._bounds = {
            quantity: (config.min.get(quantity, -math.inf), config.max.get(quantity, math.inf))
            for quantity in config.min.keys() | config.max.keys()
        }
        self._flag = config.action == "flag"

    def process(self, record: Record, pool: RecordPool) -> Record | None:
        values = record.values
        for quantity, (low, high) in self._bounds.items():
            value = values.get(quantity)
            if value is None or low <= value <= high:
                continue
            if self._flag:
                record.out_of_range.append(quantity)
            else:
                del values[quantity]
        if values:
            return record
        pool.release(record)
        return None

    def flush(self, pool: RecordPool) -> None:
        return None


class _Window:
    """The last values of one quantity in a ring, oldest overwritten first."""

    __slots__ = ("count", "next", "values")

    def __init__(self, size: int) -> None:
        self.values = [0.0] * size
        self.count = 0
        self.next = 0


class Median:
    name = "median"
    holds = 0

    def __init__(self, config: cfg.Median) -> None:
        self._size = config.window
        self._windows: dict[str, _Window] = {}
        # Sorted in place every reading, so the steady state allocates no list.
        self._scratch = [0.0] * config.window

    def process(self, record: Record, pool: RecordPool) -> Record:
        size = self._size
        scratch = self._scratch
        values = record.values
        for quantity, value in values.items():
            window = self._windows.get(quantity)
            if window is None:
                window = self._windows[quantity] = _Window(size)
            ring = window.values
            ring[window.next] = value
            window.next = (window.next + 1) % size
            if window.count == size:
                scratch[:] = ring
                scratch.sort()
                values[quantity] = scratch[size // 2]
            else:
                # Until the window has filled, the lower median of the values seen so
                # far: one of them, so a spike among the first few is not averaged in.
                window.count += 1
                seen = sorted(ring[: window.count])
                values[quantity] = seen[(window.count - 1) // 2]
        return record

    def flush(self, pool: RecordPool) -> None:
        return None


class Ema:
    name = "ema"
    holds = 0

    def __init__(self, config: cfg.Ema) -> None:
        self._alpha = config.alpha
        self._state: dict[str, float] = {}

    def process(self, record: Record, pool: RecordPool) -> Record:
        alpha = self._alpha
        keep = 1.0 - alpha
        state = self._state
        values = record.values
        for quantity, value in values.items():
            previous = state.get(quantity)
            if previous is not None:
                smoothed = alpha * value + keep * previous
                # Rounding can put the sum an ulp outside its two inputs; an average must
                # stay within what it averages.
                if value < previous:
                    low, high = value, previous
                else:
                    low, high = previous, value
                if smoothed < low:
                    smoothed = low
                elif smoothed > high:
                    smoothed = high
                value = smoothed
                values[quantity] = value
            state[quantity] = value
        return record

    def flush(self, pool: RecordPool) -> None:
        return None


class Deadband:
    name = "deadband"
    holds = 1

    def __init__(self, config: cfg.Deadband) -> None:
        self._delta = dict(config.delta)
        self._max_silence_s = config.max_silence_s
        self._sent: dict[str, float] = {}
        self._sent_zone: str | None = None
        self._sent_state: str | None = None
        self._sent_ts: float | None = None
        self._held: Record | None = None

    def process(self, record: Record, pool: RecordPool) -> Record | None:
        held = self._held
        if self._due(record):
            self._sent_ts = record.ts
            self._sent_zone = record.zone
            self._sent_state = record.anomaly_state
            for quantity in self._delta:
                value = record.values.get(quantity)
                if value is not None:
                    self._sent[quantity] = value
            self._held = None
            if held is not None:
                pool.release(held)
            return record
        self._held = record
        if held is not None:
            pool.release(held)
        return None

    def _due(self, record: Record) -> bool:
        if self._sent_ts is None:
            return True
        # A wall clock stepped back (NTP on a Pi without RTC) must not silence the sensor.
        if not 0.0 <= record.ts - self._sent_ts < self._max_silence_s:
            return True
        if record.zone != self._sent_zone or record.anomaly_state != self._sent_state:
            return True
        values = record.values
        for quantity, delta in self._delta.items():
            value = values.get(quantity)
            if value is None:
                continue
            sent = self._sent.get(quantity)
            if sent is None or abs(value - sent) > delta:
                return True
        return False

    def flush(self, pool: RecordPool) -> Record | None:
        held, self._held = self._held, None
        return held


class Average:
    """The mean per quantity over the group, stamped with the group's last ``ts``. The
    group carries the worst severity zone and every flag of its readings: averaging must
    not hide an alarm; and the latest anomaly state."""

    name = "average"
    holds = 0

    def __init__(self, config: cfg.Average) -> None:
        self._every = config.every
        self._seen = 0
        self._ts = 0.0
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._zone: str | None = None
        self._anomaly_state: str | None = None
        self._flagged: list[str] = []

    def process(self, record: Record, pool: RecordPool) -> Record | None:
        sums = self._sums
        counts = self._counts
        for quantity, value in record.values.items():
            sums[quantity] = sums.get(quantity, 0.0) + value
            counts[quantity] = counts.get(quantity, 0) + 1
        self._zone = severity.worse(self._zone, record.zone)
        if record.anomaly_state is not None:
            self._anomaly_state = record.anomaly_state
        for quantity in record.out_of_range:
            if quantity not in self._flagged:
                self._flagged.append(quantity)
        self._ts = record.ts
        self._seen += 1
        if self._seen < self._every:
            pool.release(record)
            return None
        self._emit_into(record)
        return record

    def _emit_into(self, record: Record) -> None:
        values = record.values
        values.clear()
        counts = self._counts
        for quantity, total in self._sums.items():
            count = counts[quantity]
            if count:
                values[quantity] = total / count
            # The keys stay, so the next group reuses the dicts' tables.
            self._sums[quantity] = 0.0
            counts[quantity] = 0
        record.ts = self._ts
        record.zone = self._zone
        record.anomaly_state = self._anomaly_state
        record.out_of_range[:] = self._flagged
        self._zone = None
        self._anomaly_state = None
        self._flagged.clear()
        self._seen = 0

    def flush(self, pool: RecordPool) -> Record | None:
        """The mean of an incomplete group: fewer readings, but none of them lost."""
        if not self._seen:
            return None
        record = pool.acquire()
        self._emit_into(record)
        return record


class Downsample:
    """The first reading of every ``every`` passes, so a restarted sensor reports at once."""

    name = "downsample"
    holds = 0

    def __init__(self, config: cfg.Downsample) -> None:
        self._every = config.every
        self._seen = 0

    def process(self, record: Record, pool: RecordPool) -> Record | None:
        passes = self._seen == 0
        self._seen = (self._seen + 1) % self._every
        if passes:
            return record
        pool.release(record)
        return None

    def flush(self, pool: RecordPool) -> None:
        return None
