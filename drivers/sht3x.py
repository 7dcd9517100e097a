"""Sensirion SHT3x (SHT30/31/35) humidity and temperature sensor over I2C.

Single-shot measurements without clock stretching: the command is written, the chip
NACKs reads until the conversion is done, then returns two CRC-protected words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from drivers.crc import crc8_sensirion
from drivers.errors import CrcError, SensorTimeout
from drivers.i2c import I2CBus, i2c_msg, transfer_error

DEFAULT_ADDRESS = 0x44
ADDRESSES = (0x44, 0x45)

Repeatability = Literal["high", "medium", "low"]

# Single shot, clock stretching disabled: command and the data sheet's maximum duration.
MEASURE: dict[Repeatability, tuple[int, float]] = {
    "high": (0x2400, 0.0155),
    "medium": (0x240B, 0.0065),
    "low": (0x2416, 0.0045),
}
SOFT_RESET = 0x30A2
READ_STATUS = 0xF32D
CLEAR_STATUS = 0x3041
HEATER_ON = 0x306D
HEATER_OFF = 0x3066

# After the nominal wait, the read is retried this many times before giving up: the
# conversion time has a tolerance and a busy bus adds latency.
NOT_READY_RETRIES = 3
NOT_READY_WAIT_S = 0.002


def decode_temperature(raw: int) -> float:
    return -45.0 + 175.0 * raw / 65535.0


def decode_humidity(raw: int) -> float:
    return 100.0 * raw / 65535.0


def split_words(data: bytes) -> list[int]:
    """Check each 2-byte word against its CRC byte and return the words."""
    words = []
    for i in range(0, len(data), 3):
        word, crc = data[i : i + 2], data[i + 2]
        if crc8_sensirion(word) != crc:
            raise CrcError(f"SHT3x CRC mismatch on word {i // 3}")
        words.append(int.from_bytes(word, "big"))
    return words


class SHT3x:
    """One SHT3x at ``address`` on ``bus``."""

    def __init__(
        self,
        bus: I2CBus,
        address: int = DEFAULT_ADDRESS,
        repeatability: Repeatability = "high",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bus = bus
        self.address = address
        self.repeatability = repeatability
        self._sleep = sleep

    def _command(self, command: int) -> None:
        try:
            self.bus.i2c_rdwr(i2c_msg.write(self.address, command.to_bytes(2, "big")))
        except OSError as exc:
            raise transfer_error(exc, f"SHT3x command 0x{command:04X}") from exc

    def _read(self, length: int) -> bytes:
        msg = i2c_msg.read(self.address, length)
        self.bus.i2c_rdwr(msg)
        return bytes(msg)

    def reset(self) -> None:
        self._command(SOFT_RESET)
        self._sleep(0.0015)

    def status(self) -> int:
        self._command(READ_STATUS)
        try:
            return split_words(self._read(3))[0]
        except OSError as exc:
            raise transfer_error(exc, "SHT3x status read") from exc

    def set_heater(self, on: bool) -> None:
        self._command(HEATER_ON if on else HEATER_OFF)

    def read(self) -> dict[str, float]:
        command, duration = MEASURE[self.repeatability]
        self._command(command)
        self._sleep(duration)
        for attempt in range(NOT_READY_RETRIES + 1):
            try:
                data = self._read(6)
                break
            except OSError as exc:
                if attempt == NOT_READY_RETRIES:
                    raise SensorTimeout(
                        f"SHT3x measurement not ready: {transfer_error(exc, 'read')}"
                    ) from exc
                self._sleep(NOT_READY_WAIT_S)
        raw_t, raw_rh = split_words(data)
        return {
            "temperature_c": decode_temperature(raw_t),
            "humidity_rh": decode_humidity(raw_rh),
        }

