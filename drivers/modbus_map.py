"""Any Modbus device, read by its register map over any transport.

The map is planned once, when the driver is made (``drivers.register_map.plan``); each
``read()`` then runs the planned requests in turn through the transport: a
``drivers.modbus.ModbusRTU`` on a serial line or a ``drivers.modbus_tcp.ModbusTCP``. A
failed request fails the whole read with the transport's typed error, as the chip
drivers' reads do, so one bad answer never yields a partial reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self

from drivers.register_map import MAX_REGISTERS_PER_REQUEST, Register, Request, decode, plan


class RegisterReader(Protocol):
    """What a transport offers: ``ModbusRTU`` and ``ModbusTCP`` both do."""

    def read_registers(self, address: int, count: int, function: int = ...) -> list[int]: ...

    def close(self) -> None: ...


class ModbusMap:
    """The device behind ``transport`` whose quantities are ``registers``.

    Raises ``ValueError`` for a map with problems (``drivers.register_map.problems``):
    the configuration check refuses those first, with their lines.
    """

    def __init__(
        self,
        transport: RegisterReader,
        registers: Sequence[Register],
        max_count: int = MAX_REGISTERS_PER_REQUEST,
    ) -> None:
        self.requests: list[Request] = plan(registers, max_count)
        self.transport = transport

    def __str__(self) -> str:
        return f"register map on {self.transport}"

    def read(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for request in self.requests:
            words = self.transport.read_registers(request.address, request.count, request.function)
            values.update(decode(request, words))
        return values

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
