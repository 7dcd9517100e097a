"""A Modbus RTU device on a pseudo-terminal: the far end of an emulated RS-485 line.

The driver opens ``ModbusSimServer.port``, the slave side of the pty, with pyserial as it
would open ``/dev/ttyUSB0``; a thread reads request frames from the master side and
answers them. A frame ends with 3.5 characters of silence, as on the wire.

Like a device on a shared bus, the server ignores frames with a bad CRC or for another
unit, answers functions 0x03 and 0x04 from a register map, and answers anything else
with an exception response: 0x01 illegal function, 0x02 illegal data address, 0x03
illegal data value (register count out of 1..125).

``Faults`` apply per request addressed to the unit:

* ``unplugged`` or ``no_answer_rate``: silence, so the master times out;
* ``nack_rate``: exception response 0x06, slave device busy (Modbus has no NACK);
* ``corrupt_crc_rate``: the answer goes out with a CRC bit flipped.

``stuck`` belongs to the device model behind the register map.
"""

from __future__ import annotations

import os
import select
import struct
import termios
import threading
import tty
from collections.abc import Callable, Mapping
from typing import Self

from drivers.sim.faults import Faults

READ_HOLDING_REGISTERS = 0x03
READ_INPUT_REGISTERS = 0x04
ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
SLAVE_DEVICE_BUSY = 0x06
MAX_READ_REGISTERS = 125

# Given a function code, the registers it reads (address -> 16-bit value), or None when
# the device does not implement that function. Called once per request: a device model
# samples its signal here.
RegisterMap = Callable[[int], Mapping[int, int] | None]


def crc16_modbus(data: bytes) -> bytes:
    """CRC-16/MODBUS: reflected polynomial 0xA001, init 0xFFFF, low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def with_crc(body: bytes) -> bytes:
    return body + crc16_modbus(body)


def exception_response(unit: int, function: int, code: int) -> bytes:
    return with_crc(bytes([unit, function | 0x80, code]))


def int16_register(value: float) -> int:
    """A scaled reading as a signed 16-bit register holds it, saturating like a device."""
    return max(-0x8000, min(0x7FFF, round(value))) & 0xFFFF


def silent_interval(baudrate: int) -> float:
    """3.5 characters of 11 bits, with the standard's 1.75 ms floor above 19200 baud."""
    return max(3.5 * 11 / baudrate, 0.00175)


def addressed_to(frame: bytes, unit: int) -> bool:
    return len(frame) >= 4 and frame[0] == unit and crc16_modbus(frame[:-2]) == frame[-2:]


def respond(frame: bytes, registers: RegisterMap) -> bytes:
    """The answer of the device with ``registers`` to a frame addressed to it."""
    unit, function = frame[0], frame[1]
    table = (
        registers(function) if function in (READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS) else None
    )
    if table is None:
        return exception_response(unit, function, ILLEGAL_FUNCTION)
    if len(frame) != 8:
        return exception_response(unit, function, ILLEGAL_DATA_VALUE)
    address, count = struct.unpack(">HH", frame[2:6])
    if not 1 <= count <= MAX_READ_REGISTERS:
        return exception_response(unit, function, ILLEGAL_DATA_VALUE)
    wanted = range(address, address + count)
    if any(a not in table for a in wanted):
        return exception_response(unit, function, ILLEGAL_DATA_ADDRESS)
    data = struct.pack(f">{count}H", *(table[a] for a in wanted))
    return with_crc(bytes([unit, function, len(data)]) + data)


class ModbusSimServer:
    """Serves one unit's ``registers`` on a fresh pty from ``start()`` until ``close()``."""

    def __init__(
        self,
        registers: RegisterMap,
        unit: int = 1,
        baudrate: int = 9600,
        faults: Faults | None = None,
    ) -> None:
        self.registers = registers
        self.unit = unit
        self.baudrate = baudrate
        self.faults = faults if faults is not None else Faults()
        # Frames addressed to this unit with a good CRC, whatever the faults made of them.
        self.requests = 0
        speed: int | None = getattr(termios, f"B{baudrate}", None)
        if speed is None:
            raise ValueError(f"no termios speed for {baudrate} baud")
        self._speed = speed
        self._fds: tuple[int, int, int, int] | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> str:
        if self._fds is None:
            raise RuntimeError("ModbusSimServer is not started")
        return os.ttyname(self._fds[1])

    def start(self) -> None:
        if self._fds is not None:
            raise RuntimeError("ModbusSimServer is already started")
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[4] = attrs[5] = self._speed
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        stop_r, stop_w = os.pipe()
        self._fds = (master, slave, stop_r, stop_w)
        self._thread = threading.Thread(
            target=self._serve, args=(master, stop_r), name=f"modbus-sim-{self.unit}"
        )
        self._thread.start()

    def close(self) -> None:
        if self._fds is None or self._thread is None:
            return
        os.write(self._fds[3], b"\0")
        self._thread.join()
        for fd in self._fds:
            os.close(fd)
        self._fds = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self, master: int, stop: int) -> None:
        frame = bytearray()
        gap = silent_interval(self.baudrate)
        while True:
            ready, _, _ = select.select([master, stop], [], [], gap if frame else None)
            if stop in ready:
                return
            if master in ready:
                frame += os.read(master, 256)
                continue
            answer = self._answer(bytes(frame))
            frame.clear()
            if answer:
                os.write(master, answer)

    def _answer(self, frame: bytes) -> bytes | None:
        if not addressed_to(frame, self.unit):
            return None
        self.requests += 1
        faults = self.faults
        if faults.unplugged or faults.roll(faults.no_answer_rate):
            return None
        if faults.roll(faults.nack_rate):
            return exception_response(self.unit, frame[1], SLAVE_DEVICE_BUSY)
        answer = respond(frame, self.registers)
        if faults.roll(faults.corrupt_crc_rate):
            answer = faults.corrupt(answer)
        return answer
