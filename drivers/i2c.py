"""The I2C bus seam: what a chip driver needs from smbus2, and how a bus is opened.

Drivers take any object with smbus2's ``SMBus`` methods, so the real adapter and the
emulated bus in ``drivers.sim`` are interchangeable.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from typing import Protocol, TypeVar

from smbus2 import SMBus, i2c_msg

from drivers.errors import BusError

__all__ = ["I2CBus", "i2c_msg", "open_i2c", "retrying", "transfer_error"]

T = TypeVar("T")

# A transfer that failed is repeated this many times: a NACK from a busy chip or EMI on
# a long cable usually clears at once.
BUS_RETRIES = 2


class I2CBus(Protocol):
    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int: ...

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None: ...

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]: ...

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: list[int], force: bool | None = None
    ) -> None: ...

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None: ...

    def close(self) -> None: ...


# A Raspberry Pi has no /dev/i2c-1 until the interface is turned on.
ENABLE_HINT = (
    "is I2C enabled? (sudo raspi-config nonint do_i2c 0, or dtparam=i2c_arm=on in "
    "/boot/firmware/config.txt, then reboot)"
)


def open_i2c(bus: int | str) -> SMBus:
    """Open a real adapter by number (``1``) or path (``/dev/i2c-1``)."""
    try:
        return SMBus(bus)
    except OSError as exc:
        hint = f": {ENABLE_HINT}" if exc.errno == errno.ENOENT else ""
        raise BusError(f"cannot open I2C bus {bus}: {exc.strerror or exc}{hint}") from exc


def transfer_error(exc: OSError, what: str) -> BusError:
    """Name the errno a Linux I2C adapter reports so a log line says what happened."""
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    hint = " (no acknowledge)" if code in (errno.EREMOTEIO, errno.ENXIO, errno.EIO) else ""
    return BusError(f"{what}: {name}{hint}")


def retrying(what: str, transfer: Callable[[], T], retries: int = BUS_RETRIES) -> T:
    """Run ``transfer``, repeating it on a bus error; the last error becomes a BusError."""
    for _ in range(retries):
        with contextlib.suppress(OSError):
            return transfer()
    try:
        return transfer()
    except OSError as exc:
        raise transfer_error(exc, what) from exc
