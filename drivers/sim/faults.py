"""Fault injection for the emulators: what a flaky field installation does to a sensor."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Rates are probabilities per transfer (I2C) or per request (Modbus)."""

    nack_rate: float = 0.0
    corrupt_crc_rate: float = 0.0
    no_answer_rate: float = 0.0
    unplugged: bool = False
    # The chip keeps answering with the last value it measured.
    stuck: bool = False
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def roll(self, rate: float) -> bool:
        return rate > 0.0 and self._rng.random() < rate

    def corrupt(self, data: bytes) -> bytes:
        """Flip one bit of the last byte: the checksum byte of most frames."""
        if not data:
            return data
        return data[:-1] + bytes([data[-1] ^ 0x01])
