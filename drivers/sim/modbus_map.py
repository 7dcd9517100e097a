"""Emulator of a generic Modbus device: serves a configured register map with values
from the climate model, for ``driver: modbus`` with ``port: sim`` (RTU on a pty, through
``ModbusSimServer``) or ``host: sim`` (``drivers.sim.modbus_tcp``).

Register ``i`` of the map follows the model's temperature, humidity and pressure in
turn (``i % 3``): plausible numbers that drift and carry noise, which is all an
emulator can know of a quantity it has only a name for. The value is stored as the
device would: ``(value - offset) / scale``, rounded and saturated for the integer types.
The encoding is this module's own (``struct``), not the driver's, so a slip in either
shows. Addresses between the map's registers read as zero, as reserved registers of a
meter do, so the driver's coalesced reads succeed; outside the map they are an
illegal data address, and a table without registers an illegal function.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from drivers.register_map import FUNCTIONS, Register
from drivers.sim.faults import Faults
from drivers.sim.modbus import ModbusSimServer
from drivers.sim.modbus_tcp import ModbusTcpSimServer
from drivers.sim.signal import Climate

# struct format and the integer range, None for the float types.
_ENCODING: dict[str, tuple[str, tuple[int, int] | None]] = {
    "int16": ("h", (-(2**15), 2**15 - 1)),
    "uint16": ("H", (0, 2**16 - 1)),
    "int32": ("i", (-(2**31), 2**31 - 1)),
    "uint32": ("I", (0, 2**32 - 1)),
    "float32": ("f", None),
    "float64": ("d", None),
}


def encode(register: Register, value: float) -> list[int]:
    """The words a device holding ``value`` in ``register`` answers, in address order."""
    fmt, bounds = _ENCODING[register.type]
    raw = (value - register.offset) / register.scale
    packed = (
        struct.pack(f">{fmt}", raw)
        if bounds is None
        else struct.pack(f">{fmt}", max(bounds[0], min(bounds[1], round(raw))))
    )
    words = list(struct.unpack(f">{len(packed) // 2}H", packed))
    return words if register.word_order == "big" else words[::-1]


@dataclass
class ModbusMapSim:
    register_map: Sequence[Register]
    climate: Climate = field(default_factory=Climate)
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    # The values of the last answer by register name, before encoding, for tests.
    truth: dict[str, float] | None = None

    def registers(self, function: int) -> dict[int, int] | None:
        served = [r for r in self.register_map if FUNCTIONS[r.table] == function]
        if not served:
            return None
        if not (self.faults.stuck and self.truth):
            sample = self.climate.sample(self.clock())
            self.truth = {r.name: sample[i % 3] for i, r in enumerate(self.register_map)}
        first = min(r.address for r in served)
        table = dict.fromkeys(range(first, max(r.last for r in served) + 1), 0)
        for register in served:
            for offset, word in enumerate(encode(register, self.truth[register.name])):
                table[register.address + offset] = word
        return table

    def server(self, unit: int = 1, baudrate: int = 9600) -> ModbusSimServer:
        """An RTU server for this device on a pty, not yet started."""
        return ModbusSimServer(self.registers, unit=unit, baudrate=baudrate, faults=self.faults)

    def tcp_server(self, unit: int = 1) -> ModbusTcpSimServer:
        """A Modbus TCP server for this device on a loopback port, not yet started."""
        return ModbusTcpSimServer(self.registers, unit=unit, faults=self.faults)
