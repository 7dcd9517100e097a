"""Retained reports share the connection's in-flight window with the queue.

Home Assistant discovery publishes dozens of retained messages at every CONNACK. gmqtt
takes the packet ids of publishes and subscriptions from one pool the size of the broker's
receive maximum (Mosquitto: 20), and a publish or SUBSCRIBE finding it empty raises and
ends the connection, which sent them all again at the next one. Here 60 reports, a backlog
of telemetry and a subscription made at the same moment all go through on one connection.
"""

from __future__ import annotations

import asyncio
import queue

from helpers import Broker, Subscriber
from structlog.testing import capture_logs
from test_protocol import named, until, uplink_running

from gateway.uplink.inbox import Inbox
from gateway.uplink.queue import Message

REPORTS = 60
BACKLOG = 200


def test_a_burst_of_retained_reports_and_a_subscription_keep_the_connection(
    broker: Broker,
) -> None:
    inbox_topic = "gw/window-test/in"

    def retained_reports() -> dict[str, bytes]:
        sub = Subscriber(broker.port, "gw/window-test/report/#")
        got = {}
        try:
            while len(got) < REPORTS:
                message = sub.get(10)
                got[message.topic] = message.payload
        except queue.Empty:
            pass
        finally:
            sub.close()
        return got

    async def scenario() -> tuple[int, dict[str, bytes], list[dict[str, object]]]:
        with capture_logs() as logs:
            async with uplink_running(brokers=[broker.url]) as (uplink, messages):
                for n in range(BACKLOG):
                    messages.put(Message("gw/window-test/telemetry/t", b"%d" % n, 1, "t"))
                for n in range(REPORTS):
                    uplink.publish_retained(f"gw/window-test/report/{n}", b"r%d" % n)
                inbox = Inbox(4, 64)
                await until(lambda: uplink.connected, "the connection")
                uplink.route(inbox_topic, inbox)
                await until(lambda: messages.depth == 0, "the backlog to drain")
                reports = await asyncio.to_thread(retained_reports)
                # The subscription works: what is published there arrives.
                while not len(inbox):
                    proc = await asyncio.create_subprocess_exec(
                        "mosquitto_pub", "-p", str(broker.port), "-t", inbox_topic, "-m", "x",
                        "-q", "1")
                    await proc.wait()
                    await asyncio.sleep(0.1)
                return uplink.reconnects, reports, logs

    reconnects, reports, logs = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert reconnects == 0
    assert named(logs, "uplink.disconnected") == []
    assert named(logs, "uplink.connected")[0]["window"] == 17
    assert reports == {f"gw/window-test/report/{n}": b"r%d" % n for n in range(REPORTS)}
