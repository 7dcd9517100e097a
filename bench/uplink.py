"""Uplink throughput, end to end, against a real Mosquitto and a real subscriber.

    python bench/uplink.py [--messages 20000] [--backlog 10000] [--paced 1000] [--rate 100]

Starts its own Mosquitto on a free loopback port (stopped at the end) and measures, in
one run:

1. a raw gmqtt publish loop, QoS 1, with a simple in-flight window of its own (the
   broker's receive maximum - 1, as the uplink uses): the baseline;
2. end to end: readings pushed into ``Pipeline.push`` (standing in for the sampler:
   stages, seq numbers, encoding) -> MessageQueue -> Uplink (gmqtt) -> Mosquitto ->
   ``mosquitto_sub``; target: at least 0.8x the raw loop;
3. the drain of a backlog of ``--backlog`` messages queued while disconnected, from
   CONNACK to the last message at the subscriber, unpaced;
4. the same with ``mqtt.max_publish_rate`` = ``--rate`` for ``--paced`` messages;
   target: within 5 % of the rate.

Every rate is messages received by the subscriber divided by the time from the first
message handed over (publish, push or CONNACK) to the last one received.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The broker starter the tests use too (standard library only, no pytest).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import mosquitto
from gmqtt import Client
from gmqtt.storage import PersistentStorage

from gateway.config.models import MqttConfig, QueueConfig
from gateway.config.stages import Calibrate
from gateway.pipeline import codec
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.seq import SeqStore
from gateway.service import log as logsetup
from gateway.uplink.queue import Message, MessageQueue
from gateway.uplink.supervisor import Identity, Uplink

DEVICE = "bench"


# -- the broker and the subscriber ---------------------------------------------------



class Counter:
    """``mosquitto_sub`` (QoS 1) on ``prefix/+``; counts messages and times the last.

    Its output (one topic per line) is read in large chunks, so counting costs the
    measured event loop next to nothing.
    """

    def __init__(self, port: int, prefix: str) -> None:
        topic = prefix + "/+"
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1",
             "-F", "%t"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        self.count = 0
        self.last_at = 0.0
        self._probe = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        probe = prefix + "/probe"
        deadline = time.monotonic() + 10
        while not self._probe.wait(0.2):
            if time.monotonic() > deadline:
                raise RuntimeError("the subscriber never got its probe")
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", probe, "-m", "x"],
                check=True,
            )

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        tail = b""
        while chunk := os.read(fd, 1 << 16):
            at = time.monotonic()
            lines = tail + chunk
            end = lines.rfind(b"\n") + 1
            lines, tail = lines[:end], lines[end:]
            probes = lines.count(b"/probe\n")
            if probes:
                self._probe.set()
            counted = lines.count(b"\n") - probes
            if counted:
                self.count += counted
                self.last_at = at

    async def wait_for(self, count: int, within_s: float = 120.0) -> float:
        """Until ``count`` messages arrived; returns when the last one did."""
        deadline = time.monotonic() + within_s
        while self.count < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"subscriber got {self.count} of {count} messages")
            await asyncio.sleep(0.005)
        return self.last_at

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def payloads(count: int, sensor: str) -> list[bytes]:
    reading = {"ts": time.time(), "temperature_c": 21.53, "humidity_rh": 45.2}
    return [codec.telemetry(DEVICE, sensor, n, [reading]) for n in range(count)]


# -- 1. raw gmqtt ----------------------------------------------------------------------


class Window(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged publishes, with a wake-up on each PUBACK."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = asyncio.Event()

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self.acked.set()

    @property
    def pending(self) -> int:
        return len(self._messages)


async def raw_loop(port: int, count: int) -> Result:
    prefix = f"bench/raw/{time.monotonic_ns()}"
    sub = Counter(port, prefix)
    window = Window()
    client = Client("bench-raw", persistent_storage=window)
    try:
        await client.connect("127.0.0.1", port)
        values = client._package_handler._connack_properties.get("receive_maximum")
        size = min(100, (values[0] if values else 65535) - 1)
        data = payloads(count, "raw")
        started = time.monotonic()
        for payload in data:
            while window.pending >= size:
                window.acked.clear()
                await window.acked.wait()
            client.publish(prefix + "/t", payload, qos=1)
        last = await sub.wait_for(count)
        return Result("raw gmqtt publish loop", count, last - started, f"QoS 1, window {size}")
    finally:
        await client.disconnect()
        sub.close()


# -- 2.-4. the gateway -----------------------------------------------------------------


def uplink_for(port: int, queue: MessageQueue, rate: float | None = None) -> Uplink:
    config = MqttConfig(
        brokers=[f"mqtt://127.0.0.1:{port}"],
        topic_prefix="bench",
        max_publish_rate=rate,
        backoff={"initial_s": 0.05, "max_s": 0.2},
    )
    return Uplink(config, Identity(DEVICE, "bench", "boot"), queue)


async def offload(fn: Any) -> None:
    await asyncio.get_running_loop().run_in_executor(None, fn)


async def end_to_end(port: int, count: int, state_dir: Path) -> Result:
    sensor = "e2e"
    sub = Counter(port, f"bench/{DEVICE}/telemetry")
    queue = MessageQueue(QueueConfig(memory_max_messages=count + 10))
    uplink = uplink_for(port, queue)
    seqs = SeqStore(state_dir / "seq.json", offload)
    seqs.load()
    steps = build_steps([Calibrate(stage="calibrate", offset={"temperature_c": -0.4})])
    pipeline = Pipeline(DEVICE, sensor, steps, f"bench/{DEVICE}/telemetry/{sensor}", 1, seqs,
                        queue)  # fmt: skip
    task = asyncio.create_task(uplink.run())
    try:
        while not uplink.connected:  # noqa: ASYNC110 (polling the uplink's state)
            await asyncio.sleep(0.01)
        started = time.monotonic()
        for n in range(count):
            await pipeline.push(time.time(), {"temperature_c": 21.53 + n % 7, "humidity_rh": 45.2})
            if n % 64 == 63:
                await asyncio.sleep(0)  # a sampler yields between readings
        last = await sub.wait_for(count)
        dropped = queue.stats().dropped
        return Result("end to end: Pipeline.push > queue > uplink", count, last - started,
                      f"QoS 1, dropped {dropped}")  # fmt: skip
    finally:
        await uplink.shutdown(2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sub.close()


async def backlog(port: int, count: int, rate: float | None) -> Result:
    sensor = f"backlog{int(rate or 0)}"
    topic = f"bench/{DEVICE}/telemetry/{sensor}"
    sub = Counter(port, f"bench/{DEVICE}/telemetry")
    queue = MessageQueue(QueueConfig(memory_max_messages=count + 10))
    for payload in payloads(count, sensor):
        queue.put(Message(topic, payload, 1, sensor))
    uplink = uplink_for(port, queue, rate)
    task = asyncio.create_task(uplink.run())
    try:
        while not uplink.connected:  # noqa: ASYNC110 (draining starts at CONNACK)
            await asyncio.sleep(0)
        started = time.monotonic()
        last = await sub.wait_for(count, within_s=count / (rate or 1000) * 3 + 30)
        name = f"backlog drain, paced at {rate:g}/s" if rate else "backlog drain, unpaced"
        return Result(name, count, last - started, "after (re)connect")
    finally:
        await uplink.shutdown(2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sub.close()


# -- the table -------------------------------------------------------------------------


def median(results: list[Result]) -> Result:
    """The median run, its note saying the spread over all of them."""
    ordered = sorted(results, key=lambda r: r.rate)
    middle = ordered[len(ordered) // 2]
    spread = f"median of {len(ordered)}: {ordered[0].rate:.0f}..{ordered[-1].rate:.0f} msg/s"
    return Result(middle.name, middle.messages, middle.seconds, f"{middle.note}; {spread}")


def table(raw: Result, e2e: Result, drain: Result, paced: Result, rate: float) -> str:
    rows = [
        (raw, "1.00 (baseline)"),
        (e2e, f"{e2e.rate / raw.rate:.2f} of raw  [target >= 0.80: "
              f"{'met' if e2e.rate >= 0.8 * raw.rate else 'MISSED'}]"),
        (drain, f"{drain.rate / raw.rate:.2f} of raw"),
        (paced, f"{paced.rate / rate:.3f} of {rate:g}/s  [target within 5 %: "
                f"{'met' if abs(paced.rate / rate - 1) <= 0.05 else 'MISSED'}]"),
    ]  # fmt: skip
    width = max(len(r.name) for r, _ in rows)
    ratio_width = max(len(ratio) for _, ratio in rows)
    lines = [
        f"{'measurement':<{width}}  {'messages':>8}  {'seconds':>7}  {'msg/s':>8}  "
        f"{'ratio':<{ratio_width}}  notes",
    ]
    lines.append("-" * (len(lines[0]) + 40))
    for result, ratio in rows:
        lines.append(
            f"{result.name:<{width}}  {result.messages:>8}  {result.seconds:>7.2f}  "
            f"{result.rate:>8.0f}  {ratio:<{ratio_width}}  {result.note}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="raw and end-to-end runs each")
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--paced", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args(argv)
    logsetup.configure("warning", "console", stream=sys.stderr)
    raws: list[Result] = []
    e2es: list[Result] = []
    drains: list[Result] = []
    with (tempfile.TemporaryDirectory(prefix="bench-uplink-") as tmp,
          mosquitto.running(Path(tmp)) as broker):
        port = broker.port
        print(f"mosquitto on 127.0.0.1:{port}; python {sys.version.split()[0]}; "
              f"{args.rounds} rounds", flush=True)  # fmt: skip
        for round_ in range(args.rounds):
            # Alternate which goes first, so neither always gets the warmer broker.
            pair = [
                lambda: raws.append(asyncio.run(raw_loop(port, args.messages))),
                lambda: e2es.append(asyncio.run(end_to_end(port, args.messages, Path(tmp)))),
            ]
            for run in pair if round_ % 2 == 0 else pair[::-1]:
                run()
            drains.append(asyncio.run(backlog(port, args.backlog, None)))
        paced = asyncio.run(backlog(port, args.paced, args.rate))
    print(table(median(raws), median(e2es), median(drains), paced, args.rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
