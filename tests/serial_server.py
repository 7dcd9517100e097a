"""A TCP serial server for tests: socat bridging a loopback port to a pty, as a USR-TCP232
or a Moxa NPort bridges a TCP port to an RS-485 line.

The far end of the pty is whatever the test puts there, usually a ``ModbusSimServer``;
the driver reaches it as ``socket://127.0.0.1:PORT``. Like a serial server in its usual
mode, it takes one client at a time; socat ends when that client leaves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Self

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
