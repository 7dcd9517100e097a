"""Analog Devices ADXL345 3-axis accelerometer over I2C, read through its FIFO.

The chip runs in stream mode at a fixed output data rate and full resolution; the
caller drains the FIFO often enough (32 entries, 10 ms at 3200 Hz; ``drain_problem`` judges
an interval) and is told when it did not, because the chip flags an overrun once the FIFO
has filled.
"""

from __future__ import annotations

import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from drivers.errors import BusError, ChipIdError, SensorTimeout
from drivers.i2c import I2CBus, retrying

DEFAULT_ADDRESS = 0x53
ADDRESSES = (0x53, 0x1D)

DEVID = 0x00
ADXL345_ID = 0xE5
BW_RATE = 0x2C
POWER_CTL = 0x2D
INT_SOURCE = 0x30
DATA_FORMAT = 0x31
DATAX0 = 0x32
SAMPLE_LENGTH = 6  # DATAX0..DATAZ1, little-endian int16 each
FIFO_CTL = 0x38
FIFO_STATUS = 0x39

MEASURE = 0x08
OVERRUN = 0x01
FULL_RES = 0x08
FIFO_BYPASS = 0x00
FIFO_STREAM = 0x80
ENTRIES_MASK = 0x3F  # bit 7 is FIFO_TRIG, set after a trigger-mode event

RATES_HZ = {
    3200.0: 0x0F, 1600.0: 0x0E, 800.0: 0x0D, 400.0: 0x0C, 200.0: 0x0B,
    100.0: 0x0A, 50.0: 0x09, 25.0: 0x08, 12.5: 0x07, 6.25: 0x06,
}  # fmt: skip
RANGES_G = {2: 0, 4: 1, 8: 2, 16: 3}
# Full resolution keeps the typical 256 LSB/g (the "3.9 mg/LSB") in every range.
G_PER_LSB = 1.0 / 256.0

# The first sample appears one period (plus 1.1 ms) after measuring starts.
EMPTY_POLLS = 3

FIFO_DEPTH = 32
# Drained by the time this many samples wait, the FIFO still has room for the samples of
# a late drain (a busy loop, a slow bus) before it overruns.
DRAIN_BY_SAMPLES = 25


def drain_problem(rate_hz: float, interval_s: float) -> str | None:
    """Why draining the FIFO every ``interval_s`` at ``rate_hz`` would lose samples, or None."""
    if interval_s * rate_hz <= DRAIN_BY_SAMPLES:
        return None
    return (f"the FIFO holds {FIFO_DEPTH} samples, {FIFO_DEPTH / rate_hz:g} s at {rate_hz:g} "
            f"Hz: drain it at least every {DRAIN_BY_SAMPLES / rate_hz:g} s")



@dataclass(frozen=True)
class FifoBatch:
    """Samples drained from the FIFO, oldest first, at ``rate_hz`` apart.

    ``samples`` interleaves x, y, z in g as float32, which holds multiples of 1/256 g
    exactly: 12 bytes a sample instead of a tuple of three floats.
    ``overflow``: the FIFO filled up since the previous drain, so samples may be lost.
    """

    samples: array[float]
    rate_hz: float
    overflow: bool

    def __len__(self) -> int:
        return len(self.samples) // 3

    def axis(self, index: int) -> array[float]:
        """One axis (0 = x, 1 = y, 2 = z) as its own array."""
        return self.samples[index::3]




class ADXL345:
    """One ADXL345 at ``address`` on ``bus``; the first read initialises the chip."""

    def __init__(
        self,
        bus: I2CBus,
        address: int = DEFAULT_ADDRESS,
        rate_hz: float = 100.0,
        range_g: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_hz not in RATES_HZ:
            raise ValueError(f"rate_hz must be one of {sorted(RATES_HZ)}")
        if range_g not in RANGES_G:
            raise ValueError(f"range_g must be one of {sorted(RANGES_G)}")
        self.bus = bus
        self.address = address
        self.rate_hz = rate_hz
        self.range_g = range_g
        self.initialised = False
        self._sleep = sleep

    def _read(self, register: int, length: int) -> bytes:
        data = retrying(
            f"ADXL345 read 0x{register:02X}",
            lambda: self.bus.read_i2c_block_data(self.address, register, length),
        )
        return bytes(data)

    def _write(self, register: int, value: int) -> None:
        retrying(
            f"ADXL345 write 0x{register:02X}",
            lambda: self.bus.write_byte_data(self.address, register, value),
        )

    def init(self) -> None:
        """Check the device id and start measuring into the FIFO in stream mode."""
        devid = self._read(DEVID, 1)[0]
        if devid != ADXL345_ID:
            raise ChipIdError(
                f"ADXL345 at 0x{self.address:02X}: device id 0x{devid:02X}, "
                f"expected 0x{ADXL345_ID:02X}"
            )
        # Configure in standby, as the data sheet recommends.
        self._write(POWER_CTL, 0)
        self._write(BW_RATE, RATES_HZ[self.rate_hz])
        self._write(DATA_FORMAT, FULL_RES | RANGES_G[self.range_g])
        # Bypass mode empties the FIFO of whatever an earlier run left in it.
        self._write(FIFO_CTL, FIFO_BYPASS)
        self._write(FIFO_CTL, FIFO_STREAM)
        self._write(POWER_CTL, MEASURE)
        self.initialised = True

    def read_fifo(self) -> FifoBatch:
        """Drain the FIFO. After a bus error mid-drain, what was read is returned and the
        rest stays queued on the chip for the next drain."""
        if not self.initialised:
            self.init()
        # Before draining: reading the data clears the overrun flag.
        overflow = bool(self._read(INT_SOURCE, 1)[0] & OVERRUN)
        entries = self._read(FIFO_STATUS, 1)[0] & ENTRIES_MASK
        samples: array[float] = array("f")
        for _ in range(entries):
            # One burst per entry: the chip pops an entry at the end of every data read.
            try:
                raw = self._read(DATAX0, SAMPLE_LENGTH)
            except BusError:
                if not samples:
                    raise
                break
            samples.extend(v * G_PER_LSB for v in struct.unpack("<3h", raw))
        return FifoBatch(samples, self.rate_hz, overflow)

    def read(self) -> dict[str, float]:
        """The newest sample; older ones still queued in the FIFO are discarded."""
        for _ in range(EMPTY_POLLS):
            batch = self.read_fifo()
            if len(batch):
                x, y, z = batch.samples[-3:]
                return {"accel_x_g": x, "accel_y_g": y, "accel_z_g": z}
            self._sleep(1.0 / self.rate_hz)
        raise SensorTimeout(
            f"ADXL345 at 0x{self.address:02X}: no sample in {EMPTY_POLLS} sample periods"
        )
