"""Modbus RTU over a serial line (an RS-485 adapter): what the Modbus drivers share.

minimalmodbus frames the requests and checks the answers; this module owns the serial
port, bounds the retries and turns minimalmodbus' exceptions into ``drivers.errors``.
The port is a device path or a pyserial URL (``socket://HOST:PORT``,
``rfc2217://HOST:PORT``: an RS-485 line behind a TCP serial server); pyserial's
``serial_for_url`` opens either, and minimalmodbus talks to the object it returns.
"""

from __future__ import annotations

import termios
from typing import Any, Literal, Self

import minimalmodbus
import serial

from drivers.errors import BusError, CrcError, ModbusExceptionError, SensorTimeout

READ_HOLDING_REGISTERS = 0x03
READ_INPUT_REGISTERS = 0x04

# A device at 9600 baud answers a short read within a few tens of milliseconds and a USB
# adapter adds its latency timer; more than that means it is not going to answer, and a
# poll cycle should not stall much longer on a device that is gone.
DEFAULT_TIMEOUT_S = 0.5

# Timeouts and CRC errors are noise on the line or a device busy with a conversion: a
# repeat usually gets through. An exception response is the device's considered answer,
# so it is not repeated.
RETRIES = 2


Parity = Literal["N", "E", "O"]
StopBits = Literal[1, 2]


def signed16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


class _RecordingPort:
    """The open port as minimalmodbus sees it, remembering the last answer: minimalmodbus
    puts an exception code only in a message. A wrapper rather than a subclass, because
    ``serial_for_url`` picks the port's class from the URL."""

    def __init__(self, device: serial.SerialBase) -> None:
        # Not ``port``: minimalmodbus reads that attribute as the port's name.
        self.device = device
        self.last_read = b""

    def read(self, size: int = 1) -> bytes:
        self.last_read = self.device.read(size)
        return self.last_read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.device, name)


class ModbusRTU:
    """One Modbus unit on a serial port, 8 data bits (8N1 unless told otherwise). Also a
    context manager that closes the port."""

    # The unit a device answers as out of the box; each device class names its own.
    DEFAULT_UNIT = 1

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        unit: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = RETRIES,
        *,
        parity: Parity = "N",
        stopbits: StopBits = 1,
    ) -> None:
        self.port = port
        self.unit = self.DEFAULT_UNIT if unit is None else unit
        self.retries = retries
        # Our own port object rather than a path: minimalmodbus would cache a port it
        # opened by path in a module-wide table, shared by every instrument on that path.
        # pyserial's RFC 2217 client refuses a write timeout; it writes to a socket.
        write_timeout = None if port.lower().startswith("rfc2217://") else timeout
        try:
            self._serial = _RecordingPort(
                serial.serial_for_url(
                    port,
                    baudrate=baudrate,
                    bytesize=serial.EIGHTBITS,
                    parity=parity,
                    stopbits=stopbits,
                    timeout=timeout,
                    write_timeout=write_timeout,
                )
            )
        except (serial.SerialException, ValueError) as exc:
            # ValueError: a URL scheme pyserial does not know, or a malformed path.
            raise BusError(f"cannot open {port}: {exc}") from exc
        self._instrument = minimalmodbus.Instrument(
            self._serial, self.unit, close_port_after_each_call=False
        )
        # A late answer to a timed-out request must not be taken for the next one's.
        self._instrument.clear_buffers_before_each_transaction = True

    def __str__(self) -> str:
        return f"{type(self).__name__} unit {self.unit} on {self.port}"

    def read_registers(
        self, address: int, count: int, function: int = READ_HOLDING_REGISTERS
    ) -> list[int]:
        """Read ``count`` 16-bit registers from ``address`` with function 0x03 or 0x04."""
        for _ in range(self.retries):
            try:
                return self._read_once(address, count, function)
            except (SensorTimeout, CrcError):
                continue
        return self._read_once(address, count, function)

    def _read_once(self, address: int, count: int, function: int) -> list[int]:
        what = f"{self}: function 0x{function:02X} at 0x{address:04X}"
        # minimalmodbus would silently reopen a closed port and leak it.
        if not self._serial.device.is_open:
            raise BusError(f"{what}: port closed")
        try:
            values: list[int] = self._instrument.read_registers(address, count, function)
        except minimalmodbus.NoResponseError as exc:
            raise SensorTimeout(f"{what}: no answer") from exc
        except minimalmodbus.InvalidResponseError as exc:
            # minimalmodbus has no CRC error type; this is the wording of its check.
            if str(exc).startswith("Checksum error"):
                raise CrcError(f"{what}: {exc}") from exc
            raise BusError(f"{what}: {exc}") from exc
        except minimalmodbus.SlaveReportedException as exc:
            raise self._exception_response(what) from exc
        except (OSError, termios.error) as exc:
            # serial.SerialException and minimalmodbus' remaining errors are OSErrors;
            # pyserial lets termios.error through when an unplugged adapter fails tcflush.
            raise BusError(f"{what}: {exc}") from exc
        return values

    def _exception_response(self, what: str) -> ModbusExceptionError:
        # minimalmodbus raises SlaveReportedException only after checking that the
        # answer is at least address, function | 0x80 and code long.
        code = self._serial.last_read[2]
        return ModbusExceptionError(code, f"{what}: exception code {code}")

    def close(self) -> None:
        self._serial.device.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
