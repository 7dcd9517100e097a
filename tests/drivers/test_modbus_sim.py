"""The Modbus RTU device emulator: CRC, answers, faults and lifecycle, over a real pty."""

from __future__ import annotations

import struct

import minimalmodbus
import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from drivers.sim.faults import Faults
from drivers.sim.modbus import (
    ModbusSimServer,
    addressed_to,
    crc16_modbus,
    int16_register,
    respond,
    silent_interval,
    with_crc,
)

REGISTERS = {0x10: 0x1234, 0x11: 0xABCD}


def registers(function: int) -> dict[int, int] | None:
    return REGISTERS if function == 0x03 else None


def request(unit: int, function: int, address: int, count: int) -> bytes:
    return with_crc(struct.pack(">BBHH", unit, function, address, count))


GOOD_ANSWER = with_crc(bytes.fromhex("0103041234ABCD"))


def test_crc_vectors() -> None:
    assert crc16_modbus(bytes.fromhex("010400010002")) == bytes.fromhex("200B")
    # The catalogue's check value of CRC-16/MODBUS, 0x4B37, sent low byte first.
    assert crc16_modbus(b"123456789") == bytes.fromhex("374B")


@given(st.binary(max_size=64))
def test_crc_agrees_with_minimalmodbus(data: bytes) -> None:
    assert crc16_modbus(data) == minimalmodbus._calculate_crc(data)


@given(st.binary(min_size=2, max_size=64))
def test_frame_with_crc_is_addressed(body: bytes) -> None:
    frame = with_crc(body)
    assert addressed_to(frame, body[0])
    assert not addressed_to(frame, (body[0] + 1) % 256)
    assert not addressed_to(frame[:-1] + bytes([frame[-1] ^ 0x80]), body[0])


def test_short_frame_is_not_addressed() -> None:
    assert not addressed_to(bytes.fromhex("0103"), 1)


def test_respond_reads_registers() -> None:
    assert respond(request(1, 0x03, 0x10, 2), registers) == GOOD_ANSWER


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (request(1, 0x04, 0x10, 2), 0x01),
        (with_crc(bytes.fromhex("0106001000FF")), 0x01),
        (request(1, 0x03, 0x11, 2), 0x02),
        (request(1, 0x03, 0x0F, 1), 0x02),
        (request(1, 0x03, 0x10, 0), 0x03),
        (request(1, 0x03, 0x10, 126), 0x03),
        (with_crc(bytes.fromhex("0103001000")), 0x03),
    ],
)
def test_respond_exceptions(frame: bytes, code: int) -> None:
    assert respond(frame, registers) == with_crc(bytes([1, frame[1] | 0x80, code]))


@pytest.mark.parametrize(
    ("value", "register"),
    [(0, 0), (305.4, 305), (-1, 0xFFFF), (-400, 0xFE70), (40000, 0x7FFF), (-40000, 0x8000)],
)
def test_int16_register(value: float, register: int) -> None:
    assert int16_register(value) == register


def test_silent_interval() -> None:
    assert silent_interval(9600) == pytest.approx(3.5 * 11 / 9600)
    assert silent_interval(115200) == 0.00175


def exchange(server: ModbusSimServer, frame: bytes, expect: int = 9) -> bytes:
    with serial.Serial(server.port, server.baudrate, timeout=0.2) as port:
        port.write(frame)
        return port.read(expect)


def test_answers_over_pty(modbus_no_leaks: None) -> None:
    with ModbusSimServer(registers, unit=1) as server:
        assert exchange(server, request(1, 0x03, 0x10, 2)) == GOOD_ANSWER
        assert exchange(server, request(1, 0x03, 0x11, 2)) == with_crc(bytes([1, 0x83, 2]))
        assert server.requests == 2


def test_frames_split_by_silence(modbus_no_leaks: None) -> None:
    with (
        ModbusSimServer(registers, unit=1) as server,
        serial.Serial(server.port, 9600, timeout=0.2) as port,
    ):
        for _ in range(3):
            port.write(request(1, 0x03, 0x10, 2))
            assert port.read(9) == GOOD_ANSWER


@pytest.mark.parametrize(
    "frame",
    [
        request(2, 0x03, 0x10, 2),
        request(0, 0x03, 0x10, 2),
        request(1, 0x03, 0x10, 2)[:-1] + b"\0",
        bytes.fromhex("01"),
    ],
    ids=["other unit", "broadcast", "bad crc", "fragment"],
)
def test_silent_unless_addressed(frame: bytes, modbus_no_leaks: None) -> None:
    with ModbusSimServer(registers, unit=1) as server:
        assert exchange(server, frame) == b""
        assert server.requests == 0


@pytest.mark.parametrize(
    ("faults", "answer"),
    [
        (Faults(unplugged=True), b""),
        (Faults(no_answer_rate=1.0), b""),
        (Faults(nack_rate=1.0), with_crc(bytes([1, 0x83, 0x06]))),
        (Faults(corrupt_crc_rate=1.0), GOOD_ANSWER[:-1] + bytes([GOOD_ANSWER[-1] ^ 1])),
    ],
    ids=["unplugged", "no answer", "busy", "corrupt crc"],
)
def test_faults(faults: Faults, answer: bytes, modbus_no_leaks: None) -> None:
    with ModbusSimServer(registers, unit=1, faults=faults) as server:
        assert exchange(server, request(1, 0x03, 0x10, 2)) == answer
        assert server.requests == 1


def test_port_needs_start() -> None:
    server = ModbusSimServer(registers)
    with pytest.raises(RuntimeError):
        _ = server.port


def test_start_twice_is_refused(modbus_no_leaks: None) -> None:
    with ModbusSimServer(registers) as server, pytest.raises(RuntimeError):
        server.start()


def test_unsupported_baudrate_is_refused() -> None:
    with pytest.raises(ValueError, match="12345"):
        ModbusSimServer(registers, baudrate=12345)


def test_close_is_idempotent_and_restartable(modbus_no_leaks: None) -> None:
    server = ModbusSimServer(registers)
    server.close()
    for _ in range(3):
        server.start()
        assert exchange(server, request(1, 0x03, 0x10, 2)) == GOOD_ANSWER
        server.close()
        server.close()


def test_close_with_client_attached(modbus_no_leaks: None) -> None:
    server = ModbusSimServer(registers)
    server.start()
    with serial.Serial(server.port, 9600, timeout=0.2) as port:
        port.write(request(1, 0x03, 0x10, 2))
        server.close()
