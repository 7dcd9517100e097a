"""BME280 emulator: register file, NVM calibration, soft reset, forced-mode conversions.

The raw ADC codes are found by inverting Bosch's compensation over the codes the chip
can output at the configured resolution, so a correct driver decodes the sampled
climate to within one ADC step. Sleep and forced mode are emulated; normal mode and
the IIR filter's smoothing are not (the filter only widens the output to 20 bits).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.bme280 import (
    BME280_ID,
    CALIB_H,
    CALIB_TP,
    CHIP_ID,
    CONFIG,
    CTRL_HUM,
    CTRL_MEAS,
    DATA,
    RESET,
    RESET_COMMAND,
    STATUS,
    STATUS_IM_UPDATE,
    STATUS_MEASURING,
    Calibration,
    compensate_humidity,
    compensate_pressure,
    compensate_temperature,
)
from drivers.sim.faults import Faults
from drivers.sim.signal import Climate

# dig_T*/dig_P* of the BMP280 data sheet's worked example, dig_H* of a typical BME280.
TYPICAL_CALIBRATION = Calibration(
    t1=27504, t2=26435, t3=-1000,
    p1=36477, p2=-10685, p3=3024, p4=2855, p5=140, p6=-7, p7=15500, p8=-14600, p9=6000,
    h1=75, h2=362, h3=0, h4=324, h5=50, h6=30,
)  # fmt: skip
# Data registers after reset and for a skipped measurement: 0x80000, 0x80000, 0x8000.
DATA_RESET = bytes([0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x00])
# The data sheet does not time the NVM copy; it has to fit in the 2 ms start-up time.
NVM_COPY_S = 0.001


def pack_calibration(cal: Calibration) -> tuple[bytes, bytes]:
    """The 0x88..0xA1 and 0xE1..0xE7 blocks as the chip's NVM holds them."""
    tp = struct.pack(
        "<HhhHhhhhhhhhBB",
        cal.t1, cal.t2, cal.t3,
        cal.p1, cal.p2, cal.p3, cal.p4, cal.p5, cal.p6, cal.p7, cal.p8, cal.p9,
        0, cal.h1,
    )  # fmt: skip
    h4, h5 = cal.h4 & 0xFFF, cal.h5 & 0xFFF
    h = struct.pack("<hB", cal.h2, cal.h3) + bytes(
        [h4 >> 4, ((h5 & 0x0F) << 4) | (h4 & 0x0F), h5 >> 4, cal.h6 & 0xFF]
    )
    return tp, h


def typical_conversion_s(osrs_t: int, osrs_p: int, osrs_h: int) -> float:
    """Typical forced-mode conversion time (data sheet appendix B); a skipped channel is 0."""
    ms = 1.0 + 2.0 * osrs_t
    ms += 2.0 * osrs_p + 0.5 if osrs_p else 0.0
    ms += 2.0 * osrs_h + 0.5 if osrs_h else 0.0
    return ms / 1000.0


def nearest_code(decode: Callable[[int], float], target: float, bits: int, shift: int) -> int:
    """The ADC code ``n << shift``, ``n`` below ``2**bits``, that ``decode``s nearest to
    ``target``; ``decode`` is monotonic, as the compensation is over the ADC range."""
    lo, hi = 0, (1 << bits) - 1
    rising = decode(hi << shift) >= decode(0)
    while lo < hi:
        mid = (lo + hi) // 2
        value = decode(mid << shift)
        if (value >= target) if rising else (value <= target):
            hi = mid
        else:
            lo = mid + 1
    candidates = [n << shift for n in (lo - 1, lo) if n >= 0]
    return min(candidates, key=lambda code: abs(decode(code) - target))


def _factor(osrs: int) -> int:
    """Oversampling factor of an osrs_x code; codes above x16 also mean x16, 0 skips."""
    return 1 << (min(osrs, 5) - 1) if osrs else 0


@dataclass
class BME280Sim:
    climate: Climate = field(default_factory=Climate)
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    calibration: Calibration = TYPICAL_CALIBRATION
    chip_id: int = BME280_ID
    # What the last conversion sampled (C, %RH, hPa), for comparing decoded values.
    truth: tuple[float, float, float] | None = None
    _regs: bytearray = field(init=False, repr=False)
    _pointer: int = field(default=0, init=False, repr=False)
    _osrs_h: int = field(default=0, init=False, repr=False)
    _nvm_done_at: float = field(default=0.0, init=False, repr=False)
    _conversion_done_at: float | None = field(default=None, init=False, repr=False)
    _result: bytes = field(default=DATA_RESET, init=False, repr=False)

    def __post_init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._regs = bytearray(256)
        tp, h = pack_calibration(self.calibration)
        self._regs[CALIB_TP : CALIB_TP + len(tp)] = tp
        self._regs[CALIB_H : CALIB_H + len(h)] = h
        self._regs[CHIP_ID] = self.chip_id
        self._regs[DATA : DATA + len(DATA_RESET)] = DATA_RESET
        self._osrs_h = 0
        self._conversion_done_at = None
        self._nvm_done_at = self.clock() + NVM_COPY_S

    def _settle(self) -> None:
        """Publish a finished conversion; forced mode then falls back to sleep."""
        done_at = self._conversion_done_at
        if done_at is not None and self.clock() >= done_at:
            self._regs[DATA : DATA + len(self._result)] = self._result
            self._regs[CTRL_MEAS] &= 0xFC
            self._conversion_done_at = None

    def _encode(self, truth: tuple[float, float, float], osrs_t: int, osrs_p: int) -> bytes:
        temperature, humidity, pressure = truth
        cal = self.calibration
        # With the filter off, oversampling x1 gives 16 bits and each doubling one more.
        filtered = bool(self._regs[CONFIG] & 0x1C)
        shift_t = 0 if filtered else 5 - min(osrs_t, 5)
        shift_p = 0 if filtered else 5 - min(osrs_p, 5)
        adc_t = nearest_code(
            lambda c: compensate_temperature(c, cal)[0], temperature, 20 - shift_t, shift_t
        )
        t_fine = compensate_temperature(adc_t, cal)[1]
        adc_p = nearest_code(
            lambda c: compensate_pressure(c, t_fine, cal) / 100.0, pressure, 20 - shift_p, shift_p
        )
        adc_h = nearest_code(lambda c: compensate_humidity(c, t_fine, cal), humidity, 16, 0)
        out = bytearray(DATA_RESET)
        if osrs_p:
            out[0:3] = (adc_p << 4).to_bytes(3, "big")
        if osrs_t:
            out[3:6] = (adc_t << 4).to_bytes(3, "big")
        if self._osrs_h:
            out[6:8] = adc_h.to_bytes(2, "big")
        return bytes(out)

    def _start_conversion(self) -> None:
        if self._conversion_done_at is not None:
            return
        osrs_t, osrs_p = self._regs[CTRL_MEAS] >> 5, (self._regs[CTRL_MEAS] >> 2) & 0x07
        if not (self.faults.stuck and self.truth):
            self.truth = self.climate.sample(self.clock())
            self._result = self._encode(self.truth, osrs_t, osrs_p)
        duration = typical_conversion_s(_factor(osrs_t), _factor(osrs_p), _factor(self._osrs_h))
        self._conversion_done_at = self.clock() + duration

    def _set(self, register: int, value: int) -> None:
        if register == RESET and value == RESET_COMMAND:
            self._reset()
        elif register == CTRL_HUM:
            self._regs[CTRL_HUM] = value & 0x07
        elif register == CTRL_MEAS:
            self._regs[CTRL_MEAS] = value
            self._osrs_h = self._regs[CTRL_HUM]
            if (value & 0x03) in (0x01, 0x02):
                self._start_conversion()
        elif register == CONFIG:
            self._regs[CONFIG] = value & 0xFD

    def _status(self) -> int:
        status = STATUS_MEASURING if self._conversion_done_at is not None else 0
        if self.clock() < self._nvm_done_at:
            status |= STATUS_IM_UPDATE
        return status

    def write(self, data: bytes) -> None:
        """Register/value pairs (the chip does not auto-increment on writes); a lone
        trailing address sets where the next read starts."""
        self._settle()
        for i in range(0, len(data) - 1, 2):
            self._set(data[i], data[i + 1])
        if data:
            self._pointer = data[-1] if len(data) % 2 else data[-2]

    def read(self, length: int) -> bytes:
        self._settle()
        out = bytearray()
        for address in range(self._pointer, self._pointer + length):
            if address == STATUS:
                out.append(self._status())
            else:
                out.append(self._regs[address] if address <= 0xFF else 0)
        self._pointer += length
        return bytes(out)
