"""The generic device's emulators, over RTU on a pty and over TCP, read by the
register-map driver; their encoding is checked against pymodbus' decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from drivers.errors import CrcError, ModbusExceptionError, SensorTimeout
from drivers.modbus import ModbusRTU
from drivers.modbus_map import ModbusMap
from drivers.modbus_tcp import ModbusTCP
from drivers.register_map import FORMATS, Register
from drivers.sim.faults import Faults
from drivers.sim.modbus_map import ModbusMapSim, encode
from drivers.sim.signal import Climate

TIMEOUT = 0.2
T = ModbusClientMixin.DATATYPE

REGISTERS = [
    Register("a", "input", 0, "float32", "little"),
    Register("b", "input", 8, "int16", scale=0.1),
    Register("c", "holding", 100, "uint32", scale=0.01, offset=1000.0),
    Register("d", "holding", 300, "float64"),
]
BOUNDS = {
    "int16": (-32768.0, 32767.0),
    "uint16": (0.0, 65535.0),
    "int32": (-(2.0**31), 2.0**31 - 1),
    "uint32": (0.0, 2.0**32 - 1),
}
# One step of each register's encoding.
STEP = {"a": 1e-4, "b": 0.05, "c": 0.005, "d": 1e-9}


def still(faults: Faults | None = None) -> ModbusMapSim:
    return ModbusMapSim(
        REGISTERS, Climate(-4.0, 55.0, 1013.25, noise=0.0), lambda: 0.0, faults or Faults()
    )


def check(sim: ModbusMapSim, reading: dict[str, float]) -> None:
    assert sim.truth is not None
    assert reading.keys() == sim.truth.keys()
    for name, value in sim.truth.items():
        assert reading[name] == pytest.approx(value, abs=STEP[name]), name


@given(
    kind=st.sampled_from(list(FORMATS)),
    order=st.sampled_from(["big", "little"]),
    value=st.floats(-1e4, 1e4),
    scale=st.sampled_from([1.0, 0.1, 0.001, 10.0]),
)
def test_encoding_agrees_with_pymodbus(kind: str, order: str, value: float, scale: float) -> None:
    register = Register("x", "input", 0, kind, order, scale=scale)  # type: ignore[arg-type]
    raw = ModbusClientMixin.convert_from_registers(
        encode(register, value),
        T[kind.upper()],
        word_order=order,  # type: ignore[arg-type]
    )
    assert isinstance(raw, int | float)
    expected = value / scale
    if kind in BOUNDS:  # integers saturate, as a device's registers do
        low, high = BOUNDS[kind]
        expected = max(low, min(high, expected))
    assert raw == pytest.approx(expected, rel=1e-6, abs=0.5 + 1e-9)


def test_rtu_emulator_reads_in_three_requests(modbus_no_leaks: None) -> None:
    sim = still()
    with sim.server(unit=3) as server:
        with ModbusMap(ModbusRTU(server.port, unit=3, timeout=TIMEOUT), REGISTERS) as driver:
            check(sim, driver.read())
        assert server.requests == 3


def test_tcp_emulator_reads_in_three_requests(modbus_no_leaks: None) -> None:
    sim = still()
    with sim.tcp_server(unit=3) as server:
        with ModbusMap(ModbusTCP("127.0.0.1", server.port, 3, TIMEOUT), REGISTERS) as driver:
            check(sim, driver.read())
            check(sim, driver.read())
        assert server.requests == 6


def test_a_table_the_map_lacks_is_an_illegal_function() -> None:
    only_input = [Register("a", "input", 0, "uint16")]
    sim = ModbusMapSim(only_input)
    with sim.server() as server, ModbusRTU(server.port, timeout=TIMEOUT) as transport:
        with pytest.raises(ModbusExceptionError) as err:
            transport.read_registers(0, 1, 0x03)
        assert err.value.code == 1


@pytest.mark.parametrize(
    ("faults", "error", "requests"),
    [
        (Faults(no_answer_rate=1.0), SensorTimeout, 3),
        (Faults(corrupt_crc_rate=1.0), CrcError, 3),
        (Faults(nack_rate=1.0), ModbusExceptionError, 1),
    ],
    ids=["no answer", "crc", "busy"],
)
def test_rtu_faults(faults: Faults, error: type[Exception], requests: int) -> None:
    with (
        still(faults).server() as server,
        ModbusMap(ModbusRTU(server.port, timeout=TIMEOUT), REGISTERS) as driver,
    ):
        with pytest.raises(error):
            driver.read()
        assert server.requests == requests


@pytest.mark.parametrize(
    ("faults", "error", "requests"),
    [
        (Faults(no_answer_rate=1.0), SensorTimeout, 3),
        (Faults(corrupt_crc_rate=1.0), SensorTimeout, 3),
        (Faults(nack_rate=1.0), ModbusExceptionError, 1),
    ],
    ids=["no answer", "unmatched answer", "busy"],
)
def test_tcp_faults(
    faults: Faults, error: type[Exception], requests: int, modbus_no_leaks: None
) -> None:
    with (
        still(faults).tcp_server() as server,
        ModbusMap(ModbusTCP("127.0.0.1", server.port, 1, TIMEOUT), REGISTERS) as driver,
    ):
        with pytest.raises(error):
            driver.read()
        assert server.requests == requests


def test_tcp_unplugged_then_plugged_back() -> None:
    sim = still(Faults(unplugged=True))
    with (
        sim.tcp_server() as server,
        ModbusMap(ModbusTCP("127.0.0.1", server.port, 1, TIMEOUT), REGISTERS) as driver,
    ):
        with pytest.raises(SensorTimeout):
            driver.read()
        sim.faults.unplugged = False
        check(sim, driver.read())


def test_tcp_other_unit_is_a_gateway_exception() -> None:
    with (
        still().tcp_server(unit=1) as server,
        ModbusMap(ModbusTCP("127.0.0.1", server.port, 2, TIMEOUT), REGISTERS) as driver,
    ):
        with pytest.raises(ModbusExceptionError) as err:
            driver.read()
        assert err.value.code == 0x0B
        assert server.requests == 0


def test_tcp_server_lifecycle(modbus_no_leaks: None) -> None:
    server = still().tcp_server()
    with pytest.raises(RuntimeError):
        _ = server.port
    server.close()
    for _ in range(3):
        server.start()
        with pytest.raises(RuntimeError):
            server.start()
        with ModbusTCP("127.0.0.1", server.port, 1, TIMEOUT) as transport:
            transport.read_registers(0, 2, 0x04)
        server.close()
        server.close()
