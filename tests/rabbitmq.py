"""RabbitMQ with its MQTT plugin, as a broker that speaks only MQTT 3.1.1.

Debian 12's ``rabbitmq-server`` (3.10) runs here as a foreground process of the test's
own: its node name, directories, configuration and ports (AMQP, MQTT, distribution and
epmd, all free loopback ports) are its alone, so it neither meets the system's service
nor another test's broker. ``stop()`` and ``start()`` keep the ports and the data
directory, so a restart brings back durable sessions and retained messages.

Started as root, the broker runs as the ``rabbitmq`` user (its scripts expect that), so
its directory is under ``/var/tmp``, which that user can write. The user is switched by
``Popen(user=...)`` and not by ``runuser``: runuser answers SIGTERM by passing it on and
killing the broker 2 s later, before it has stopped cleanly.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import free_port, wait_for_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
START_TIMEOUT_S = 90.0  # about 15 s here; a CI machine may be slower
STOP_TIMEOUT_S = 60.0
CTL_TIMEOUT_S = 60.0


class RabbitMQ:
    """One node; a ``RabbitCluster``'s nodes share an epmd port and an Erlang cookie."""

    def __init__(self, epmd_port: int | None = None, cookie: str | None = None) -> None:
        if not SERVER.exists():
            raise RuntimeError(f"{SERVER} is missing: install rabbitmq-server (bash .ci/setup)")
        self.port = free_port()  # MQTT
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.own_epmd = epmd_port is None
        self.epmd_port = epmd_port or free_port()
        self.user = "rabbitmq" if os.geteuid() == 0 else None
        self.base = Path(tempfile.mkdtemp(prefix=f"rabbitmq-test-{self.port}-", dir="/var/tmp"))
        self.log_path = self.base / "rabbitmq.log"
        self.node = f"rabbit-test-{self.port}@localhost"
        if cookie is not None:
            (self.base / ".erlang.cookie").write_text(cookie)
            (self.base / ".erlang.cookie").chmod(0o400)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "mqtt.allow_anonymous = true\n"  # as the user guest, who may log in from loopback
        )
        (self.base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.base / "rabbitmq-env.conf").write_text("")  # not the system's
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            for path in (self.base, *self.base.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),  # the Erlang cookie goes here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_LOGS": "-",  # to standard output, that is to log_path
            # 3.10 takes the new-style (sysctl) format from a file named *.conf.
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.launch()
        self.wait_up()

    def launch(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [SERVER],
                cwd=self.base,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its Erlang VM and helpers, to end on any path
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
            )

    def wait_up(self) -> None:
        """Until its MQTT listener takes connections: the plugin is the last thing started."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(TimeoutError):
                wait_for_port(self.port, timeout=1.0)
                return
        self.stop()
        raise TimeoutError(f"RabbitMQ was not up in {START_TIMEOUT_S:g} s:\n{self.tail()}")

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` against this node, as the broker's user with its cookie."""
        done = subprocess.run(
            [CTL, "-n", self.node, *args], cwd=self.base, env=self.env, capture_output=True,
            text=True, timeout=CTL_TIMEOUT_S, check=False, user=self.user, group=self.user,
            extra_groups=[] if self.user else None,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut: its sockets close with nothing said."""
        proc, self.proc = self.proc, None
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait: the broker writes its queues and retained messages."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        finally:
            # Whatever of its session is left (the VM if the script died first).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        """Stop it, end the epmd it started (on its own port, so only ours), remove its files."""
        try:
            self.stop()
        finally:
            if self.own_epmd:
                kill_epmd(self.epmd_port)
            shutil.rmtree(self.base, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def kill_epmd(port: int) -> None:
    subprocess.run(
        ["epmd", "-kill"], env={**os.environ, "ERL_EPMD_PORT": str(port)},
        capture_output=True, check=False, timeout=10,
    )  # fmt: skip


class RabbitCluster:
    """Three nodes joined into one cluster (``rabbitmqctl join_cluster``), each with its own
    MQTT port. Three, because before 3.12 the MQTT plugin tracks client ids in a Raft
    cluster of its own (Ra) that needs a majority: with two nodes, losing one leaves the
    other unable to accept an MQTT connection. A node killed and started again rejoins by
    itself: its data directory says which cluster it belongs to."""

    def __init__(self, size: int = 3) -> None:
        self.epmd_port = free_port()
        cookie = secrets.token_hex(16)
        self.nodes = [RabbitMQ(self.epmd_port, cookie) for _ in range(size)]

    def start(self) -> None:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_up()
        first, *others = self.nodes
        for node in others:
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
            node.wait_up()

    def close(self) -> None:
        try:
            for node in self.nodes:
                node.close()
        finally:
            kill_epmd(self.epmd_port)
