"""A Mosquitto of our own on a free loopback port, for the tests and the benches alike.

One starter, so a fix to how a broker is started (its config, waiting until it listens,
noticing that it died) reaches every test and bench at once. Standard library only and
importable by path: the benches put ``tests/`` on ``sys.path`` and import it without
pytest. ``stop()`` and ``start()`` keep the port, so a test can take the broker away and
bring it back at the same address.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = START_TIMEOUT_S,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until something listens on ``port``; gives up at ``timeout``, or at once when
    ``proc``, the process that should listen, has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process for 127.0.0.1:{port} exited ({proc.returncode})")
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Broker:
    """Mosquitto in ``workdir`` (its config and ``mosquitto.log``); ``conf`` lines are
    added to the config, e.g. ``("password_file PATH",)``."""

    def __init__(self, workdir: Path, conf: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # Started as root, Mosquitto would switch to its own user: stay who we are.
            f"user {getpass.getuser()}\n"
            # A test's subscriber may fall thousands behind a drain: no message of its is
            # dropped by the broker for that (the default keeps 1000).
            "max_queued_messages 0\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + "".join(f"{line}\n" for line in conf)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen([mosquitto, "-c", str(self.conf)], stdout=log,
                                         stderr=log)
        try:
            wait_for_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

    def stop(self) -> None:
        """Gone as a broker shut down goes (SIGTERM: a persistent one writes its state)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        """Gone at once (SIGKILL), for the end of a test or bench: Mosquitto takes 0.1 s over
        a clean exit once a client has come and gone, and without persistence it has
        nothing to write."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def running(workdir: Path, conf: Sequence[str] = ()) -> Iterator[Broker]:
    """A started broker, stopped on the way out."""
    broker = Broker(workdir, conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()
