"""WTVB01-485 emulator and the machine vibration it measures.

The emulator answers function 0x03 for the block 0x34..0x46. The registers in it that
the model does not fill (0x37..0x39, 0x3D..0x3F) read as zero, so the driver's single
block read succeeds as it does on the device.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.sim.faults import Faults
from drivers.sim.modbus import READ_HOLDING_REGISTERS, ModbusSimServer, int16_register

# The emulator's own copy of the register map, so that a slip in the driver's is caught.
ACCEL_X = 0x34
VELOCITY_X = 0x3A
TEMPERATURE = 0x40
DISPLACEMENT_X = 0x41
FREQUENCY_X = 0x44
LAST = 0x46
ACCEL_COUNTS_PER_G = 32768 / 16
STANDARD_GRAVITY = 9.80665
MIN_FREQUENCY_HZ = 0.5

Axes = tuple[float, float, float]


@dataclass(frozen=True)
class Vibration:
    accel_g: Axes
    velocity_mm_s: Axes
    displacement_um: Axes
    frequency_hz: Axes
    temperature_c: float


@dataclass
class Machine:
    """A running machine: each axis vibrates as a sine at its own frequency.

    The peak velocity drifts slowly with the load and carries seeded noise; displacement
    and acceleration follow from velocity and frequency as for a pure sine. The sensor
    is mounted upright, so Z also measures gravity.
    """

    velocity_mm_s: Axes = (2.0, 1.5, 3.0)
    frequency_hz: Axes = (24.8, 24.8, 49.6)
    temperature_c: float = 40.0
    drift_period_s: float = 900.0
    velocity_swing: float = 0.2
    noise: float = 0.02
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _jitter(self) -> float:
        return self._rng.gauss(0.0, self.noise) if self.noise else 0.0

    def sample(self, t: float) -> Vibration:
        phase = math.sin(2.0 * math.pi * t / self.drift_period_s)
        accel, velocity, displacement, frequency = [], [], [], []
        for axis in range(3):
            v = max(
                0.0, self.velocity_mm_s[axis] * (1 + self.velocity_swing * phase + self._jitter())
            )
            f = max(MIN_FREQUENCY_HZ, self.frequency_hz[axis] * (1 + self._jitter()))
            omega = 2.0 * math.pi * f
            gravity = 1.0 if axis == 2 else 0.0
            accel.append(gravity + omega * v / 1000.0 / STANDARD_GRAVITY * math.sin(omega * t))
            velocity.append(v)
            displacement.append(v / omega * 1000.0)
            frequency.append(f)
        return Vibration(
            accel_g=(accel[0], accel[1], accel[2]),
            velocity_mm_s=(velocity[0], velocity[1], velocity[2]),
            displacement_um=(displacement[0], displacement[1], displacement[2]),
            frequency_hz=(frequency[0], frequency[1], frequency[2]),
            temperature_c=self.temperature_c + phase + self._jitter(),
        )


@dataclass
class WTVB01Sim:
    machine: Machine = field(default_factory=Machine)
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    # What the last answer carried, for tests comparing decoded values.
    truth: Vibration | None = None

    def registers(self, function: int) -> dict[int, int] | None:
        if function != READ_HOLDING_REGISTERS:
            return None
        if not (self.faults.stuck and self.truth):
            self.truth = self.machine.sample(self.clock())
        s = self.truth
        table = dict.fromkeys(range(ACCEL_X, LAST + 1), 0)
        for axis in range(3):
            table[ACCEL_X + axis] = int16_register(s.accel_g[axis] * ACCEL_COUNTS_PER_G)
            table[VELOCITY_X + axis] = int16_register(s.velocity_mm_s[axis])
            table[DISPLACEMENT_X + axis] = int16_register(s.displacement_um[axis])
            table[FREQUENCY_X + axis] = int16_register(s.frequency_hz[axis] * 10)
        table[TEMPERATURE] = int16_register(s.temperature_c * 100)
        return table

    def server(self, unit: int = 0x50, baudrate: int = 9600) -> ModbusSimServer:
        """A server for this device, not yet started."""
        return ModbusSimServer(self.registers, unit=unit, baudrate=baudrate, faults=self.faults)
