"""A device read by its register map from pymodbus' RTU server (over a null-modem of
ptys) and its TCP server: pymodbus encodes the values, our drivers decode them, and
the server counts the requests each poll takes."""

from __future__ import annotations

import socket
import termios
from collections.abc import Iterator
from typing import Literal

import pytest
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.simulator import SimDevice
from pymodbus_peer import NullModem, PymodbusServer, device

from drivers.errors import BusError, ModbusExceptionError, SensorTimeout
from drivers.modbus import ModbusRTU
from drivers.modbus_map import ModbusMap
from drivers.modbus_tcp import ModbusTCP
from drivers.register_map import Register

TIMEOUT = 0.3
UNIT = 7
T = ModbusClientMixin.DATATYPE

# An energy meter's kind of map: floats in both word orders, a signed tenth with a gap
# before it, a holding register with scale and offset, and a double far away.
REGISTERS = [
    Register("voltage_v", "input", 0, "float32", "big", unit="V"),
    Register("current_a", "input", 6, "float32", "little", unit="A"),
    Register("temperature_c", "input", 10, "int16", scale=0.1, unit="°C"),
    Register("energy_kwh", "input", 300, "float64", "little", scale=0.001, unit="kWh"),
    Register("setpoint_c", "holding", 40, "int16", scale=0.5, offset=20.0),
    Register("count", "holding", 41, "uint32", "big"),
]
EXPECTED = {
    "voltage_v": 230.5,
    "current_a": -1.25,
    "temperature_c": -12.3,
    "energy_kwh": 12345.678,
    "setpoint_c": 20.0 - 3.5,
    "count": 70000.0,
}


def words(value: float | int, kind: T, order: str = "big") -> list[int]:
    return ModbusClientMixin.convert_to_registers(value, kind, word_order=order)  # type: ignore[arg-type]


def meter() -> SimDevice:
    # The unused registers between the readings answer zero, as a meter's reserved
    # registers do: the planner reads across them.
    inputs = dict.fromkeys(range(12), 0)
    for offset, word in enumerate(words(230.5, T.FLOAT32, "big")):
        inputs[0 + offset] = word
    for offset, word in enumerate(words(-1.25, T.FLOAT32, "little")):
        inputs[6 + offset] = word
    inputs[10] = words(-123, T.INT16)[0]
    for offset, word in enumerate(words(12345678.0, T.FLOAT64, "little")):
        inputs[300 + offset] = word
    holding = {40: words(-7, T.INT16)[0]}
    for offset, word in enumerate(words(70000, T.UINT32, "big")):
        holding[41 + offset] = word
    return device(UNIT, holding=holding, inputs=inputs)


@pytest.fixture
def null_modem() -> Iterator[NullModem]:
    with NullModem() as line:
        yield line


def check(reading: dict[str, float]) -> None:
    assert reading.keys() == EXPECTED.keys()
    for name, value in EXPECTED.items():
        assert reading[name] == pytest.approx(value, rel=1e-6), name


def test_rtu_reads_the_map_in_three_requests(modbus_no_leaks: None, null_modem: NullModem) -> None:
    with (
        PymodbusServer(meter(), "rtu", null_modem.a) as server,
        ModbusMap(ModbusRTU(null_modem.b, unit=UNIT, timeout=TIMEOUT), REGISTERS) as driver,
    ):
        assert len(driver.requests) == 3
        for poll in range(1, 3):
            check(driver.read())
            # Input 0..11 with its gaps, input 300..303, holding 40..42.
            assert server.requests == 3 * poll


def test_rtu_line_settings(null_modem: NullModem) -> None:
    # A pty keeps the speed and stop bits it is given but drops parity, so parity is
    # checked on pyserial's loopback port below.
    with (
        PymodbusServer(meter(), "rtu", null_modem.a, baudrate=19200, stopbits=2) as server,
        ModbusMap(ModbusRTU(null_modem.b, 19200, UNIT, TIMEOUT, stopbits=2), REGISTERS) as driver,
    ):
        check(driver.read())
        assert server.requests == 3
        _, _, cflag, _, ispeed, _, _ = termios.tcgetattr(null_modem.b_fd)
        assert cflag & termios.CSTOPB
        assert ispeed == termios.B19200


@pytest.mark.parametrize("parity", ["N", "E", "O"])
def test_rtu_parity_reaches_the_port(parity: Literal["N", "E", "O"]) -> None:
    with ModbusRTU("loop://", unit=UNIT, timeout=TIMEOUT, parity=parity) as transport:
        assert transport._serial.device.parity == parity


def test_tcp_reads_the_map_in_three_requests(modbus_no_leaks: None) -> None:
    with (
        PymodbusServer(meter(), "tcp") as server,
        ModbusMap(
            ModbusTCP("127.0.0.1", server.tcp_port, UNIT, timeout=TIMEOUT), REGISTERS
        ) as driver,
    ):
        for poll in range(1, 3):
            check(driver.read())
            assert server.requests == 3 * poll


def test_rtu_exception_response_is_typed(null_modem: NullModem) -> None:
    beyond = [Register("missing", "input", 500, "uint16")]
    with (
        PymodbusServer(meter(), "rtu", null_modem.a),
        ModbusMap(ModbusRTU(null_modem.b, unit=UNIT, timeout=TIMEOUT), beyond) as driver,
        pytest.raises(ModbusExceptionError) as err,
    ):
        driver.read()
    assert err.value.code == 2  # illegal data address


def test_tcp_exception_response_is_typed() -> None:
    beyond = [Register("missing", "holding", 500, "uint16")]
    with (
        PymodbusServer(meter(), "tcp") as server,
        ModbusMap(ModbusTCP("127.0.0.1", server.tcp_port, UNIT, TIMEOUT), beyond) as driver,
        pytest.raises(ModbusExceptionError) as err,
    ):
        driver.read()
    assert err.value.code == 2


def test_tcp_silent_server_is_a_timeout_after_bounded_retries() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with (
            ModbusMap(ModbusTCP("127.0.0.1", port, UNIT, TIMEOUT), REGISTERS) as driver,
            pytest.raises(SensorTimeout),
        ):
            driver.read()
        connection, _ = listener.accept()
        with connection:
            # Three attempts of one request, then the read gives up.
            assert len(connection.recv(4096)) == 3 * 12


def test_tcp_server_gone_is_a_bus_error() -> None:
    with PymodbusServer(meter(), "tcp") as server:
        port = server.tcp_port
        driver = ModbusMap(ModbusTCP("127.0.0.1", port, UNIT, TIMEOUT), REGISTERS)
        check(driver.read())
    with pytest.raises(BusError):
        driver.read()
    driver.close()


def test_tcp_nothing_listening_is_a_bus_error() -> None:
    with PymodbusServer(meter(), "tcp") as server:
        port = server.tcp_port
    with pytest.raises(BusError, match="cannot connect"):
        ModbusTCP("127.0.0.1", port, UNIT, TIMEOUT)
