"""An emulated I2C bus with smbus2's ``SMBus`` methods.

A transfer is what crosses the wire: a write of bytes or a read of N bytes from one
address. The SMBus register helpers are expressed as those transfers, exactly as the
Linux adapter puts them on the bus, so a chip emulator only implements ``write`` and
``read`` the way its data sheet describes the protocol.
"""

from __future__ import annotations

import ctypes
import errno
import threading
from typing import Protocol

from smbus2 import i2c_msg
from smbus2.smbus2 import I2C_M_RD

from drivers.sim.faults import Faults


def nack() -> OSError:
    """What the Linux I2C core raises when a device does not acknowledge."""
    return OSError(errno.EREMOTEIO, "Remote I/O error")


def bus_timeout() -> OSError:
    """What an adapter raises when a device holds the clock low past its timeout."""
    return OSError(errno.ETIMEDOUT, "Connection timed out")


class I2CDevice(Protocol):
    """One emulated chip: a write transfer, a read transfer; NACK raises ``nack()``.

    ``faults`` is the chip's fault injection; the bus applies the transfer faults and
    the chip itself honours ``stuck``.
    """

    faults: Faults

    def write(self, data: bytes) -> None: ...

    def read(self, length: int) -> bytes: ...


class _Faulty:
    """Puts a device's injected faults between it and the bus."""

    def __init__(self, device: I2CDevice, faults: Faults) -> None:
        self.device = device
        self.faults = faults

    def _check(self) -> None:
        if self.faults.unplugged or self.faults.roll(self.faults.nack_rate):
            raise nack()
        if self.faults.roll(self.faults.no_answer_rate):
            raise bus_timeout()

    def write(self, data: bytes) -> None:
        self._check()
        self.device.write(data)

    def read(self, length: int) -> bytes:
        self._check()
        data = self.device.read(length)
        if self.faults.roll(self.faults.corrupt_crc_rate):
            data = self.faults.corrupt(data)
        return data


class SimI2CBus:
    """An emulated adapter; devices are attached at their addresses."""

    def __init__(self) -> None:
        self._devices: dict[int, _Faulty] = {}
        # One transfer on the wire at a time, as on a real adapter.
        self._lock = threading.Lock()
        self.closed = False

    def attach(self, address: int, device: I2CDevice) -> None:
        self._devices[address] = _Faulty(device, device.faults)

    def detach(self, address: int) -> None:
        self._devices.pop(address, None)

    @property
    def addresses(self) -> list[int]:
        return sorted(self._devices)

    def _device(self, address: int) -> _Faulty:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        device = self._devices.get(address)
        if device is None:
            raise nack()
        return device

    def _write(self, address: int, data: bytes) -> None:
        with self._lock:
            self._device(address).write(data)

    def _write_read(self, address: int, data: bytes, length: int) -> bytes:
        with self._lock:
            device = self._device(address)
            device.write(data)
            return device.read(length)

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._write_read(i2c_addr, bytes([register]), 1)[0]

    def write_byte_data(
        self, i2c_addr: int, register: int, value: int, force: bool | None = None
    ) -> None:
        self._write(i2c_addr, bytes([register, value]))

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        return list(self._write_read(i2c_addr, bytes([register]), length))

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: list[int], force: bool | None = None
    ) -> None:
        self._write(i2c_addr, bytes([register, *data]))

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        with self._lock:
            for msg in i2c_msgs:
                device = self._device(msg.addr)
                if msg.flags & I2C_M_RD:
                    data = device.read(msg.len)
                    ctypes.memmove(msg.buf, data, msg.len)
                else:
                    device.write(bytes(msg))

    def close(self) -> None:
        self.closed = True
