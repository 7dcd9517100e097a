"""The emulated hardware of a device: one emulator per simulated sensor.

Like real chips, emulators outlive the drivers that talk to them: a driver re-opened
after a failure, or a sampler rebuilt by a reload, finds the same chip in the same
state. Changing only a sensor's ``sim`` settings changes that chip in place, which is
how an operator (or a test) unplugs and plugs back an emulated sensor. An emulator's
module is imported when a sensor first needs it: a device with real chips only loads
none of them. A generic Modbus device is its register map served over a pty (``port:
sim``) or a loopback TCP port (``host: sim``); a DS18B20 is a probe on a fake 1-Wire
tree in a temporary directory of its own, removed with the emulator.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from drivers.sim.faults import Faults
from gateway.config.models import (
    ADXL345Sensor,
    BME280Sensor,
    DS18B20Sensor,
    I2CSensor,
    ModbusSensor,
    Sensor,
    SensorBase,
    SerialSensor,
    SHT3xSensor,
    SimConfig,
    XYMD02Sensor,
)

if TYPE_CHECKING:
    from drivers.sim.ds18b20 import W1Tree
    from drivers.sim.i2c import I2CDevice
    from drivers.sim.modbus import ModbusSimServer
    from drivers.sim.modbus_tcp import ModbusTcpSimServer
    from drivers.sim.wtvb01 import WTVB01Sim
    from drivers.sim.xymd02 import XYMD02Sim

_FAULT_FIELDS = [f.name for f in fields(Faults) if f.init and f.name != "seed"]


def _seed(config: SensorBase) -> int:
    """Emulated sensors of one device differ, and stay the same across restarts."""
    return zlib.crc32(config.name.encode())


def _faults(config: SimConfig | None) -> Faults:
    if config is None:
        return Faults()
    return Faults(**config.model_dump(exclude={"tones"}))


def _identity(config: SensorBase) -> tuple[object, ...]:
    if isinstance(config, SerialSensor):
        return (type(config), config.unit, config.baudrate)
    if isinstance(config, ModbusSensor):
        # The map is the device: another map is another emulator.
        return (type(config), config.port, config.host, config.unit, config.baudrate,
                tuple(r.register() for r in config.registers))
    if isinstance(config, DS18B20Sensor):
        return (type(config), config.id)
    assert isinstance(config, I2CSensor)
    return (type(config), config.address)


@runtime_checkable
class _Closable(Protocol):
    """An emulator holding resources (a Modbus server: a pty and a thread)."""

    def close(self) -> None: ...


@dataclass
class W1Bus:
    """An emulated 1-Wire bus: the tree a DS18B20 driver reads, in a directory of its own."""

    tree: W1Tree

    def close(self) -> None:
        shutil.rmtree(self.tree.root, ignore_errors=True)


class SimBench:
    def __init__(self) -> None:
        self._devices: dict[str, tuple[tuple[object, ...], Faults, object]] = {}
        self._lock = threading.Lock()

    def i2c_chip(self, config: I2CSensor) -> I2CDevice:
        # The identity includes the config's type, so the device is the chip it names.
        return cast("I2CDevice", self._get(config, lambda f: self._new_chip(config, f)))

    def modbus_server(self, config: SerialSensor) -> ModbusSimServer:
        return cast("ModbusSimServer", self._get(config, lambda f: self._new_server(config, f)))

    def modbus_device(self, config: ModbusSensor) -> ModbusSimServer | ModbusTcpSimServer:
        """The running server of a generic device: on a pty, or on a loopback TCP port."""
        return cast("ModbusSimServer | ModbusTcpSimServer",
                    self._get(config, lambda f: self._new_map_server(config, f)))

    def w1_bus(self, config: DS18B20Sensor) -> W1Bus:
        return cast("W1Bus", self._get(config, lambda f: self._new_w1_bus(config, f)))

    def _get(self, config: SensorBase, make: Callable[[Faults], object]) -> object:
        identity = _identity(config)
        with self._lock:
            known = self._devices.get(config.name)
            if known is not None and known[0] == identity:
                return known[2]
            if known is not None:
                self._close(known[2])
            faults = _faults(config.sim)
            device = make(faults)
            self._devices[config.name] = (identity, faults, device)
            return device

    @staticmethod
    def _new_chip(config: I2CSensor, faults: Faults) -> I2CDevice:
        from drivers.sim.signal import Climate

        if isinstance(config, SHT3xSensor):
            from drivers.sim.sht3x import SHT3xSim

            return SHT3xSim(climate=Climate(seed=_seed(config)), faults=faults)
        if isinstance(config, BME280Sensor):
            from drivers.sim.bme280 import BME280Sim

            return BME280Sim(climate=Climate(seed=_seed(config)), faults=faults)
        assert isinstance(config, ADXL345Sensor)
        from drivers.sim.adxl345 import ADXL345Sim
        from drivers.sim.vibration import Tone, Vibration

        vibration = Vibration(seed=_seed(config))
        if config.sim is not None and config.sim.tones is not None:
            vibration.tones = [Tone(t.axis, t.freq_hz, t.amplitude_g) for t in config.sim.tones]
        return ADXL345Sim(vibration=vibration, faults=faults)

    @staticmethod
    def _new_server(config: SerialSensor, faults: Faults) -> ModbusSimServer:
        device: XYMD02Sim | WTVB01Sim
        if isinstance(config, XYMD02Sensor):
            from drivers.sim.signal import Climate
            from drivers.sim.xymd02 import XYMD02Sim

            device = XYMD02Sim(climate=Climate(seed=_seed(config)), faults=faults)
        else:
            from drivers.sim.wtvb01 import Machine, WTVB01Sim

            device = WTVB01Sim(machine=Machine(seed=_seed(config)), faults=faults)
        server = device.server(unit=config.unit, baudrate=config.baudrate)
        server.start()
        return server

    @staticmethod
    def _new_map_server(config: ModbusSensor,
                        faults: Faults) -> ModbusSimServer | ModbusTcpSimServer:
        from drivers.sim.modbus_map import ModbusMapSim
        from drivers.sim.signal import Climate

        device = ModbusMapSim([r.register() for r in config.registers],
                              climate=Climate(seed=_seed(config)), faults=faults)
        server: ModbusSimServer | ModbusTcpSimServer = (
            device.tcp_server(unit=config.unit) if config.host is not None
            else device.server(unit=config.unit, baudrate=config.baudrate))
        server.start()
        return server

    @staticmethod
    def _new_w1_bus(config: DS18B20Sensor, faults: Faults) -> W1Bus:
        from drivers.ds18b20 import AUTO, FAMILY
        from drivers.sim.ds18b20 import DS18B20Sim, W1Tree
        from drivers.sim.signal import Climate

        tree = W1Tree(Path(tempfile.mkdtemp(prefix="edge-gateway-w1-")))
        # With id auto, a serial number of its own, the same across restarts.
        probe_id = f"{FAMILY}-{_seed(config):012x}" if config.id == AUTO else config.id
        tree.attach(DS18B20Sim(probe_id, climate=Climate(seed=_seed(config)), faults=faults))
        return W1Bus(tree)

    def update(self, sensors: list[Sensor]) -> None:
        """Apply changed fault settings to the live emulators; retire removed ones."""
        wanted = {s.name: s for s in sensors if s.simulated}
        with self._lock:
            for name in list(self._devices):
                if name not in wanted:
                    self._close(self._devices.pop(name)[2])
            for name, config in wanted.items():
                known = self._devices.get(name)
                if known is None:
                    continue
                target = _faults(config.sim)
                for field_name in _FAULT_FIELDS:
                    setattr(known[1], field_name, getattr(target, field_name))

    @staticmethod
    def _close(device: object) -> None:
        if isinstance(device, _Closable):
            device.close()

    def close(self) -> None:
        with self._lock:
            for _, _, device in self._devices.values():
                self._close(device)
            self._devices.clear()
