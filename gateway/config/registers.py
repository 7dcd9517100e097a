"""A Modbus device's register map as the file writes it, and the names a quantity may have.

A register's ``name`` is the quantity's name in telemetry, as it is: ``voltage_v`` in the
file is ``voltage_v`` in every reading, in a pipeline stage's per-quantity settings and in
Home Assistant. So a name must be one a quantity can have: lowercase words joined by ``_``
(the unit last, as ``temperature_c`` and ``velocity_x_mm_s`` are), and none of the keys a
telemetry reading already carries beside its quantities. Whether the map can be read at
all (overlaps, a value running past the last address, the request size) is the driver's
rule, ``drivers.register_map.problems``, reported here at each register's place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from drivers.register_map import Register, problems
from gateway.config.fields import Problem
from gateway.config.section import Section

QUANTITY_PATTERN = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
# Written by the telemetry encoder next to the quantities (gateway.pipeline.codec).
RESERVED_KEYS = frozenset({"ts", "zone", "out_of_range"})
# Each sensor's health entity in Home Assistant (gateway.service.discovery), beside its
# quantities' entities.
HEALTH = "health"


def check_quantity_name(value: str) -> str:
    if not QUANTITY_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a quantity name: lowercase letters and digits in "
                         "words joined by '_', the unit last, such as voltage_v")
    if value in RESERVED_KEYS:
        raise ValueError(f"{value!r} is a key of every telemetry reading, not a quantity name")
    if value == HEALTH:
        raise ValueError("'health' is the sensor's health in Home Assistant, not a quantity name")
    return value


QuantityName = Annotated[str, Field(max_length=64), AfterValidator(check_quantity_name)]


class ModbusRegister(Section):
    """One quantity of the device: ``value * scale + offset`` of the register(s) at
    ``address`` (zero-based, as on the wire) of ``table``."""

    name: QuantityName
    table: Literal["input", "holding"]
    address: int = Field(ge=0, le=0xFFFF)
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    # Shown in Home Assistant; the name already says it to everyone else.
    unit: str | None = Field(None, min_length=1, max_length=16)

    def register(self) -> Register:
        return Register(self.name, self.table, self.address, self.type, self.word_order,
                        self.scale, self.offset, self.unit)


def register_problems(registers: Sequence[ModbusRegister], max_count: int) -> list[Problem]:
    """What makes the map unreadable, each at its register (``registers.M``)."""
    return [(("registers", problem.index), problem.message)
            for problem in problems([r.register() for r in registers], max_count)]
