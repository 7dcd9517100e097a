"""TCP serial servers for tests, bridging a loopback port to a pty as a USR-TCP232 or a
Moxa NPort bridges a TCP port to an RS-485 line: socat for raw TCP (``socket://``), and
pyserial's RFC 2217 port manager (``rfc2217://``).

The far end of the pty is whatever the test puts there, usually a ``ModbusSimServer``.
Like a serial server in its usual mode, each takes one client.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Self

import serial
from serial import rfc2217

LISTENING = re.compile(r"listening on AF=2 127\.0\.0\.1:(\d+)")


class TcpSerialServer:
    def __init__(self, tty: str, workdir: Path) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (.ci/setup installs it)")
        self.log_path = workdir / f"socat-{Path(tty).name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [socat, "-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr",
                 f"FILE:{tty},raw,echo=0"],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        try:
            self.port = self._listening_port()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _listening_port(self, timeout: float = 10.0) -> int:
        # socat names the port the kernel gave it; a probe connection would use up its
        # one client.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log_path.read_text())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"socat exited: {self.log_path.read_text()}")
            time.sleep(0.02)
        raise TimeoutError("socat is not listening")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Rfc2217Server:
    """A serial server speaking RFC 2217 (Telnet with COM port control), as a Moxa NPort
    in RFC2217 mode: the client sets the line's baud rate through it. pyserial's own
    ``PortManager`` does the protocol; one client, served by two threads."""

    def __init__(self, tty: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.line = _PtyLine(tty, timeout=0.05)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, name="rfc2217-server")]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        connection.settimeout(0.05)
        with connection:
            manager = rfc2217.PortManager(self.line, _Sender(connection))
            to_client = threading.Thread(target=self._line_to_client,
                                         args=(manager, connection), name="rfc2217-line")
            to_client.start()
            try:
                while not self._stop.is_set():
                    try:
                        data = connection.recv(1024)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    self.line.write(b"".join(manager.filter(data)))
            finally:
                self._stop.set()
                to_client.join()

    def _line_to_client(self, manager: rfc2217.PortManager, connection: socket.socket) -> None:
        while not self._stop.is_set():
            data = self.line.read(self.line.in_waiting or 1)
            if data:
                connection.sendall(b"".join(manager.escape(data)))

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(10)
        self.line.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _PtyLine(serial.Serial):
    """A pty has no modem lines (their ioctls fail): it reports an idle cable."""

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass


class _Sender:
    """What ``PortManager`` writes its Telnet answers to."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.connection.sendall(data)
