"""The daemon fails over between the nodes of a RabbitMQ cluster, at once each time.

Three RabbitMQ 3.10 nodes in one cluster (three: its MQTT plugin needs a majority to track
client ids); the gateway lists the first two, the subscriber (a persistent 3.1.1 session,
so a durable queue) is on the third, which is never killed. The node the gateway uses is
killed (SIGKILL, a crash), brought back, then the other one is killed, well within
``backoff.max_s`` of the first but after its connection held (``SETTLE_S``; one lost sooner
counts as a failed attempt of the cycle): each loss must move the uplink to the other node at
once, the second as quickly as the first (the backoff is per full cycle through the list,
not per fail-over), and back on the first node there is no fail-back when the second
returns. Nothing the nodes acknowledged is lost: every ``seq`` reaches the subscriber.

The decision is what is asserted (the wait chosen after each loss, and that the next node
took the first attempt); the fail-over times measured from the kill to the CONNACK are
printed, not asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, Subscriber, device_config, write_config
from rabbitmq import RabbitCluster, RabbitMQ
from test_rabbitmq import PREFIX, Collector, events

from gateway.uplink.failover import SETTLE_S

MAX_S = 120.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    nodes = RabbitCluster()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def fail_over(daemon: DaemonProcess, got: Collector, node: RabbitMQ, to: RabbitMQ) -> float:
    """Once the connection to ``node`` has held (``SETTLE_S``), kill ``node`` and wait for the
    daemon's connection to ``to``: seconds from the kill to its CONNACK."""
    held = at(events(daemon, "uplink.connected")[-1]) + SETTLE_S
    time.sleep(max(0.0, held - time.time()))
    connects = len(events(daemon, "uplink.connected"))
    killed = time.time()
    node.kill()

    def reconnected() -> bool:
        return len(events(daemon, "uplink.connected")) > connects

    got.pump(reconnected, 30, f"the fail-over to {to.url}")
    connected = events(daemon, "uplink.connected")[connects]
    assert connected["broker"] == to.url, connected
    return at(connected) - killed


@pytest.mark.slow
def test_each_node_lost_moves_to_the_other_at_once_and_loses_nothing(
    cluster: RabbitCluster, tmp_path: Path
) -> None:
    first, second, third = cluster.nodes
    settings = device_config(first.port, tmp_path / "state")
    settings["mqtt"] |= {"brokers": [first.url, second.url],
                         "backoff": {"initial_s": 1.0, "max_s": MAX_S}}  # fmt: skip
    config = write_config(tmp_path / "gw.yaml", settings)
    sub = Subscriber(third.port, PREFIX + "#", ("-V", "mqttv311", "-c", "-i", "cluster-sub"))
    got = Collector(sub)
    daemon = DaemonProcess(config)
    try:
        got.pump(lambda: len(got.seqs) >= 20, 60, "telemetry")
        started = time.monotonic()
        took = [fail_over(daemon, got, first, second)]
        first.start()  # it rejoins the cluster: the gateway stays on the second node
        took.append(fail_over(daemon, got, second, first))
        apart = time.monotonic() - started
        back = time.time()
        got.pump(lambda: got.taken_after(back + 1), 30, "telemetry after the fail-overs")
        second.start()
        time.sleep(1)  # no fail-back: nothing moves when the second node returns
        last = time.time()
        got.pump(lambda: got.taken_after(last + 1), 30, "telemetry after the second's return")
    finally:
        daemon.kill()
        sub.close()

    print(f"fail-over times {[round(t, 3) for t in took]} s, {apart:.1f} s apart; {got.summary()}")
    assert apart < MAX_S
    connected = [event["broker"] for event in events(daemon, "uplink.connected")]
    assert connected == [first.url, second.url, first.url], connected
    # Each loss chose no wait before the other node, and the other node took that attempt.
    waits = [(event["broker"], event["delay_s"]) for event in events(daemon, "uplink.next_broker")]
    assert waits == [(second.url, 0), (first.url, 0)], waits
    missing = set(range(min(got.seqs), max(got.seqs) + 1)) - set(got.seqs)
    assert not missing, f"lost seq {sorted(missing)}: {got.summary()}"
