"""XY-MD02 emulator: temperature and humidity input registers in signed tenths.

Only the measurement registers are emulated; the configuration holding registers
(address, baud rate, corrections) are not, so function 0x03 is an illegal function here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.sim.faults import Faults
from drivers.sim.modbus import READ_INPUT_REGISTERS, ModbusSimServer, int16_register
from drivers.sim.signal import Climate

TEMPERATURE = 0x0001
HUMIDITY = 0x0002


@dataclass
class XYMD02Sim:
    climate: Climate = field(default_factory=Climate)
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    # Temperature and humidity of the last answer, for tests comparing decoded values.
    truth: tuple[float, float] | None = None

    def registers(self, function: int) -> dict[int, int] | None:
        if function != READ_INPUT_REGISTERS:
            return None
        if not (self.faults.stuck and self.truth):
            temperature, humidity, _ = self.climate.sample(self.clock())
            self.truth = (temperature, humidity)
        temperature, humidity = self.truth
        return {
            TEMPERATURE: int16_register(temperature * 10),
            HUMIDITY: int16_register(humidity * 10),
        }

    def server(self, unit: int = 1, baudrate: int = 9600) -> ModbusSimServer:
        """A server for this device, not yet started."""
        return ModbusSimServer(self.registers, unit=unit, baudrate=baudrate, faults=self.faults)
