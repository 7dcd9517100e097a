"""pymodbus as the reference Modbus server for the driver tests: a well-kept
implementation that is not ours, over a null-modem of two ptys (RTU) or loopback TCP.

The server runs on its own event loop in a thread; it counts the requests it receives,
so a test can assert how many a poll took. ``NullModem`` is two ptys whose far ends a
thread joins, as socat's ``PTY PTY`` would, without a process to leave behind.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import tty
from typing import Literal, Self

from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


class NullModem:
    """Two tty paths joined like a crossed serial cable: ``a`` for one side, ``b`` for
    the other."""

    def __init__(self) -> None:
        self._pairs = [os.openpty(), os.openpty()]
        for _, slave in self._pairs:
            tty.setraw(slave)
        self.a, self.b = (os.ttyname(slave) for _, slave in self._pairs)
        # The tty of ``b``, for a test to read the line settings a driver gave it.
        self.b_fd = self._pairs[1][1]
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._carry, name="null-modem")
        self._thread.start()

    def _carry(self) -> None:
        (one, _), (other, _) = self._pairs
        peer = {one: other, other: one}
        while True:
            ready, _, _ = select.select([one, other, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # the far side is not open yet, or closed again
                    continue
                os.write(peer[fd], data)

    def close(self) -> None:
        os.write(self._stop_w, b"\0")
        self._thread.join()
        for master, slave in self._pairs:
            os.close(master)
            os.close(slave)
        os.close(self._stop_r)
        os.close(self._stop_w)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def device(
    unit: int, holding: dict[int, int] | None = None, inputs: dict[int, int] | None = None
) -> SimDevice:
    """A unit serving exactly these registers (address -> 16-bit word); any other
    address is an exception response, as on a device with a sparse map."""

    def block(words: dict[int, int] | None) -> list[SimData]:
        return [
            SimData(address, values=word, datatype=DataType.REGISTERS)
            for address, word in sorted((words or {}).items())
        ]

    no_bits = [SimData(0, values=False, datatype=DataType.BITS)]
    return SimDevice(unit, simdata=(no_bits, no_bits, block(holding), block(inputs)))


class PymodbusServer:
    """Serves ``sim`` over RTU on ``serial_port`` or over TCP on a free loopback port."""

    def __init__(
        self,
        sim: SimDevice,
        transport: Literal["rtu", "tcp"],
        serial_port: str = "",
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        self.sim, self.transport = sim, transport
        self.serial = (serial_port, baudrate, parity, stopbits)
        self.requests = 0
        self.tcp_port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),))

    def _count(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests += 1
        return pdu

    async def _serve(self) -> None:
        try:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            server: ModbusSerialServer | ModbusTcpServer
            if self.transport == "rtu":
                port, baudrate, parity, stopbits = self.serial
                server = ModbusSerialServer(
                    self.sim, port=port, baudrate=baudrate, parity=parity, stopbits=stopbits,
                    trace_pdu=self._count,
                )  # fmt: skip
            else:
                server = ModbusTcpServer(self.sim, address=("127.0.0.1", 0), trace_pdu=self._count)
            await server.serve_forever(background=True)
            if isinstance(server, ModbusTcpServer):
                sockets = server.transport.sockets  # type: ignore[attr-defined]
                self.tcp_port = sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await server.shutdown()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), "pymodbus server did not start"
        if self._error is not None:
            self._thread.join()
            raise RuntimeError("pymodbus server did not start") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
