"""ADXL345 emulator: output data rate, FIFO modes, INT_SOURCE flags, data formats.

Samples are produced lazily: on every transfer the emulator works out from its clock
how many sample periods have passed since the last one and queues those samples as
the FIFO mode dictates. Taps, activity, offsets, self-test, low power, sleep and the
justify bit are not emulated.
"""

from __future__ import annotations

import math
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.adxl345 import (
    ADXL345_ID,
    BW_RATE,
    DATA_FORMAT,
    DATAX0,
    DEVID,
    FIFO_CTL,
    FIFO_STATUS,
    FULL_RES,
    INT_SOURCE,
    MEASURE,
    OVERRUN,
    POWER_CTL,
    SAMPLE_LENGTH,
)
from drivers.sim.faults import Faults
from drivers.sim.vibration import Vibration

BYPASS, FIFO, STREAM, TRIGGER = 0, 1, 2, 3
# 32 FIFO levels plus the entry waiting in the output registers (FIFO_STATUS note).
CAPACITY = 33
FIFO_TRIG = 0x80
DATA_READY = 0x80
WATERMARK = 0x02
INT_ENABLE = 0x2E
INT_MAP = 0x2F
# THRESH_TAP..TAP_AXES and the control registers; everything else is read-only.
WRITABLE = {*range(0x1D, 0x2B), BW_RATE, POWER_CTL, INT_ENABLE, INT_MAP, DATA_FORMAT, FIFO_CTL}
RESET_VALUES = {BW_RATE: 0x0A}
# Sample periods are counted from floats; without the slack a period ending exactly
# now can be counted one access late.
PERIOD_SLACK = 1e-9
# Samples of truth kept by default: a few FIFO depths, enough to check any one drain
# and to repeat the last sample when stuck. A test that checks a long run asks for more
# (``truth_depth``); a running daemon never pays for a history nobody reads.
TRUTH_DEPTH = 4 * CAPACITY

Sample = tuple[float, float, float]


@dataclass
class ADXL345Sim:
    vibration: Vibration = field(default_factory=Vibration)
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    truth_depth: int = TRUTH_DEPTH
    # The latest ``truth_depth`` accelerations sampled (g), oldest first; samples that
    # would only have been overwritten in the FIFO unread are never computed and so are
    # absent.
    truth: deque[Sample] = field(init=False, repr=False)
    _regs: bytearray = field(init=False, repr=False)
    _pointer: int = field(default=0, init=False, repr=False)
    _queue: deque[bytes] = field(default_factory=deque, init=False, repr=False)
    _output: bytes = field(default=bytes(SAMPLE_LENGTH), init=False, repr=False)
    _overrun: bool = field(default=False, init=False, repr=False)
    _triggered: bool = field(default=False, init=False, repr=False)
    _anchor: float = field(default=0.0, init=False, repr=False)
    _made: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.truth = deque(maxlen=self.truth_depth)
        self._regs = bytearray(0x40)
        self._regs[DEVID] = ADXL345_ID
        for register, value in RESET_VALUES.items():
            self._regs[register] = value

    @property
    def rate_hz(self) -> float:
        return 3200.0 / (1 << (15 - (self._regs[BW_RATE] & 0x0F)))

    @property
    def _mode(self) -> int:
        return self._regs[FIFO_CTL] >> 6

    def _keeps_newest(self) -> bool:
        """Bypass, stream and trigger mode before its event overwrite; the rest stop when full."""
        return self._mode in (BYPASS, STREAM) or (self._mode == TRIGGER and not self._triggered)

    def _encode(self, g: Sample) -> bytes:
        fmt = self._regs[DATA_FORMAT]
        code = fmt & 0x03
        # Full resolution widens the output with the range (10 to 13 bits) at 256 LSB/g;
        # otherwise 10 bits span the range.
        bits, lsb_per_g = (10 + code, 256.0) if fmt & FULL_RES else (10, 256.0 / (1 << code))
        limit = 1 << (bits - 1)
        counts = [max(-limit, min(limit - 1, round(v * lsb_per_g))) for v in g]
        return struct.pack("<3h", *counts)

    def _sample(self, t: float) -> bytes:
        g = self.truth[-1] if self.faults.stuck and self.truth else self.vibration.sample(t)
        self.truth.append(g)
        return self._encode(g)

    def _push(self, entry: bytes) -> None:
        if self._mode == BYPASS:
            self._overrun |= bool(self._queue)
            self._queue.clear()
        elif len(self._queue) == CAPACITY:
            if not self._keeps_newest():
                return
            self._queue.popleft()
        self._queue.append(entry)
        if self._mode != BYPASS and len(self._queue) == CAPACITY:
            # The chip flags an overrun as soon as the FIFO is full, not on the first loss.
            self._overrun = True

    def _catch_up(self) -> None:
        if not self._regs[POWER_CTL] & MEASURE:
            return
        rate = self.rate_hz
        due = math.floor((self.clock() - self._anchor) * rate + PERIOD_SLACK)
        first, self._made = self._made + 1, max(self._made, due)
        capacity = 1 if self._mode == BYPASS else CAPACITY
        if self._keeps_newest():
            if due - first + 1 > capacity:
                # Everything older is overwritten before anyone could read it.
                self._overrun = True
                first = due - capacity + 1
        else:
            due = min(due, first + capacity - len(self._queue) - 1)
        for k in range(first, due + 1):
            self._push(self._sample(self._anchor + k / rate))

    def _restart_sampling(self) -> None:
        self._anchor = self.clock()
        self._made = 0

    def trigger(self) -> None:
        """The interrupt event of trigger mode: keep the last ``samples`` entries, then
        collect until full."""
        self._catch_up()
        if self._mode == TRIGGER and not self._triggered:
            self._triggered = True
            keep = self._regs[FIFO_CTL] & 0x1F
            while len(self._queue) > keep:
                self._queue.popleft()

    def _set(self, register: int, value: int) -> None:
        if register not in WRITABLE:
            return
        old = self._regs[register]
        self._regs[register] = value
        if register == BW_RATE or (register == POWER_CTL and value & ~old & MEASURE):
            self._restart_sampling()
        elif register == FIFO_CTL and value >> 6 == BYPASS:
            # Bypass empties the FIFO and re-arms trigger mode.
            self._queue.clear()
            self._triggered = False

    def _register(self, address: int) -> int:
        entries = len(self._queue) if self._mode != BYPASS else 0
        if address == INT_SOURCE:
            flags = DATA_READY if self._queue else 0
            if entries >= self._regs[FIFO_CTL] & 0x1F:
                flags |= WATERMARK
            return flags | (OVERRUN if self._overrun else 0)
        if address == FIFO_STATUS:
            return (FIFO_TRIG if self._triggered else 0) | entries
        if DATAX0 <= address < DATAX0 + SAMPLE_LENGTH:
            return (self._queue[0] if self._queue else self._output)[address - DATAX0]
        return self._regs[address] if address < len(self._regs) else 0

    def write(self, data: bytes) -> None:
        """A register address, then values for consecutive registers."""
        self._catch_up()
        if not data:
            return
        self._pointer = data[0]
        for value in data[1:]:
            self._set(self._pointer, value)
            self._pointer += 1

    def read(self, length: int) -> bytes:
        self._catch_up()
        start, self._pointer = self._pointer, self._pointer + length
        data = bytes(self._register(a) for a in range(start, self._pointer))
        if start < DATAX0 + SAMPLE_LENGTH and self._pointer > DATAX0 and self._queue:
            # Any read of the data registers pops the entry, even a partial one.
            self._output = self._queue.popleft()
            self._overrun = False
        return data
