"""Chaos: 200 msg/s for 16 s while the broker is stopped and restarted 4 times.

In this process: a MessageQueue (memory tier plus the SQLite spill tier, so outages
exercise spilling, rewinds and reloads) and an Uplink, fed by a producer that puts
200 telemetry messages per second from four sensors, each with its own ``seq``
(``gateway.pipeline.codec.telemetry``). Four times the broker is stopped, stays down for 0.3
to 1.5 s, and comes back on the same port: every other stop at a random moment, the next
one as soon as the uplink has reconnected and is draining the backlog, with publishes
in flight (disk rows and memory messages alike). At the end every (sensor, seq) must
have reached the subscriber at least once; duplicates are counted and reported.

Two pairs of stops, each kind twice: a loss must hold at every stop, so further stops
would repeat the same two cases at 6 s each (the queue's rewind and resend are tested
in process in ``test_queue.py``).

Why the broker is stopped with SIGTERM, with persistence, and not SIGKILL: the test
must blame only the gateway for a lost message. The subscriber is a persistent
session (``mosquitto_sub -c -i ID -q 1``) and Mosquitto runs with ``persistence true``
and no limit on queued messages, so whatever the broker has acknowledged to the
gateway is kept for the subscriber across restarts, in flight or queued, and
delivered when it reconnects. Mosquitto writes that state on SIGTERM only; after a
SIGKILL it would come back without the messages it had acknowledged but not yet
forwarded, and the test would blame the gateway for the broker's loss. For the
gateway nothing is graceful about it: Mosquitto leaves at once, without reading what
is still in its socket buffers or acknowledging it, and closes the connection under
the gateway's in-flight publishes, which must then be resent on the next connection.
How many were in flight at each stop is reported.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import Broker

from gateway.config.models import MqttConfig, QueueConfig
from gateway.pipeline import codec
from gateway.uplink.queue import Message, MessageQueue
from gateway.uplink.supervisor import Identity, Uplink

RATE = 200  # messages per second, all sensors together
DURATION_S = 16.0
RESTARTS = 4
SENSORS = ("s0", "s1", "s2", "s3")
PREFIX = "gw/chaos/telemetry/"
SUBSCRIBER_ID = "chaos-subscriber"


class PersistentBroker(Broker):
    """Mosquitto that keeps sessions and their queued messages across a SIGTERM restart."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Mosquitto started as root writes its database as this user instead.
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "max_queued_messages 0\n"  # no limit: the broker drops nothing for the subscriber
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )


class PersistentSubscriber:
    """``mosquitto_sub`` with a persistent session, writing payloads to a file.

    It reconnects by itself after a broker restart, and the broker keeps what
    arrives meanwhile for it.
    """

    def __init__(self, port: int, path: Path) -> None:
        self.path = path
        with path.open("wb") as out:
            self.proc = subprocess.Popen(
                ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", PREFIX + "#",
                 "-q", "1", "-c", "-i", SUBSCRIBER_ID],
                stdout=out,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while b"probe" not in path.read_bytes():
            assert time.monotonic() < deadline, "the subscriber never got its probe"
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", PREFIX + "probe",
                 "-q", "1", "-m", "probe"],
                check=True,
            )  # fmt: skip
            time.sleep(0.1)

    def received(self) -> list[tuple[str, int]]:
        out = []
        for line in self.path.read_bytes().splitlines():
            if line == b"probe":
                continue
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written
            out.append((payload["sensor"], payload["seq"]))
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@dataclass
class Chaos:
    sent: list[tuple[str, int]] = field(default_factory=list)
    stops: list[dict[str, float]] = field(default_factory=list)
    reconnects: int = 0
    dropped: int = -1
    spilled: int = 0


async def produce(queue: MessageQueue, chaos: Chaos) -> None:
    """RATE messages per second for DURATION_S, on an absolute schedule."""
    seqs = Counter[str]()
    start = time.monotonic()
    for n in range(int(RATE * DURATION_S)):
        due = start + n / RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sensor = SENSORS[n % len(SENSORS)]
        seq = seqs[sensor]
        seqs[sensor] += 1
        reading = {"ts": time.time(), "temperature_c": 21.5}
        payload = codec.telemetry("chaos", sensor, seq, [reading])
        queue.put(Message(PREFIX + sensor, payload, 1, sensor))
        chaos.sent.append((sensor, seq))


async def restart_broker(
    broker: Broker, uplink: Uplink, queue: MessageQueue, chaos: Chaos, seed: int
) -> None:
    """RESTARTS stops in pairs: one at a random time, the next as soon as the uplink is
    back and draining the backlog of the first, with publishes in flight."""
    rng = random.Random(seed)
    period = (DURATION_S - 6) / (RESTARTS // 2)
    start = time.monotonic()
    for k in range(RESTARTS):
        if k % 2 == 0:
            due = start + 2 + (k // 2) * period + rng.uniform(0, 3)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        else:
            deadline = time.monotonic() + 5
            while not (uplink.connected and queue.stats().in_flight >= 5):
                if time.monotonic() > deadline:
                    break  # stop anyway
                await asyncio.sleep(0.001)
        in_flight = queue.stats().in_flight
        await asyncio.to_thread(broker.stop)  # SIGTERM, see the module docstring
        down = rng.uniform(0.3, 1.5)
        await asyncio.sleep(down)
        await asyncio.to_thread(broker.start)
        chaos.stops.append({"at_s": round(time.monotonic() - start, 1), "down_s": round(down, 2),
                            "in_flight": in_flight})  # fmt: skip


async def run_chaos(broker: Broker, state_dir: Path, sub: PersistentSubscriber, seed: int) -> Chaos:
    queue = MessageQueue(
        QueueConfig(disk_max_bytes=50_000_000, spill_after_s=0.2), state_dir
    )
    config = MqttConfig(
        brokers=[broker.url],
        keepalive_s=5,
        backoff={"initial_s": 0.2, "max_s": 1.0},
        connect_timeout_s=5,
    )
    uplink = Uplink(config, Identity("chaos", "test", "boot"), queue)
    chaos = Chaos()
    await queue.open()
    try:
        async with asyncio.TaskGroup() as tg:
            spiller = tg.create_task(queue.run())
            runner = tg.create_task(uplink.run())
            chaotic = tg.create_task(restart_broker(broker, uplink, queue, chaos, seed))
            await produce(queue, chaos)
            await chaotic
            expected = set(chaos.sent)
            deadline = time.monotonic() + 30
            while queue.depth or not expected <= set(sub.received()):
                assert time.monotonic() < deadline, "the backlog did not drain in 30 s"
                await asyncio.sleep(0.25)
            await uplink.shutdown(2)
            await runner
            spiller.cancel()
    finally:
        await queue.close()
    stats = queue.stats()
    chaos.reconnects, chaos.dropped, chaos.spilled = uplink.reconnects, stats.dropped, stats.spilled
    return chaos


@pytest.mark.slow
def test_every_seq_arrives_through_broker_restarts(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    broker = PersistentBroker(tmp_path)
    broker.start()
    sub: PersistentSubscriber | None = None
    try:
        sub = PersistentSubscriber(broker.port, tmp_path / "received")
        started = time.monotonic()
        chaos = asyncio.run(run_chaos(broker, tmp_path / "state", sub, seed))
        elapsed = time.monotonic() - started
        received = sub.received()
    finally:
        if sub is not None:
            sub.close()
        broker.stop()

    unique = set(received)
    missing = sorted(set(chaos.sent) - unique)
    duplicates = Counter(received) - Counter(unique)
    report = (
        f"\nseed={seed} elapsed={elapsed:.1f}s sent={len(chaos.sent)} "
        f"received={len(received)} unique={len(unique)} duplicates={duplicates.total()} "
        f"missing={len(missing)} reconnects={chaos.reconnects} spilled={chaos.spilled} "
        f"dropped={chaos.dropped}"
        f"\nstops: {chaos.stops}"
        f"\nin flight at the stops: {sum(s['in_flight'] for s in chaos.stops)}"
        f"\nduplicated (sensor, seq) x extra copies, first 20: "
        f"{sorted(duplicates.items())[:20]}"
        f"\nmissing, first 20: {missing[:20]}"
    )
    print(report)
    assert len(chaos.stops) == RESTARTS, report
    assert chaos.reconnects >= RESTARTS, report
    assert len(chaos.sent) == RATE * DURATION_S, report
    assert chaos.dropped == 0, report
    assert not missing, report
    assert unique <= set(chaos.sent), report  # nothing invented
