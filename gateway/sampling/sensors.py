"""Opening a configured sensor: its bus or port (real or emulated) and its driver.

This is the one place that maps configuration onto ``drivers``; the rest of the gateway
sees a sensor as something that reads a dict of quantities (or, for an accelerometer,
drains a FIFO) and can be closed. A driver's module (and its libraries: minimalmodbus
and pyserial for Modbus) is imported when a configured sensor first needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.models import (
    ADXL345Sensor,
    BME280Sensor,
    I2CSensor,
    Sensor,
    SerialSensor,
    SHT3xSensor,
    XYMD02Sensor,
)
from gateway.sampling.simbench import SimBench

if TYPE_CHECKING:
    from drivers.adxl345 import FifoBatch
    from drivers.i2c import I2CBus
    from drivers.wtvb01 import WTVB01
    from drivers.xymd02 import XYMD02


@dataclass
class OpenSensor:
    """A ready driver. Every callable blocks: call them off the event loop."""

    read: Callable[[], dict[str, float]]
    close: Callable[[], None]
    read_fifo: Callable[[], FifoBatch] | None = None


@dataclass
class SerialPorts:
    """One lock per serial device: several Modbus units share one RS-485 line, and
    their request/answer exchanges must not interleave."""

    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, port: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(port, threading.Lock())


def _open_i2c(config: I2CSensor, bench: SimBench) -> OpenSensor:
    bus: I2CBus
    if config.simulated:
        from drivers.sim.i2c import SimI2CBus

        sim_bus = SimI2CBus()
        sim_bus.attach(config.address, bench.i2c_chip(config))
        bus = sim_bus
    else:
        from drivers.i2c import open_i2c

        bus = open_i2c(config.bus)
    if isinstance(config, SHT3xSensor):
        from drivers.sht3x import SHT3x

        sht = SHT3x(bus, config.address, config.repeatability)
        return OpenSensor(read=sht.read, close=bus.close)
    if isinstance(config, BME280Sensor):
        from drivers.bme280 import BME280

        bme = BME280(
            bus,
            config.address,
            temperature_oversampling=config.temperature_oversampling,
            pressure_oversampling=config.pressure_oversampling,
            humidity_oversampling=config.humidity_oversampling,
            iir_filter=config.iir_filter,
        )
        return OpenSensor(read=bme.read, close=bus.close)
    assert isinstance(config, ADXL345Sensor)
    from drivers.adxl345 import ADXL345

    adxl = ADXL345(bus, config.address, rate_hz=config.rate_hz, range_g=config.range_g)
    return OpenSensor(read=adxl.read, close=bus.close, read_fifo=adxl.read_fifo)


def _open_serial(config: SerialSensor, ports: SerialPorts, bench: SimBench) -> OpenSensor:
    port = bench.modbus_server(config).port if config.simulated else config.port
    driver: XYMD02 | WTVB01
    if isinstance(config, XYMD02Sensor):
        from drivers.xymd02 import XYMD02

        driver = XYMD02(port, config.baudrate, config.unit, config.timeout_s)
    else:
        from drivers.wtvb01 import WTVB01

        driver = WTVB01(port, config.baudrate, config.unit, config.timeout_s)
    lock = ports.lock(port)

    def read() -> dict[str, float]:
        with lock:
            return driver.read()

    return OpenSensor(read=read, close=driver.close)


def open_sensor(config: Sensor, ports: SerialPorts, bench: SimBench) -> OpenSensor:
    if isinstance(config, SerialSensor):
        return _open_serial(config, ports, bench)
    return _open_i2c(config, bench)
