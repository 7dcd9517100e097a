"""With the broker down, ten times the memory bound goes into the queue.

The uplink runs in this process and points at a port where nothing listens (it keeps
retrying all along). 50,000 telemetry messages of about 1 KB from two sensors are put
while it cannot connect; the queue's bound is 5,000 messages. Then the port opens
(a proxy to a real Mosquitto) and the queue drains to a subscriber.

- The depth never exceeds the bound and ends at it.
- The drop counters (total and per sensor) equal the drops the policy implies, and
  the subscriber receives exactly the messages that were not dropped: nothing counted
  as dropped arrives, nothing that arrives was counted.
- RSS, sampled during the burst, stays within the bound's bytes plus 10 MB.
"""

from __future__ import annotations

import asyncio
import gc
import queue as stdqueue
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import Broker, Subscriber, free_port
from proxy import Proxy

from gateway.config.models import MqttConfig, QueueConfig
from gateway.pipeline import codec
from gateway.uplink.queue import Message, MessageQueue, QueueStats
from gateway.uplink.supervisor import Identity, Uplink

BOUND = 5_000
PRODUCED = 10 * BOUND
SENSORS = ("inlet", "outlet")
PREFIX = "gw/bound/telemetry/"
SLACK = 10 * 1024 * 1024


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# One reading with 80 quantities: about 1 KB of JSON per message.
READING = {f"q{i:02d}": 0.25 * i for i in range(80)}


def telemetry(n: int) -> Message:
    """The n-th message overall: sensors alternate, each with its own seq."""
    sensor = SENSORS[n % 2]
    payload = codec.telemetry("bound", sensor, n // 2, [{"ts": 1.7e9 + n, **READING}])
    return Message(PREFIX + sensor, payload, 1, sensor)


def wait_subscribed(sub: Subscriber, port: int) -> None:
    """A subscription is live once a probe published now comes back."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", PREFIX + "probe",
             "-m", "{}"],
            check=True,
        )
        try:
            if sub.until(lambda m: m.topic == PREFIX + "probe", timeout=0.5):
                return
        except (TimeoutError, stdqueue.Empty):
            continue
    raise AssertionError("the subscriber never got its probe")


@dataclass
class Burst:
    stats: QueueStats
    max_depth: int
    rss_before: int
    peak_rss: int
    bound_bytes: int  # the queue's own byte count at its bound

    @property
    def rss_growth(self) -> int:
        return self.peak_rss - self.rss_before


async def burst_then_drain(policy: str, proxy: Proxy, broker: Broker) -> tuple[Burst, Subscriber]:
    queue = MessageQueue(QueueConfig(memory_max_messages=BOUND, drop_policy=policy))
    config = MqttConfig(
        brokers=[f"mqtt://127.0.0.1:{proxy.port}"],
        backoff={"initial_s": 0.05, "max_s": 0.2},
        connect_timeout_s=2,
    )
    uplink = Uplink(config, Identity("bound", "test", "boot"), queue)
    task = asyncio.create_task(uplink.run())
    try:
        while uplink.reconnects < 3:  # noqa: ASYNC110 (it is trying, and failing)
            await asyncio.sleep(0.02)
        assert not uplink.connected
        gc.collect()
        rss_before = rss_bytes()
        peak_rss, max_depth, bound_bytes = rss_before, 0, 0
        for n in range(PRODUCED):
            queue.put(telemetry(n))
            max_depth = max(max_depth, queue.depth)
            if n % 1000 == 999:
                bound_bytes = max(bound_bytes, queue.stats().bytes)
                peak_rss = max(peak_rss, rss_bytes())
                await asyncio.sleep(0)  # the uplink keeps retrying meanwhile
        gc.collect()
        burst = Burst(queue.stats(), max_depth, rss_before, max(peak_rss, rss_bytes()),
                      bound_bytes)
        assert not uplink.connected

        await asyncio.to_thread(broker.start)
        sub = await asyncio.to_thread(Subscriber, broker.port, PREFIX + "#")
        try:
            await asyncio.to_thread(wait_subscribed, sub, broker.port)
            await asyncio.to_thread(proxy.start)  # the port opens: the queue drains
            async with asyncio.timeout(60):
                while queue.depth:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except BaseException:
            sub.close()
            raise
        return burst, sub
    finally:
        await uplink.shutdown(1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_ten_times_the_bound_with_the_broker_down(policy: str, tmp_path: Path) -> None:
    broker = Broker(tmp_path)  # its port stays closed until the burst is over
    proxy = Proxy(broker.port, port=free_port())  # what the uplink points at
    try:
        burst, sub = asyncio.run(burst_then_drain(policy, proxy, broker))
        try:
            received: list[tuple[str, int]] = []
            while len(received) < BOUND:
                message = sub.get(timeout=10)
                if message.topic != PREFIX + "probe":
                    payload = message.json()
                    received.append((payload["sensor"], payload["seq"]))
            with pytest.raises(stdqueue.Empty):
                sub.get(timeout=0.5)  # and nothing more
        finally:
            sub.close()
    finally:
        proxy.stop()
        broker.stop()

    kept = range(PRODUCED - BOUND, PRODUCED) if policy == "oldest" else range(BOUND)
    dropped = [n for n in range(PRODUCED) if n not in kept]
    report = (
        f"\npolicy={policy} produced={PRODUCED} bound={BOUND} max_depth={burst.max_depth} "
        f"stats={burst.stats}\nreceived={len(received)} unique={len(set(received))} "
        f"rss before={burst.rss_before // 1024}KiB peak={burst.peak_rss // 1024}KiB "
        f"growth={burst.rss_growth // 1024}KiB "
        f"(allowed: queue bytes at bound {burst.bound_bytes // 1024}KiB + 10MiB)"
    )
    print(report)
    assert burst.max_depth == BOUND, report
    assert burst.stats.depth == BOUND, report
    assert burst.stats.dropped == len(dropped), report
    assert burst.stats.dropped_by_sensor == {
        s: sum(1 for n in dropped if SENSORS[n % 2] == s) for s in SENSORS
    }, report
    assert sorted(received) == sorted((SENSORS[n % 2], n // 2) for n in kept), report
    assert burst.rss_growth < burst.bound_bytes + SLACK, report
