"""The MQTT 5 Maximum Packet Size the uplink advertises, honoured by a real Mosquitto.

With ``limit_incoming`` set, an MQTT 5 connection tells the broker the largest packet it
takes, and the broker drops a larger message on a subscribed topic instead of sending it:
published before a small one, it never reaches the route while the small one does (one
publisher, one subscriber: the broker keeps their order). 3.1.1 has no such property, so
there the large one arrives; the inbox's own bound is all there is. Raising the limit while
connected reconnects at once, and the large message then gets through.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from helpers import Broker
from structlog.testing import capture_logs
from test_protocol import named, until, uplink_running

from gateway.uplink.connect import PACKET_OVERHEAD_BYTES
from gateway.uplink.inbox import Inbox

TOPIC = "gw/limit-test/in"
LIMIT = 1000
LARGE = b"x" * (LIMIT + PACKET_OVERHEAD_BYTES + 1)


async def publish(broker: Broker, payload: bytes) -> None:
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-p", str(broker.port), "-t", TOPIC, "-q", "1", "-s",
        stdin=subprocess.PIPE)
    await proc.communicate(payload)
    assert proc.returncode == 0


async def received(inbox: Inbox, count: int) -> list[bytes | None]:
    async with asyncio.timeout(10):
        return [(await inbox.get()).payload for _ in range(count)]


@pytest.mark.parametrize(("protocol", "large_arrives"), [("5", False), ("3.1.1", True)])
def test_the_broker_drops_what_is_larger_than_advertised(
    broker: Broker, protocol: str, large_arrives: bool
) -> None:
    async def scenario() -> list[bytes | None]:
        async with uplink_running(brokers=[broker.url], protocol=protocol) as (uplink, _):
            uplink.limit_incoming(LIMIT)
            inbox = Inbox(8, 1 << 20)
            uplink.route(TOPIC, inbox)
            await until(lambda: uplink.connected, "the connection")
            # Subscribed with CONNACK: a message now reaches the route.
            await publish(broker, b"first")
            got = await received(inbox, 1)
            await publish(broker, LARGE)
            await publish(broker, b"small")
            return got + await received(inbox, 2 if large_arrives else 1)

    got = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert got == ([b"first", LARGE, b"small"] if large_arrives else [b"first", b"small"])


def test_a_raised_limit_reconnects_and_lets_larger_messages_through(broker: Broker) -> None:
    async def scenario() -> tuple[list[bytes | None], int, list[dict[str, object]]]:
        with capture_logs() as logs:
            async with uplink_running(brokers=[broker.url]) as (uplink, _):
                uplink.limit_incoming(LIMIT)
                inbox = Inbox(8, 1 << 20)
                uplink.route(TOPIC, inbox)
                await until(lambda: uplink.connected, "the connection")
                await publish(broker, b"first")
                got = await received(inbox, 1)
                uplink.limit_incoming(LIMIT // 2)  # lower: the next connection
                assert uplink.connected
                uplink.limit_incoming(len(LARGE))
                await until(lambda: len(named(logs, "uplink.connected")) == 2, "a reconnect")
                await until(lambda: uplink.connected, "the new connection")
                await publish(broker, LARGE)
                got += await received(inbox, 1)
                return got, uplink.reconnects, logs

    got, reconnects, logs = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert got == [b"first", LARGE]
    assert reconnects == 1
    assert [e["max_packet_bytes"] for e in named(logs, "uplink.packet_limit_raised")] == [
        len(LARGE) + PACKET_OVERHEAD_BYTES]
