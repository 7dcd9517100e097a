"""Fixtures shared by the Modbus driver and emulator tests."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


def _open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


@pytest.fixture
def modbus_no_leaks() -> Iterator[None]:
    """Fails the test if it leaves a file descriptor open or a thread running."""
    fds, threads = _open_fds(), set(threading.enumerate())
    yield
    assert _open_fds() == fds
    assert set(threading.enumerate()) == threads


class RawDevice:
    """A bare pty whose far end answers one request with canned bytes: the wire, unemulated."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.port = os.ttyname(self.slave)
        self.request = b""
        self._thread: threading.Thread | None = None

    def answer_once(self, answer: bytes, request_length: int = 8) -> None:
        def serve() -> None:
            while len(self.request) < request_length:
                ready, _, _ = select.select([self.master], [], [], 2.0)
                if not ready:
                    return
                self.request += os.read(self.master, 256)
            os.write(self.master, answer)

        self._thread = threading.Thread(target=serve)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def modbus_raw_device() -> Iterator[RawDevice]:
    device = RawDevice()
    yield device
    device.close()
