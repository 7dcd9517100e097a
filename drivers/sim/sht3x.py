"""SHT3x emulator: command set, measurement delay, CRC-8 words, status register.

As on the chip, a read while a conversion runs (or with nothing to return) is not
acknowledged, an unknown command is not acknowledged, and each data word carries
its CRC byte.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.crc import crc8_sensirion
from drivers.sim.faults import Faults
from drivers.sim.i2c import nack
from drivers.sim.signal import Climate

# Maximum conversion times of the data sheet (table 4), single shot.
CONVERSION_S = {0x2400: 0.015, 0x240B: 0.006, 0x2416: 0.004}
STATUS_HEATER = 1 << 13
STATUS_RESET_DETECTED = 1 << 4


def encode_words(*words: int) -> bytes:
    out = bytearray()
    for word in words:
        raw = word.to_bytes(2, "big")
        out += raw + bytes([crc8_sensirion(raw)])
    return bytes(out)


def raw_temperature(celsius: float) -> int:
    return max(0, min(65535, round((celsius + 45.0) * 65535.0 / 175.0)))


def raw_humidity(rh: float) -> int:
    return max(0, min(65535, round(rh * 65535.0 / 100.0)))


@dataclass
class SHT3xSim:
    climate: Climate = field(default_factory=Climate)
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    status: int = STATUS_RESET_DETECTED
    # What the last conversion measured, for tests comparing decoded values to the truth.
    truth: tuple[float, float] | None = None
    _pending: bytes | None = None
    _ready_at: float = 0.0

    def write(self, data: bytes) -> None:
        if len(data) != 2:
            raise nack()
        command = int.from_bytes(data, "big")
        if command in CONVERSION_S:
            if not (self.faults.stuck and self.truth):
                temperature, humidity, _ = self.climate.sample(self.clock())
                self.truth = (temperature, humidity)
            temperature, humidity = self.truth
            self._pending = encode_words(raw_temperature(temperature), raw_humidity(humidity))
            self._ready_at = self.clock() + CONVERSION_S[command]
        elif command == 0xF32D:
            self._pending = encode_words(self.status)
            self._ready_at = self.clock()
        elif command == 0x3041:
            self.status &= ~STATUS_RESET_DETECTED
        elif command == 0x306D:
            self.status |= STATUS_HEATER
        elif command == 0x3066:
            self.status &= ~STATUS_HEATER
        elif command == 0x30A2:
            self.status = STATUS_RESET_DETECTED
            self._pending = None
        else:
            raise nack()

    def read(self, length: int) -> bytes:
        if self._pending is None or self.clock() < self._ready_at:
            raise nack()
        data, self._pending = self._pending, None
        return data[:length]
