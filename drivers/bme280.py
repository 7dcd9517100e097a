"""Bosch BME280 humidity, pressure and temperature sensor over I2C.

Forced mode: each read starts one conversion, waits the data sheet's maximum
conversion time and fetches the eight data bytes in one burst, so the three values
come from the same conversion and the chip sleeps between readings.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.errors import ChipIdError, SensorTimeout
from drivers.i2c import I2CBus, retrying

DEFAULT_ADDRESS = 0x76
ADDRESSES = (0x76, 0x77)

CHIP_ID = 0xD0
BME280_ID = 0x60
BMP280_ID = 0x58
RESET = 0xE0
RESET_COMMAND = 0xB6
CALIB_TP = 0x88
CALIB_TP_LENGTH = 26  # 0x88..0xA1: T and P words, one unused byte, dig_H1
CALIB_H = 0xE1
CALIB_H_LENGTH = 7  # 0xE1..0xE7
CTRL_HUM = 0xF2
STATUS = 0xF3
CTRL_MEAS = 0xF4
CONFIG = 0xF5
DATA = 0xF7
DATA_LENGTH = 8

STATUS_MEASURING = 0x08
STATUS_IM_UPDATE = 0x01
MODE_FORCED = 0x01

# Oversampling factor -> osrs_x code; IIR coefficient -> filter code.
OVERSAMPLING = {1: 1, 2: 2, 4: 3, 8: 4, 16: 5}
IIR_FILTER = {0: 0, 2: 1, 4: 2, 8: 3, 16: 4}

# Registers are not readable until the start-up time has passed after a (soft) reset.
STARTUP_S = 0.002
# The conversion wait uses the data sheet maximum, so polling the status is only a
# guard against a chip that is slower than specified or was reset mid-conversion.
STATUS_POLLS = 5
STATUS_POLL_S = 0.001



@dataclass(frozen=True)
class Calibration:
    """The trimming parameters dig_T1..dig_H6 burnt into each chip's NVM."""

    t1: int
    t2: int
    t3: int
    p1: int
    p2: int
    p3: int
    p4: int
    p5: int
    p6: int
    p7: int
    p8: int
    p9: int
    h1: int
    h2: int
    h3: int
    h4: int
    h5: int
    h6: int


def _signed12(value: int) -> int:
    return value - 0x1000 if value & 0x800 else value


def parse_calibration(tp: bytes, h: bytes) -> Calibration:
    """Decode the 0x88..0xA1 and 0xE1..0xE7 blocks (dig_H4/H5 share the nibbles of 0xE5)."""
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9 = struct.unpack_from("<HhhHhhhhhhhh", tp)
    h2, h3 = struct.unpack_from("<hB", h)
    return Calibration(
        t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9,
        h1=tp[25],
        h2=h2,
        h3=h3,
        h4=_signed12((h[3] << 4) | (h[4] & 0x0F)),
        h5=_signed12((h[5] << 4) | (h[4] >> 4)),
        h6=struct.unpack_from("<b", h, 6)[0],
    )  # fmt: skip


def compensate_temperature(adc_t: int, cal: Calibration) -> tuple[float, int]:
    """Degrees Celsius and t_fine, which the pressure and humidity formulas need."""
    var1 = (adc_t / 16384.0 - cal.t1 / 1024.0) * cal.t2
    var2 = (adc_t / 131072.0 - cal.t1 / 8192.0) ** 2 * cal.t3
    return (var1 + var2) / 5120.0, int(var1 + var2)


def compensate_pressure(adc_p: int, t_fine: int, cal: Calibration) -> float:
    """Pascal."""
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * cal.p6 / 32768.0
    var2 = var2 + var1 * cal.p5 * 2.0
    var2 = var2 / 4.0 + cal.p4 * 65536.0
    var1 = (cal.p3 * var1 * var1 / 524288.0 + cal.p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * cal.p1
    if var1 == 0.0:
        # Only with an erased NVM (dig_P1 = 0); the data sheet returns 0 rather than divide.
        return 0.0
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = cal.p9 * p * p / 2147483648.0
    var2 = p * cal.p8 / 32768.0
    return p + (var1 + var2 + cal.p7) / 16.0


def compensate_humidity(adc_h: int, t_fine: int, cal: Calibration) -> float:
    """Percent relative humidity, clamped to 0..100 as the data sheet does."""
    var_h = t_fine - 76800.0
    var_h = (adc_h - (cal.h4 * 64.0 + cal.h5 / 16384.0 * var_h)) * (
        cal.h2 / 65536.0 * (1.0 + cal.h6 / 67108864.0 * var_h * (1.0 + cal.h3 / 67108864.0 * var_h))
    )
    var_h = var_h * (1.0 - cal.h1 * var_h / 524288.0)
    return min(100.0, max(0.0, var_h))


def measurement_time_s(osrs_t: int, osrs_p: int, osrs_h: int) -> float:
    """Maximum forced-mode conversion time (data sheet appendix B) for oversampling factors."""
    ms = 1.25 + 2.3 * osrs_t + (2.3 * osrs_p + 0.575) + (2.3 * osrs_h + 0.575)
    return ms / 1000.0




class BME280:
    """One BME280 at ``address`` on ``bus``; the first read initialises the chip."""

    def __init__(
        self,
        bus: I2CBus,
        address: int = DEFAULT_ADDRESS,
        temperature_oversampling: int = 1,
        pressure_oversampling: int = 1,
        humidity_oversampling: int = 1,
        iir_filter: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        factors = (temperature_oversampling, pressure_oversampling, humidity_oversampling)
        if any(f not in OVERSAMPLING for f in factors):
            raise ValueError(f"oversampling must be one of {sorted(OVERSAMPLING)}")
        if iir_filter not in IIR_FILTER:
            raise ValueError(f"iir_filter must be one of {sorted(IIR_FILTER)}")
        self.bus = bus
        self.address = address
        self.calibration: Calibration | None = None
        self.conversion_s = measurement_time_s(*factors)
        osrs_t, osrs_p, osrs_h = (OVERSAMPLING[f] for f in factors)
        self._ctrl_hum = osrs_h
        self._ctrl_meas = (osrs_t << 5) | (osrs_p << 2) | MODE_FORCED
        self._config = IIR_FILTER[iir_filter] << 2
        self._sleep = sleep

    def _read(self, register: int, length: int) -> bytes:
        data = retrying(
            f"BME280 read 0x{register:02X}",
            lambda: self.bus.read_i2c_block_data(self.address, register, length),
        )
        return bytes(data)

    def _write(self, register: int, value: int, *more: int) -> None:
        """``more`` continues as register, value pairs: the chip's multi-register write."""
        retrying(
            f"BME280 write 0x{register:02X}",
            lambda: self.bus.write_i2c_block_data(self.address, register, [value, *more]),
        )

    def _wait_while(self, bit: int, what: str) -> None:
        for _ in range(STATUS_POLLS):
            if not self._read(STATUS, 1)[0] & bit:
                return
            self._sleep(STATUS_POLL_S)
        raise SensorTimeout(f"BME280 at 0x{self.address:02X}: {what} did not finish")

    def init(self) -> Calibration:
        """Check the chip id, reset, load the calibration and set the IIR filter."""
        chip_id = self._read(CHIP_ID, 1)[0]
        if chip_id != BME280_ID:
            hint = " (a BMP280, no humidity)" if chip_id == BMP280_ID else ""
            raise ChipIdError(
                f"BME280 at 0x{self.address:02X}: chip id 0x{chip_id:02X}{hint}, "
                f"expected 0x{BME280_ID:02X}"
            )
        self._write(RESET, RESET_COMMAND)
        self._sleep(STARTUP_S)
        self._wait_while(STATUS_IM_UPDATE, "NVM copy")
        self.calibration = parse_calibration(
            self._read(CALIB_TP, CALIB_TP_LENGTH), self._read(CALIB_H, CALIB_H_LENGTH)
        )
        self._write(CONFIG, self._config)
        return self.calibration

    def read(self) -> dict[str, float]:
        cal = self.calibration or self.init()
        # ctrl_hum only takes effect with the next ctrl_meas write, and a reset chip has
        # forgotten both, so the pair goes out together, in that order, on every read.
        self._write(CTRL_HUM, self._ctrl_hum, CTRL_MEAS, self._ctrl_meas)
        self._sleep(self.conversion_s)
        self._wait_while(STATUS_MEASURING, "conversion")
        data = self._read(DATA, DATA_LENGTH)
        adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
        adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
        adc_h = (data[6] << 8) | data[7]
        temperature, t_fine = compensate_temperature(adc_t, cal)
        return {
            "temperature_c": temperature,
            "humidity_rh": compensate_humidity(adc_h, t_fine, cal),
            "pressure_hpa": compensate_pressure(adc_p, t_fine, cal) / 100.0,
        }
