"""Opening a configured sensor: its bus or port (real or emulated) and its driver.

This is the one place that maps configuration onto ``drivers``; the rest of the gateway
sees a sensor as something that reads a dict of quantities (or, for an accelerometer,
drains a FIFO) and can be closed. A driver's module (and its libraries: minimalmodbus
and pyserial for Modbus RTU, pymodbus for Modbus TCP) is imported when a configured
sensor first needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config.models import (
    ADXL345Sensor,
    BME280Sensor,
    DS18B20Sensor,
    I2CSensor,
    ModbusSensor,
    Sensor,
    SerialSensor,
    SHT3xSensor,
    XYMD02Sensor,
)
from gateway.sampling.simbench import SimBench

if TYPE_CHECKING:
    from drivers.adxl345 import FifoBatch
    from drivers.i2c import I2CBus
    from drivers.modbus_map import RegisterReader
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


def _open_modbus(config: ModbusSensor, ports: SerialPorts, bench: SimBench) -> OpenSensor:
    from drivers.modbus_map import ModbusMap

    server = bench.modbus_device(config) if config.simulated else None
    transport: RegisterReader
    if config.host is not None:
        from drivers.modbus_tcp import ModbusTCP

        host = config.host if server is None else "127.0.0.1"
        tcp_port = config.tcp_port if server is None else int(server.port)
        transport = ModbusTCP(host, tcp_port, config.unit, config.timeout_s)
        device = ModbusMap(transport, [r.register() for r in config.registers],
                           config.max_registers_per_request)
        return OpenSensor(read=device.read, close=device.close)
    from drivers.modbus import ModbusRTU

    assert config.port is not None  # the configuration check holds port or host
    port = config.port if server is None else str(server.port)
    transport = ModbusRTU(port, config.baudrate, config.unit, config.timeout_s,
                          parity=config.parity, stopbits=config.stopbits)
    device = ModbusMap(transport, [r.register() for r in config.registers],
                       config.max_registers_per_request)
    # Requests on one line take turns with every other unit's, of whatever driver.
    lock = ports.lock(port)

    def read() -> dict[str, float]:
        with lock:
            return device.read()

    return OpenSensor(read=read, close=device.close)


def _open_ds18b20(config: DS18B20Sensor, bench: SimBench) -> OpenSensor:
    from drivers.ds18b20 import DS18B20

    if not config.simulated:
        probe = DS18B20(config.id, Path(config.w1_root))
        return OpenSensor(read=probe.read, close=probe.close)
    tree = bench.w1_bus(config).tree
    tree.refresh()
    emulated = DS18B20(config.id, tree.root)

    def read() -> dict[str, float]:
        # The kernel converts when the file is read; the emulator, when asked to.
        tree.refresh()
        return emulated.read()

    return OpenSensor(read=read, close=emulated.close)


def open_sensor(config: Sensor, ports: SerialPorts, bench: SimBench) -> OpenSensor:
    if isinstance(config, SerialSensor):
        return _open_serial(config, ports, bench)
    if isinstance(config, ModbusSensor):
        return _open_modbus(config, ports, bench)
    if isinstance(config, DS18B20Sensor):
        return _open_ds18b20(config, bench)
    return _open_i2c(config, bench)
