"""A Modbus TCP device on a loopback port: the emulators' registers behind an MBAP header.

The protocol data unit is the one RTU carries, so the answer comes from
``drivers.sim.modbus.respond``; TCP only replaces the unit byte and CRC by the MBAP
header (transaction id, protocol 0, length, unit). One thread serves every connection
until ``close()``, as ``ModbusSimServer`` does for its pty.

``Faults`` per request addressed to the unit, as on RTU: ``unplugged`` and
``no_answer_rate`` are silence, ``nack_rate`` exception 0x06; TCP has no CRC, so
``corrupt_crc_rate`` answers under another transaction id, an answer the client cannot
match and must discard. Requests for another unit get exception 0x0B (gateway target
failed to respond), as from a Modbus TCP gateway.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
from typing import Self

from drivers.sim.faults import Faults
from drivers.sim.modbus import SLAVE_DEVICE_BUSY, RegisterMap, respond, with_crc

GATEWAY_TARGET_FAILED = 0x0B
_HEADER = struct.Struct(">HHHB")


def mbap(transaction: int, unit: int, pdu: bytes) -> bytes:
    return _HEADER.pack(transaction, 0, len(pdu) + 1, unit) + pdu


class ModbusTcpSimServer:
    """Serves one unit's ``registers`` on ``127.0.0.1:port`` from ``start()`` until
    ``close()``."""

    def __init__(self, registers: RegisterMap, unit: int = 1, faults: Faults | None = None):
        self.registers = registers
        self.unit = unit
        self.faults = faults if faults is not None else Faults()
        # Requests addressed to this unit, whatever the faults made of them.
        self.requests = 0
        self._listener: socket.socket | None = None
        self._stop: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("ModbusTcpSimServer is not started")
        port: int = self._listener.getsockname()[1]
        return port

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("ModbusTcpSimServer is already started")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = os.pipe()
        self._thread = threading.Thread(
            target=self._serve, args=(self._listener, self._stop[0]), name="modbus-tcp-sim"
        )
        self._thread.start()

    def close(self) -> None:
        if self._listener is None or self._stop is None or self._thread is None:
            return
        os.write(self._stop[1], b"\0")
        self._thread.join()
        self._listener.close()
        for fd in self._stop:
            os.close(fd)
        self._listener = self._stop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self, listener: socket.socket, stop: int) -> None:
        buffers: dict[socket.socket, bytearray] = {}
        try:
            while True:
                watched = [listener.fileno(), stop, *(c.fileno() for c in buffers)]
                ready, _, _ = select.select(watched, [], [])
                if stop in ready:
                    return
                if listener.fileno() in ready:
                    connection, _ = listener.accept()
                    buffers[connection] = bytearray()
                for connection in [c for c in buffers if c.fileno() in ready]:
                    self._receive(connection, buffers)
        finally:
            for connection in buffers:
                connection.close()

    def _receive(self, connection: socket.socket, buffers: dict[socket.socket, bytearray]) -> None:
        try:
            data = connection.recv(4096)
        except OSError:
            data = b""
        if not data:
            buffers.pop(connection).clear()
            connection.close()
            return
        buffer = buffers[connection]
        buffer += data
        while len(buffer) >= _HEADER.size:
            transaction, _, length, unit = _HEADER.unpack_from(buffer)
            end = _HEADER.size - 1 + length
            if len(buffer) < end:
                return
            pdu = bytes(buffer[_HEADER.size : end])
            del buffer[:end]
            answer = self._answer(transaction, unit, pdu)
            if answer:
                connection.sendall(answer)

    def _answer(self, transaction: int, unit: int, pdu: bytes) -> bytes | None:
        if not pdu:
            return None
        if unit != self.unit:
            return mbap(transaction, unit, bytes([pdu[0] | 0x80, GATEWAY_TARGET_FAILED]))
        self.requests += 1
        faults = self.faults
        if faults.unplugged or faults.roll(faults.no_answer_rate):
            return None
        if faults.roll(faults.nack_rate):
            return mbap(transaction, unit, bytes([pdu[0] | 0x80, SLAVE_DEVICE_BUSY]))
        # respond() works on RTU frames: lend it a unit byte and a CRC, take them off.
        answer = respond(with_crc(bytes([unit]) + pdu), self.registers)[1:-2]
        if faults.roll(faults.corrupt_crc_rate):
            transaction ^= 0x8000
        return mbap(transaction, unit, answer)
