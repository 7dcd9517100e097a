"""The register map's pure functions: problems, request planning and decoding."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.register_map import (
    FORMATS,
    Problem,
    Register,
    RegisterType,
    Request,
    Table,
    decode,
    plan,
    problems,
)


def reg(
    address: int, kind: RegisterType = "uint16", table: Table = "input", **kw: object
) -> Register:
    return Register(f"r{table}{address}", table, address, kind, **kw)  # type: ignore[arg-type]


def spans(requests: list[Request]) -> list[tuple[str, int, int]]:
    return [(r.table, r.address, r.count) for r in requests]


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        ([reg(0), reg(124)], [("input", 0, 125)]),
        ([reg(0), reg(125)], [("input", 0, 1), ("input", 125, 1)]),
        ([reg(0), reg(123, "float32")], [("input", 0, 125)]),
        ([reg(0), reg(124, "float32")], [("input", 0, 1), ("input", 124, 2)]),
        ([reg(10, "float64"), reg(2)], [("input", 2, 12)]),
        (
            [reg(0), reg(0, table="holding"), reg(5, table="holding")],
            [("holding", 0, 6), ("input", 0, 1)],
        ),
        ([reg(65534, "float32")], [("input", 65534, 2)]),
        ([], []),
    ],
    ids=[
        "125 apart is one",
        "126 apart is two",
        "a float ending at 124",
        "a float ending at 125",
        "order of the list",
        "tables apart",
        "the last address",
        "nothing",
    ],
)
def test_plan(registers: list[Register], expected: list[tuple[str, int, int]]) -> None:
    assert spans(plan(registers)) == expected


def test_plan_honours_a_smaller_limit() -> None:
    registers = [reg(a) for a in range(0, 10, 2)]
    assert spans(plan(registers, max_count=4)) == [
        ("input", 0, 3),
        ("input", 4, 3),
        ("input", 8, 1),
    ]


def test_request_function_codes() -> None:
    assert [r.function for r in plan([reg(0, table="holding"), reg(0)])] == [0x03, 0x04]


def test_plan_refuses_a_map_with_problems() -> None:
    with pytest.raises(ValueError, match=r"register #1: .*overlaps"):
        plan([reg(0, "float32"), reg(1)])


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        (
            [reg(0, "float32"), reg(1)],
            [
                Problem(
                    1, "input register 1 (uint16) overlaps 'rinput0' (register #0, float32 at 0)"
                )
            ],
        ),
        ([reg(0), reg(0, table="holding")], []),
        (
            [reg(65535, "float32")],
            [Problem(0, "a float32 at 65535 needs 2 registers, past the last address 65535")],
        ),
        (
            [reg(65533, "float64")],
            [Problem(0, "a float64 at 65533 needs 4 registers, past the last address 65535")],
        ),
        ([reg(65536)], [Problem(0, "address 65536 is outside 0..65535")]),
        ([reg(-1)], [Problem(0, "address -1 is outside 0..65535")]),
        (
            [reg(0), Register("rinput0", "holding", 9, "int16")],
            [Problem(1, "name 'rinput0' is also register #0")],
        ),
        ([reg(0, scale=math.nan)], [Problem(0, "scale and offset must be finite numbers")]),
        ([reg(0, offset=math.inf)], [Problem(0, "scale and offset must be finite numbers")]),
    ],
    ids=[
        "overlap",
        "same address, other table",
        "32-bit at the last address",
        "64-bit past the end",
        "beyond the address space",
        "negative",
        "same name",
        "nan scale",
        "infinite offset",
    ],
)
def test_problems(registers: list[Register], expected: list[Problem]) -> None:
    assert problems(registers) == expected


def test_a_register_wider_than_one_request() -> None:
    assert problems([reg(0, "float64")], max_count=2) == [
        Problem(0, "a float64 is 4 registers, more than the 2 one request may read")
    ]


def test_every_overlap_is_reported_on_the_later_register() -> None:
    wide = Register("wide", "input", 2, "int32")
    found = problems([reg(0, "float64"), reg(10), reg(3), wide])
    assert [p.index for p in found] == [2, 3, 3]


@st.composite
def maps(draw: st.DrawFn) -> tuple[list[Register], int]:
    """Non-overlapping registers of both tables in any order, and a request limit."""
    max_count = draw(st.sampled_from([4, 10, 125]))
    registers: list[Register] = []
    for table in ("input", "holding"):
        address = draw(st.integers(0, 50))
        for _ in range(draw(st.integers(0, 12))):
            kind = draw(st.sampled_from(list(FORMATS)))
            registers.append(reg(address, kind, table))
            address += FORMATS[kind][1] + draw(st.integers(0, 60))
    return draw(st.permutations(registers)), max_count


def fewest(registers: list[Register], max_count: int) -> int:
    """The least number of requests, by dynamic programming over each table's
    registers in address order: a different route to the planner's answer."""
    total = 0
    for table in ("input", "holding"):
        ordered = sorted((r for r in registers if r.table == table), key=lambda r: r.address)
        best = [0] + [math.inf] * len(ordered)
        for end in range(1, len(ordered) + 1):
            for start in range(end):
                if ordered[end - 1].last - ordered[start].address < max_count:
                    best[end] = min(best[end], best[start] + 1)
        total += int(best[-1])
    return total


@given(maps())
def test_plan_reads_every_register_once_in_the_fewest_requests(
    case: tuple[list[Register], int],
) -> None:
    registers, max_count = case
    requests = plan(registers, max_count)
    assert len(requests) == fewest(registers, max_count)
    planned = [r for request in requests for r in request.registers]
    assert sorted(planned, key=id) == sorted(registers, key=id)
    for request in requests:
        assert 1 <= request.count <= max_count
        for register in request.registers:
            assert register.table == request.table
            assert request.address <= register.address
            assert register.last < request.address + request.count


def words_of(fmt: str, value: float, little: bool = False) -> list[int]:
    raw = struct.pack(f">{fmt}", value)
    words = list(struct.unpack(f">{len(raw) // 2}H", raw))
    return words[::-1] if little else words


@pytest.mark.parametrize(
    ("register", "words", "value"),
    [
        (reg(0, "int16"), [0xFF85], -123.0),
        (reg(0, "uint16"), [0xFF85], 65413.0),
        (reg(0, "int16", scale=0.1, offset=-40.0), [500], 10.0),
        (reg(0, "int32"), [0xFFFF, 0xFFFE], -2.0),
        (reg(0, "int32", word_order="little"), [0xFFFE, 0xFFFF], -2.0),
        (reg(0, "uint32"), [0x0001, 0x0000], 65536.0),
        (reg(0, "uint32", word_order="little"), [0x0000, 0x0001], 65536.0),
        (reg(0, "float32"), words_of("f", 230.5), 230.5),
        (reg(0, "float32", word_order="little"), words_of("f", 230.5, little=True), 230.5),
        (reg(0, "float64", word_order="little"), words_of("d", -0.125, little=True), -0.125),
        (reg(0, "float64", scale=1e-3), words_of("d", 1234.0), 1.234),
    ],
)
def test_decode_types(register: Register, words: list[int], value: float) -> None:
    (request,) = plan([register])
    assert decode(request, words) == {register.name: pytest.approx(value)}


def test_decode_skips_the_gap_and_places_each_register() -> None:
    registers = [reg(0, "int16"), reg(4, "float32"), reg(3)]
    (request,) = plan(registers)
    words = [0xFFFF, 0xDEAD, 0xBEEF, 7, *words_of("f", 1.5)]
    assert decode(request, words) == {"rinput0": -1.0, "rinput3": 7.0, "rinput4": 1.5}


def test_not_a_number_is_left_out() -> None:
    (request,) = plan([reg(0, "float32"), reg(2, "float32")])
    assert decode(request, words_of("f", math.nan) + words_of("f", 2.0)) == {"rinput2": 2.0}


def test_decode_wants_the_whole_request() -> None:
    (request,) = plan([reg(0, "float32")])
    with pytest.raises(ValueError, match="expected 2 registers, got 1"):
        decode(request, [0])
