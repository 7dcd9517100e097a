"""The daemon against a broker that speaks only MQTT 3.1.1: RabbitMQ 3.10's MQTT plugin.

RabbitMQ 3.10 cannot parse an MQTT 5 CONNECT and closes the connection without a
CONNACK; with ``mqtt.protocol: auto`` (the default) the uplink then connects with 3.1.1
and keeps to it for that broker. One RabbitMQ serves the module (its start takes about
15 s); the first test restarts it once.

The subscriber is ``mosquitto_sub`` speaking 3.1.1, with a persistent session (``-c``):
RabbitMQ keeps a durable queue for it, so what the broker acknowledged to the daemon
before a restart reaches the subscriber after it, and a missing ``seq`` is the
gateway's loss. A ``seq`` may arrive twice (a publish in flight at the stop is sent
again), never be missing.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, Received, Subscriber, device_config, retained, write_config
from rabbitmq import RabbitMQ
from structlog.testing import capture_logs

from gateway.config.models import MqttConfig, QueueConfig
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import Identity, Uplink

PREFIX = "gw/dev-1/"
STATUS = PREFIX + "status"


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQ]:
    broker = RabbitMQ()
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


class Collector:
    """What the subscriber got: telemetry (seq, time of the reading) in arrival order, and
    status payloads."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.telemetry: list[tuple[int, float]] = []
        self.statuses: list[Received] = []

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.telemetry]

    def taken_after(self, ts: float) -> bool:
        return any(taken > ts for _, taken in self.telemetry)

    def pump(self, until: Callable[[], bool], within_s: float, what: str) -> None:
        deadline = time.monotonic() + within_s
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}: {self.summary()}")
            try:
                message = self.sub.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if message.topic == STATUS:
                self.statuses.append(message)
            elif message.topic.startswith(PREFIX + "telemetry/"):
                payload = message.json()
                self.telemetry.append((payload["seq"], payload["readings"][0]["ts"]))

    def summary(self) -> str:
        if not self.seqs:
            return "no telemetry"
        return f"{len(self.seqs)} telemetry messages, seq {min(self.seqs)}..{max(self.seqs)}"


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [event for event in daemon.events() if event.get("event") == name]


def test_daemon_over_rabbitmq_keeps_seq_status_and_will_across_a_broker_restart(
    rabbitmq: RabbitMQ, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "gw.yaml", device_config(rabbitmq.port, tmp_path / "state"))
    sub = Subscriber(rabbitmq.port, PREFIX + "#", ("-V", "mqttv311", "-c", "-i", "rabbit-sub"))
    got = Collector(sub)
    daemon = DaemonProcess(config)
    try:
        got.pump(lambda: len(got.seqs) >= 20, 30, "telemetry")
        online = retained(rabbitmq.port, STATUS)
        assert online.retained and online.json()["state"] == "online", online

        stopped = time.time()
        rabbitmq.stop()  # SIGTERM: RabbitMQ closes the daemon's connection and goes
        time.sleep(1)  # the daemon queues, and finds the broker gone
        rabbitmq.start()  # same ports, same data
        got.pump(lambda: len(events(daemon, "uplink.connected")) >= 2, 30, "the reconnect")
        back = time.time()
        # Everything read while the broker was away, then a second of new readings.
        got.pump(lambda: got.taken_after(back + 1), 30, "telemetry after the restart")

        daemon.proc.kill()  # SIGKILL: the socket closes without DISCONNECT
        daemon.proc.wait(10)
        got.pump(
            lambda: any(s.json()["state"] == "offline" for s in got.statuses), 30, "the last will"
        )
        will = retained(rabbitmq.port, STATUS)
    finally:
        daemon.kill()
        sub.close()

    away = {seq for seq, taken in got.telemetry if stopped < taken < back}
    report = (
        f"{got.summary()}; {len(away)} read while the broker was away; "
        f"{len(got.seqs) - len(set(got.seqs))} re-deliveries"
    )
    missing = set(range(min(got.seqs), max(got.seqs) + 1)) - set(got.seqs)
    assert not missing, f"lost seq {sorted(missing)}: {report}"
    assert len(away) >= 20, report  # the outage was long enough to queue
    offline = [s.json() for s in got.statuses if s.json()["state"] == "offline"]
    assert offline[-1] == {"state": "offline", "reason": "connection lost"}, offline
    assert will.retained and will.json() == {"state": "offline", "reason": "connection lost"}

    # The protocol was chosen once and kept: no MQTT 5 attempt after the restart.
    (chosen,) = events(daemon, "uplink.protocol")
    assert chosen["broker"] == rabbitmq.url and chosen["version"] == "3.1.1", chosen
    assert chosen["refused"] == "MQTT 5: closed before CONNACK (by the broker)", chosen
    errors = [event["error"] for event in events(daemon, "uplink.disconnected")]
    assert not [error for error in errors if "MQTT 5" in error], errors
    # With 3.1.1 the window is mqtt.max_in_flight: there is no receive maximum.
    assert {event["window"] for event in events(daemon, "uplink.connected")} == {100}
    print(report)


def test_mqtt_5_forced_is_not_given_up_and_says_why(rabbitmq: RabbitMQ) -> None:
    async def attempt() -> list[dict[str, Any]]:
        queue = MessageQueue(QueueConfig())
        config = MqttConfig(
            brokers=[rabbitmq.url], protocol="5", backoff={"initial_s": 0.05, "max_s": 0.1}
        )
        uplink = Uplink(config, Identity("forced-5", "test", "boot"), queue)
        with capture_logs() as logs:
            runner = asyncio.create_task(uplink.run())
            while sum(log["event"] == "uplink.disconnected" for log in logs) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        return logs

    logs = asyncio.run(asyncio.wait_for(attempt(), 30))
    assert not [log for log in logs if log["event"] in ("uplink.protocol", "uplink.connected")]
    errors = {log["error"] for log in logs if log["event"] == "uplink.disconnected"}
    assert errors == {"ClosedBeforeConnack: MQTT 5: closed before CONNACK (by the broker)"}
