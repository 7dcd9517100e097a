"""Opening a configured sensor: its bus (real or emulated) and its driver.

This is the one place that maps configuration onto ``drivers``; the rest of the gateway
sees a sensor as something that reads a dict of quantities and can be closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.i2c import I2CBus, open_i2c
from drivers.sht3x import SHT3x
from drivers.sim.faults import Faults
from drivers.sim.i2c import SimI2CBus
from drivers.sim.sht3x import SHT3xSim
from gateway.config import Sensor, SimFaults


@dataclass
class OpenSensor:
    """A ready driver. Both callables block: call them off the event loop."""

    read: Callable[[], dict[str, float]]
    close: Callable[[], None]


def faults(config: SimFaults | None) -> Faults:
    return Faults(**config.model_dump()) if config else Faults()


def _i2c_bus(config: Sensor) -> I2CBus:
    if config.bus != "sim":
        return open_i2c(config.bus)
    bus = SimI2CBus()
    bus.attach(config.address, SHT3xSim(faults=faults(config.sim)))
    return bus


def open_sensor(config: Sensor) -> OpenSensor:
    bus = _i2c_bus(config)
    driver = SHT3x(bus, config.address, config.repeatability)
    return OpenSensor(read=driver.read, close=bus.close)
