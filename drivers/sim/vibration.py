"""Vibration signal model for the accelerometer emulators: what a machine does to a mount.

A pure function of time plus seeded noise, like ``drivers.sim.signal``, so a test can
compare decoded samples with the exact accelerations the emulator sampled.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Axis = Literal["x", "y", "z"]
AXES: tuple[Axis, ...] = ("x", "y", "z")


class Tone(NamedTuple):
    axis: Axis
    freq_hz: float
    amplitude_g: float
    phase: float = 0.0


def _motor() -> list[Tone]:
    # A 50 Hz motor shaking the mount sideways, and a bearing tone on z.
    return [Tone("x", 50.0, 0.3), Tone("y", 50.0, 0.1, math.pi / 2), Tone("z", 120.0, 0.05)]


@dataclass
class Vibration:
    """Sum of sines per axis on top of 1 g of gravity on z, plus gaussian noise."""

    tones: list[Tone] = field(default_factory=_motor)
    gravity_g: float = 1.0
    noise_g: float = 0.005
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def sample(self, t: float) -> tuple[float, float, float]:
        """Acceleration on x, y and z (g) at time ``t``."""
        g = [0.0, 0.0, self.gravity_g]
        for tone in self.tones:
            g[AXES.index(tone.axis)] += tone.amplitude_g * math.sin(
                2.0 * math.pi * tone.freq_hz * t + tone.phase
            )
        if self.noise_g:
            g = [v + self._rng.gauss(0.0, self.noise_g) for v in g]
        return g[0], g[1], g[2]
