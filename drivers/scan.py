"""Probing an I2C bus for the supported chips, the way ``i2cdetect`` would, but naming
what answers: each candidate address is asked for the chip's own identification."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers import adxl345, bme280, sht3x
from drivers.crc import crc8_sensirion
from drivers.i2c import I2CBus, i2c_msg


@dataclass(frozen=True)
class Found:
    address: int
    chip: str


def _register_is(register: int, value: int) -> Callable[[I2CBus, int], bool]:
    def probe(bus: I2CBus, address: int) -> bool:
        return bus.read_byte_data(address, register) == value

    return probe


def _sht3x_status(bus: I2CBus, address: int) -> bool:
    """The status word with a valid CRC: only a Sensirion chip answers that."""
    bus.i2c_rdwr(i2c_msg.write(address, sht3x.READ_STATUS.to_bytes(2, "big")))
    answer = i2c_msg.read(address, 3)
    bus.i2c_rdwr(answer)
    data = bytes(answer)
    return crc8_sensirion(data[:2]) == data[2]


CANDIDATES: list[tuple[str, tuple[int, ...], Callable[[I2CBus, int], bool]]] = [
    ("sht3x", sht3x.ADDRESSES, _sht3x_status),
    ("bme280", bme280.ADDRESSES, _register_is(bme280.CHIP_ID, bme280.BME280_ID)),
    ("bmp280 (unsupported)", bme280.ADDRESSES, _register_is(bme280.CHIP_ID, bme280.BMP280_ID)),
    ("adxl345", adxl345.ADDRESSES, _register_is(adxl345.DEVID, adxl345.ADXL345_ID)),
]


def scan(bus: I2CBus) -> list[Found]:
    found: list[Found] = []
    for chip, addresses, probe in CANDIDATES:
        for address in addresses:
            try:
                if probe(bus, address):
                    found.append(Found(address, chip))
            except OSError:
                continue  # nothing there, or not this chip
    return sorted(found, key=lambda f: f.address)
