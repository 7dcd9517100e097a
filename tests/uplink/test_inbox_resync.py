"""A burst that overflows an inbox cannot make the device miss what the broker retains there
(a config update, a firmware manifest): once the consumer has drained the inbox, the topics
it dropped messages of are subscribed again, and the broker sends their retained message
again. In process, the inbox's own rule; against a real Mosquitto, the whole way round."""

from __future__ import annotations

import asyncio
import subprocess

from helpers import Broker
from test_protocol import until, uplink_running

from gateway.uplink.inbox import Inbox

TOPIC = "gw/resync-test/config/set"


def test_a_drained_inbox_hands_over_the_topics_it_dropped_once() -> None:
    async def scenario() -> tuple[list[set[str]], list[str]]:
        inbox = Inbox(2, 64)
        resyncs: list[set[str]] = []
        inbox.resync = resyncs.append
        for topic in ("a", "b", "c", "c", "a"):
            inbox.offer(topic, b"x")
        got = [(await inbox.get()).topic for _ in range(2)]
        waiting = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)  # drained: it hands the lost topics over, then waits
        inbox.offer("a", b"again")
        got.append((await waiting).topic)
        waiting = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)  # nothing dropped since: no second resync
        waiting.cancel()
        return resyncs, got

    resyncs, got = asyncio.run(scenario())
    assert resyncs == [{"c", "a"}]
    assert got == ["a", "b", "a"]


def test_a_retained_update_dropped_in_a_burst_arrives_once_the_inbox_drains(
        broker: Broker) -> None:
    burst = b"".join(b"junk %d\n" % n for n in range(200))

    def publish(*args: str, lines: bytes | None = None) -> None:
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", TOPIC, "-q", "1",
                        *args], input=lines, check=True, timeout=30)

    async def scenario() -> list[bytes | None]:
        async with uplink_running(brokers=[broker.url]) as (uplink, _):
            inbox = Inbox(4, 1 << 10)
            uplink.route(TOPIC, inbox)
            await until(lambda: uplink.connected, "the connection")
            # A burst, then the update retained, then more: with nothing taken meanwhile
            # the inbox keeps the first four and drops the update with the rest.
            await asyncio.to_thread(publish, "-l", lines=burst)
            await asyncio.to_thread(publish, "-r", "-m", "update v2")
            await asyncio.to_thread(publish, "-l", lines=burst)
            await until(lambda: inbox.dropped > 0, "the burst overflowing the inbox")
            got: list[bytes | None] = []
            async with asyncio.timeout(20):
                while b"update v2" not in got:
                    got.append((await inbox.get()).payload)
            return got

    got = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert got.count(b"update v2") == 1
