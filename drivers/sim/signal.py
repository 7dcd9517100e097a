"""Signal models that drive the emulators: what the emulated chip "senses".

Each model is a pure function of time plus seeded noise, so a test can ask the model
for the truth at the instant the emulator sampled it and compare the decoded reading.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class Climate:
    """Slow drift of air temperature, humidity and pressure around a base value."""

    temperature_c: float = 22.0
    humidity_rh: float = 45.0
    pressure_hpa: float = 1013.25
    drift_period_s: float = 600.0
    temperature_swing_c: float = 1.5
    humidity_swing_rh: float = 5.0
    pressure_swing_hpa: float = 0.8
    noise: float = 0.02
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def sample(self, t: float) -> tuple[float, float, float]:
        """Temperature (C), relative humidity (%) and pressure (hPa) at time ``t``."""
        phase = math.sin(2.0 * math.pi * t / self.drift_period_s)
        jitter = self._rng.gauss
        temperature = self.temperature_c + self.temperature_swing_c * phase
        humidity = self.humidity_rh - self.humidity_swing_rh * phase
        pressure = self.pressure_hpa + self.pressure_swing_hpa * phase
        if self.noise:
            temperature += jitter(0.0, self.noise)
            humidity += jitter(0.0, self.noise * 5)
            pressure += jitter(0.0, self.noise * 2)
        return temperature, min(100.0, max(0.0, humidity)), pressure
