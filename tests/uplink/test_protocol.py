"""Which MQTT version the uplink speaks: 5 where the broker takes it, else 3.1.1.

Against a real Mosquitto (which takes both): ``auto`` speaks MQTT 5 and ``3.1.1``
forced speaks 3.1.1, as the broker's own log and a subscriber's view of the message
expiry show. The ways a broker refuses MQTT 5 are played by ``VersionGate``, a front
for that Mosquitto which lets only 3.1.1 through and answers MQTT 5 as a given broker
does: RabbitMQ 3.10 closes the connection without a CONNACK, a 3.1.1 broker answers
CONNACK return code 1, an MQTT 5 broker told to refuse it reason 0x84. Without the
Mosquitto behind it, the gate refuses 3.1.1 too (return code 1), as a broker that
speaks neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from helpers import Broker
from structlog.testing import capture_logs

from gateway.config.models import MqttConfig, QueueConfig
from gateway.uplink.queue import Message, MessageQueue
from gateway.uplink.supervisor import Identity, Uplink

TOPIC = "gw/protocol-test/telemetry/room"
CONNACK_V311_REFUSED = bytes([0x20, 0x02, 0x00, 0x01])  # return code 1: unacceptable version
CONNACK_V5_REFUSED = bytes([0x20, 0x03, 0x00, 0x84, 0x00])  # 0x84, no properties


class VersionGate:
    """A loopback front that reads each CONNECT's protocol level: 3.1.1 goes through to
    ``upstream`` (or is refused when there is none), MQTT 5 is answered by ``on_v5``."""

    def __init__(self, on_v5: str, upstream: int | None) -> None:
        self.on_v5 = on_v5  # "close", "0x01" or "0x84"
        self.upstream = upstream
        self.levels: list[int] = []  # the protocol level of every CONNECT, in order
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> VersionGate:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Abort every open connection, both sides."""
        for writer in self._writers:
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            connect = await read_packet(reader)
            level = connect[-1][6]  # after the protocol name: 0x00 0x04 "MQTT"
            self.levels.append(level)
            if level == 5 and self.on_v5 != "close":
                writer.write(CONNACK_V5_REFUSED if self.on_v5 == "0x84" else CONNACK_V311_REFUSED)
            elif level == 4 and self.upstream is None:
                writer.write(CONNACK_V311_REFUSED)
            elif level == 4:
                await self._forward(reader, writer, b"".join(connect))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect: bytes
    ) -> None:
        assert self.upstream is not None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers.add(up_writer)
        up_writer.write(connect)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pump(reader, up_writer))
                tg.create_task(pump(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()


async def read_packet(reader: asyncio.StreamReader) -> tuple[bytes, bytes, bytes]:
    """One MQTT packet: its first byte, its remaining length as sent, and its body."""
    first = await reader.readexactly(1)
    length_bytes = b""
    length, shift = 0, 0
    while True:
        byte = await reader.readexactly(1)
        length_bytes += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return first, length_bytes, await reader.readexactly(length)


async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()
    sink.transport.abort()  # one side gone: the other goes too


@contextlib.asynccontextmanager
async def uplink_running(**mqtt: Any) -> AsyncIterator[tuple[Uplink, MessageQueue]]:
    queue = MessageQueue(QueueConfig())
    config = MqttConfig(keepalive_s=5, backoff={"initial_s": 0.05, "max_s": 0.2}, **mqtt)
    uplink = Uplink(config, Identity("protocol-test", "test", "boot"), queue)
    runner = asyncio.create_task(uplink.run())
    try:
        yield uplink, queue
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def until(predicate: Callable[[], object], what: str, within_s: float = 10.0) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not predicate():  # noqa: ASYNC110 (polling state we do not own)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [log for log in logs if log["event"] == event]


@pytest.mark.parametrize(("protocol", "level", "window", "expiry"),
                         [("auto", 5, 17, "60"), ("3.1.1", 2, 50, "")])  # fmt: skip
def test_mosquitto_gets_5_by_default_and_3_1_1_when_told(
    broker: Broker, protocol: str, level: int, window: int, expiry: str
) -> None:
    """Mosquitto's receive maximum (20) narrows MQTT 5's window (to 17: gmqtt's packet
    ids number one less, and two stay free for subscriptions); 3.1.1 has none, nor
    message expiry, nor session expiry: a kept session is ``clean_session`` 0."""
    # An MQTT 5 subscriber shows the message expiry interval a message carries (%E).
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5",
         "-t", TOPIC, "-q", "1", "-F", "%E|%p", "-C", "1", "-W", "20"],
        stdout=subprocess.PIPE,
    )  # fmt: skip

    async def scenario() -> list[dict[str, Any]]:
        settings = {"session_expiry_s": 300, "message_expiry_s": 60, "max_in_flight": 50}
        with capture_logs() as logs:
            async with uplink_running(brokers=[broker.url], protocol=protocol, **settings) as (
                _,
                queue,
            ):
                # Until the subscriber, subscribed by then, got one and left.
                while sub.poll() is None:
                    queue.put(Message(TOPIC, b'{"seq":1}', 1, "room"))
                    await asyncio.sleep(0.1)
        return logs

    try:
        logs = asyncio.run(asyncio.wait_for(scenario(), 30))
        out, _ = sub.communicate(timeout=5)
    finally:
        sub.kill()
        sub.wait(5)
    assert out.decode().strip() == f'{expiry}|{{"seq":1}}'
    (chosen,) = named(logs, "uplink.protocol")
    assert chosen == {"event": "uplink.protocol", "log_level": "info",
                      "broker": broker.url, "version": "5" if level == 5 else "3.1.1"}  # fmt: skip
    assert named(logs, "uplink.connected")[0]["window"] == window
    log = (broker.workdir / "mosquitto.log").read_text()
    connects = re.findall(r"as protocol-test \((p\d), (c\d), (k\d+)\)", log)
    assert connects == [(f"p{level}", "c0", "k5")]


@pytest.mark.parametrize(
    ("on_v5", "refused"),
    [
        ("close", "closed before CONNACK (by the broker)"),  # RabbitMQ 3.10
        ("0x01", "refused (CONNACK 0x01)"),  # a 3.1.1 broker, by the 3.1.1 spec
        ("0x84", "refused (CONNACK 0x84)"),  # an MQTT 5 broker that refuses MQTT 5
    ],
)
def test_auto_falls_back_to_3_1_1_and_keeps_to_it(broker: Broker, on_v5: str, refused: str) -> None:
    async def scenario() -> tuple[VersionGate, list[dict[str, Any]]]:
        async with VersionGate(on_v5, upstream=broker.port) as gate:
            with capture_logs() as logs:
                async with uplink_running(brokers=[f"mqtt://127.0.0.1:{gate.port}"]) as (_, queue):
                    await until(lambda: named(logs, "uplink.connected"), "a connection")
                    queue.put(Message(TOPIC, b"{}", 1, "room"))
                    await until(lambda: queue.depth == 0, "the PUBACK")
                    gate.cut()
                    await until(lambda: len(named(logs, "uplink.connected")) >= 2, "a reconnect")
        return gate, logs

    gate, logs = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert gate.levels == [5, 4, 4]  # MQTT 5 offered once: the broker's answer is kept
    (chosen,) = named(logs, "uplink.protocol")
    assert (chosen["version"], chosen["refused"]) == ("3.1.1", f"MQTT 5: {refused}")
    log = (broker.workdir / "mosquitto.log").read_text()
    assert re.findall(r"as protocol-test \((p\d), c1, k5\)", log) == ["p2", "p2"]


@pytest.mark.parametrize(
    ("protocol", "offers", "error"),
    [
        ("auto", [5, 4], "MQTT 5: refused (CONNACK 0x84); MQTT 3.1.1: refused (CONNACK 0x01)"),
        ("3.1.1", [4], "MQTT 3.1.1: refused (CONNACK 0x01)"),
    ],
)
def test_a_broker_that_refuses_every_version_offered_is_named_in_the_log(
    protocol: str, offers: list[int], error: str
) -> None:
    async def scenario() -> tuple[VersionGate, list[dict[str, Any]]]:
        async with VersionGate("0x84", upstream=None) as gate:
            with capture_logs() as logs:
                async with uplink_running(brokers=[f"mqtt://127.0.0.1:{gate.port}"],
                                          protocol=protocol):  # fmt: skip
                    await until(lambda: len(named(logs, "uplink.disconnected")) >= 2, "a retry")
        return gate, logs

    gate, logs = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert gate.levels[: 2 * len(offers)] == offers * 2  # retried; a refusal is not kept
    refusals = [log["error"] for log in named(logs, "uplink.protocol_refused")]
    assert len(refusals) >= 2 and set(refusals) == {error}
    disconnects = {log["error"] for log in named(logs, "uplink.disconnected")}
    assert disconnects == {f"ProtocolRefused: {error}"}
    assert not named(logs, "uplink.protocol") and not named(logs, "uplink.connected")
