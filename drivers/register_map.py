"""A Modbus device described by its registers: checking the map, planning the requests,
decoding the answers. Pure functions, no I/O, so a configuration check and a test can
ask them directly.

A poll reads every register of the map. Registers of one table that lie close together
are read in one request, because on a 9600-baud line each request costs a round trip
and the device's turnaround; the registers between them are read and thrown away. A
request reads at most 125 registers, the protocol's limit for functions 0x03 and 0x04
(some devices allow fewer, hence ``max_count``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Table = Literal["input", "holding"]
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
WordOrder = Literal["big", "little"]

MAX_REGISTERS_PER_REQUEST = 125
LAST_ADDRESS = 0xFFFF
FUNCTIONS: dict[Table, int] = {"holding": 0x03, "input": 0x04}
# struct format of the value and its size in 16-bit registers.
FORMATS: dict[RegisterType, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "float32": ("f", 2),
    "float64": ("d", 4),
}


@dataclass(frozen=True)
class Register:
    """One quantity: ``name`` in the reading, ``value * scale + offset`` in ``unit``.

    ``address`` is zero-based, as on the wire (register 30001 of a data sheet that counts
    from 1 is input register 0). ``word_order`` says which register holds the most
    significant word of a 32- or 64-bit value; within a register, bytes are big-endian
    as the protocol defines.
    """

    name: str
    table: Table
    address: int
    type: RegisterType
    word_order: WordOrder = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None

    @property
    def width(self) -> int:
        """Registers the value occupies."""
        return FORMATS[self.type][1]

    @property
    def last(self) -> int:
        return self.address + self.width - 1

    def value(self, words: Sequence[int]) -> float:
        """The scaled value of this register's ``words``, as read from the wire."""
        ordered = words if self.word_order == "big" else list(reversed(words))
        raw = struct.pack(f">{len(ordered)}H", *ordered)
        (number,) = struct.unpack(f">{FORMATS[self.type][0]}", raw)
        return float(number) * self.scale + self.offset


@dataclass(frozen=True)
class Problem:
    """What is wrong with the register at ``index`` of the map as given."""

    index: int
    message: str


@dataclass(frozen=True)
class Request:
    """One read: ``count`` registers of ``table`` from ``address``, holding ``registers``."""

    table: Table
    address: int
    count: int
    registers: tuple[Register, ...]

    @property
    def function(self) -> int:
        return FUNCTIONS[self.table]


def problems(
    registers: Sequence[Register], max_count: int = MAX_REGISTERS_PER_REQUEST
) -> list[Problem]:
    """Everything that makes the map unreadable, in the order of ``registers``."""
    found: list[Problem] = []
    names: dict[str, int] = {}
    for index, register in enumerate(registers):
        where = f"{register.table} register {register.address}"
        if not 0 <= register.address <= LAST_ADDRESS:
            found.append(Problem(index, f"address {register.address} is outside 0..65535"))
        elif register.last > LAST_ADDRESS:
            found.append(
                Problem(
                    index,
                    f"a {register.type} at {register.address} needs {register.width} "
                    f"registers, past the last address 65535",
                )
            )
        if register.width > max_count:
            found.append(
                Problem(
                    index,
                    f"a {register.type} is {register.width} registers, more than the "
                    f"{max_count} one request may read",
                )
            )
        if not (math.isfinite(register.scale) and math.isfinite(register.offset)):
            found.append(Problem(index, "scale and offset must be finite numbers"))
        if register.name in names:
            found.append(
                Problem(index, f"name {register.name!r} is also register #{names[register.name]}")
            )
        names.setdefault(register.name, index)
        for other_index, other in enumerate(registers[:index]):
            if (
                other.table == register.table
                and other.address <= register.last
                and register.address <= other.last
            ):
                found.append(
                    Problem(
                        index,
                        f"{where} ({register.type}) overlaps {other.name!r} "
                        f"(register #{other_index}, {other.type} at {other.address})",
                    )
                )
    return found


def plan(
    registers: Sequence[Register], max_count: int = MAX_REGISTERS_PER_REQUEST
) -> list[Request]:
    """The fewest requests that read every register, none over ``max_count`` registers.

    Per table, in address order, a request starts at the first register not yet read and
    takes every following register that ends within ``max_count`` of that start. Because
    registers do not overlap, no request can cover more of them than this greedy one,
    so the count is the least possible.
    """
    wrong = problems(registers, max_count)
    if wrong:
        raise ValueError("; ".join(f"register #{p.index}: {p.message}" for p in wrong))
    requests: list[Request] = []
    for table in ("holding", "input"):
        run: list[Register] = []
        for register in sorted((r for r in registers if r.table == table), key=_address):
            if run and register.last - run[0].address + 1 > max_count:
                requests.append(_request(run))
                run = []
            run.append(register)
        if run:
            requests.append(_request(run))
    return requests


def _address(register: Register) -> int:
    return register.address


def _request(run: list[Register]) -> Request:
    first = run[0].address
    return Request(run[0].table, first, run[-1].last - first + 1, tuple(run))


def decode(request: Request, words: Sequence[int]) -> dict[str, float]:
    """The values of ``request``'s registers in ``words``, the registers it read.

    A float register holding NaN or infinity (meters use NaN for "not available") is
    left out of the result: there is no reading to report, and the other registers'
    are still good.
    """
    if len(words) != request.count:
        raise ValueError(f"expected {request.count} registers, got {len(words)}")
    values: dict[str, float] = {}
    for register in request.registers:
        start = register.address - request.address
        value = register.value(words[start : start + register.width])
        if math.isfinite(value):
            values[register.name] = value
    return values
