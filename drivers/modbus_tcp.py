"""Modbus TCP: a unit behind an Ethernet device (a meter, a PLC, a Modbus gateway).

pymodbus' synchronous client frames the requests (MBAP header, transaction ids) and
reconnects a dropped connection on the next request; this module bounds the retries
and turns its exceptions and exception responses into ``drivers.errors``, as
``drivers.modbus`` does for RTU, so a sensor's health counts them alike.

pymodbus is imported when a TCP transport is first made, not with this module: it
costs about 3 MB and 14 ms on top of asyncio, which a device without a TCP sensor
should not pay. RTU through a TCP serial server is ``ModbusRTU`` with a
``socket://`` port, not this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from drivers.errors import BusError, ModbusExceptionError, SensorTimeout
from drivers.modbus import DEFAULT_TIMEOUT_S, READ_HOLDING_REGISTERS, RETRIES

if TYPE_CHECKING:
    from pymodbus.client import ModbusTcpClient

DEFAULT_PORT = 502


class ModbusTCP:
    """One unit at ``host:port``; connects at once, so a host that is not there is a
    ``BusError`` here as a missing serial port is. Also a context manager that closes
    the connection."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        unit: int = 1,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = RETRIES,
    ) -> None:
        from pymodbus.client import ModbusTcpClient

        self.host, self.port, self.unit = host, port, unit
        # A timed-out request is repeated ``retries`` times, as on RTU; an exception
        # response is the device's considered answer and is not.
        self._client: ModbusTcpClient = ModbusTcpClient(
            host, port=port, timeout=timeout, retries=retries
        )
        # pymodbus leaves connect and close unannotated.
        if not self._client.connect():  # type: ignore[no-untyped-call]
            raise BusError(f"cannot connect to {host}:{port}")

    def __str__(self) -> str:
        return f"Modbus TCP unit {self.unit} at {self.host}:{self.port}"

    def read_registers(
        self, address: int, count: int, function: int = READ_HOLDING_REGISTERS
    ) -> list[int]:
        """Read ``count`` 16-bit registers from ``address`` with function 0x03 or 0x04."""
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        what = f"{self}: function 0x{function:02X} at 0x{address:04X}"
        read = (
            self._client.read_holding_registers
            if function == READ_HOLDING_REGISTERS
            else self._client.read_input_registers
        )
        try:
            response = read(address, count=count, device_id=self.unit)
        except ConnectionException as exc:
            raise BusError(f"{what}: {exc}") from exc
        except ModbusIOException as exc:
            # No answer in time, or none that matched the request.
            raise SensorTimeout(f"{what}: no answer") from exc
        except OSError as exc:
            raise BusError(f"{what}: {exc}") from exc
        if response.isError():
            code = response.exception_code
            raise ModbusExceptionError(code, f"{what}: exception code {code}")
        words = list(response.registers)
        if len(words) != count:
            raise BusError(f"{what}: {len(words)} registers in the answer, not {count}")
        return words

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
