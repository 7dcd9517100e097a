"""The files the MQTT settings name: read off the event loop, and only if they are regular.

``tls.load`` refuses a FIFO, a device or a directory given as the password file or as a TLS
file, naming the setting and the path, without opening it (a FIFO would block its reader
until a writer came). An uplink whose password file is a FIFO reports that as its
``last_error`` and keeps retrying while the event loop goes on turning; nobody ever opens
the FIFO. A regular password file still logs in, to a Mosquitto that requires it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Broker
from structlog.testing import capture_logs
from test_protocol import named, until

from gateway.config.models import MqttConfig, QueueConfig
from gateway.uplink import tls
from gateway.uplink.link import Link, LinkState
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import Identity, Uplink


def settings(**mqtt: object) -> MqttConfig:
    return MqttConfig.model_validate(
        {"brokers": ["mqtt://127.0.0.1:1"], "keepalive_s": 5,
         "backoff": {"initial_s": 0.05, "max_s": 0.1}, **mqtt})


class FifoWatch:
    """A FIFO, and a thread that offers it a writer as soon as anyone opens it to read: a
    reader blocked on it is let go (so a regression fails rather than hangs) and recorded."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader
                continue
            self.opened = True
            os.write(fd, b"secret\n")
            os.close(fd)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[FifoWatch]:
    watch = FifoWatch(tmp_path / "password")
    try:
        yield watch
    finally:
        watch.close()


def test_a_fifo_password_file_is_refused_without_being_opened(fifo: FifoWatch) -> None:
    with pytest.raises(tls.CredentialsError) as refused:
        tls.load(settings(username="gw", password_file=str(fifo.path)))
    assert str(refused.value) == f"mqtt.password_file {fifo.path}: a FIFO, not a regular file"
    assert not fifo.opened


@pytest.mark.parametrize(
    ("setting", "path", "kind"),
    [
        ("password_file", "dir", "a directory"),
        ("password_file", "/dev/null", "a character device"),
        ("tls.ca_file", "dir", "a directory"),
        ("tls.cert_file", "/dev/null", "a character device"),
        ("tls.key_file", "dir", "a directory"),
    ],
)
def test_files_that_are_not_regular_are_refused_with_their_path(
    setting: str, path: str, kind: str, tmp_path: Path
) -> None:
    named_path = tmp_path if path == "dir" else Path(path)
    cert = tmp_path / "cert.pem"
    cert.write_text("not read: the key is refused first\n")
    mqtt: dict[str, object] = {"brokers": ["mqtts://127.0.0.1:1"], "username": "gw"}
    if setting == "password_file":
        mqtt["password_file"] = str(named_path)
    else:
        tls_files = {"cert_file": str(cert)} if setting == "tls.key_file" else {}
        mqtt["tls"] = tls_files | {setting.removeprefix("tls."): str(named_path)}
    with pytest.raises(tls.CredentialsError) as refused:
        tls.load(settings(**mqtt))
    assert str(refused.value) == f"mqtt.{setting} {named_path}: {kind}, not a regular file"


def test_missing_and_unparsable_tls_files_name_their_setting(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("no certificate here\n")
    with pytest.raises(tls.CredentialsError, match=f"mqtt.tls.ca_file {garbage}: "):
        tls.load(settings(brokers=["mqtts://127.0.0.1:1"], tls={"ca_file": str(garbage)}))
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(tls.CredentialsError) as refused:
        tls.load(settings(brokers=["mqtts://127.0.0.1:1"], tls={"cert_file": str(missing)}))
    assert str(refused.value) == f"mqtt.tls.cert_file {missing}: No such file or directory"


def test_no_tls_context_without_a_tls_broker_nor_password_without_a_user(
    tmp_path: Path,
) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\r\n")
    loaded = tls.load(settings(password_file=str(password), tls={"ca_file": "/nowhere"}))
    assert loaded == tls.Credentials(None, None)
    assert tls.load(settings(username="gw", password_file=str(password))).password == "s3cret"


def test_an_uplink_with_a_fifo_password_keeps_retrying_and_the_loop_keeps_turning(
    fifo: FifoWatch,
) -> None:
    async def scenario() -> tuple[Uplink, list[int], list[dict[str, object]]]:
        ticks = 0
        # The ticker's count at each refused attempt: it moved between every two of them,
        # so the loop ran other work while the uplink retried.
        seen: list[int] = []

        def on_link(link: Link) -> None:
            if link.state is LinkState.UNREACHABLE:
                seen.append(ticks)

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        config = settings(username="gw", password_file=str(fifo.path))
        uplink = Uplink(config, Identity("fifo", "test", "boot"), MessageQueue(QueueConfig()),
                        on_link=on_link)
        with capture_logs() as logs:
            async with asyncio.TaskGroup() as tg:
                ticker = tg.create_task(tick())
                runner = tg.create_task(uplink.run())
                await until(lambda: uplink.reconnects >= 4, "four refused attempts")
                runner.cancel()
                ticker.cancel()
        return uplink, seen, logs

    uplink, seen, logs = asyncio.run(asyncio.wait_for(scenario(), 30))
    refusal = f"mqtt.password_file {fifo.path}: a FIFO, not a regular file"
    assert uplink.last_error == f"CredentialsError: {refusal}"
    assert not uplink.connected
    assert not fifo.opened
    assert all(a < b for a, b in itertools.pairwise(seen)), seen
    assert [e["error"] for e in named(logs, "uplink.credentials_invalid")][:4] == [refusal] * 4


def test_a_regular_password_file_logs_in(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "gw", "s3cret"],
                   check=True, capture_output=True)
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.conf.read_text().replace(
        "allow_anonymous true", f"allow_anonymous false\npassword_file {passwords}"))
    password = tmp_path / "password"

    async def attempt(secret: str) -> tuple[bool, int]:
        password.write_text(secret + "\n")
        config = settings(brokers=[broker.url], username="gw", password_file=str(password))
        uplink = Uplink(config, Identity("login", "test", "boot"), MessageQueue(QueueConfig()))
        runner = asyncio.create_task(uplink.run())
        try:
            await until(lambda: uplink.connected or uplink.reconnects >= 2, "an answer")
            return uplink.connected, uplink.reconnects
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    broker.start()
    try:
        refused = asyncio.run(attempt("wrong"))
        accepted = asyncio.run(attempt("s3cret"))
    finally:
        broker.stop()
    connected, attempts = refused
    # The poll may see the third refusal as well as the second.
    assert not connected and attempts >= 2
    assert accepted == (True, 0)
