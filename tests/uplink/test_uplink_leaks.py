"""500 lost connections leave nothing behind.

The uplink runs in this process against a real Mosquitto, through a TCP proxy
(``tests/proxy.py``) that breaks its connection 500 times: 497 cuts (both sides
aborted, seen at once) and 3 blackholes (nothing forwarded, sockets kept open, so only
the uplink's own liveness watch can notice, within 1.5 keepalives of 1 s), one in the
warm-up and at least one in each measured stretch. A blackhole costs 1.5 s of waiting and
takes the same way out of a connection as a cut once noticed, so more of them would add
time, not coverage. A trickle of
telemetry is published all along, and a subscriber on the broker checks that every
message arrived.

Figures are taken at quiet moments (producer paused, queue drained, connected), after a
warm-up of 20 losses (lazy imports, caches, free lists):

- tasks and open fds: at loss 20 and after loss 500; they must be equal.
- RSS: at loss 20 and at loss 260, with tracemalloc off; growth under 2 MB. (With
  tracemalloc on, its own hash tables grow and fragment the heap by about as much as
  the whole budget, which says nothing about the uplink.)
- traced memory: tracemalloc starts at loss 260, baseline at 280 after its own warm-up,
  measured after loss 500; growth under 256 KiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from helpers import Broker
from proxy import Proxy

from gateway.config.models import MqttConfig, QueueConfig
from gateway.pipeline import codec
from gateway.service import log as logsetup
from gateway.uplink.queue import Message, MessageQueue
from gateway.uplink.supervisor import Identity, Uplink

LOSSES = 500
WARMUP = 20
RSS_UNTIL = 260  # losses 20..260 measure RSS; 280..500 traced memory
TRACE_FROM = RSS_UNTIL + WARMUP
BLACKHOLES = (5, 140, 380)  # one in the warm-up, then one in each measured stretch
TRICKLE_S = 0.02
TOPIC = "gw/leaky/telemetry/trickle"

MAX_RSS_GROWTH = 2 * 1024 * 1024
MAX_TRACED_GROWTH = 256 * 1024


@contextlib.contextmanager
def daemon_logging(path: Path) -> Iterator[None]:
    """Log as the daemon does (structlog JSON lines, gmqtt forwarded into it), to a file.

    This also keeps pytest's log capture, which holds on to every record and its
    traceback, out of the measurement.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with path.open("w") as out:
        logsetup.configure("info", "json", stream=out)
        try:
            yield
        finally:
            structlog.reset_defaults()
            root.handlers[:] = handlers
            root.setLevel(level)


class FileSubscriber:
    """``mosquitto_sub`` writing to a file, so what it receives costs this process nothing."""

    def __init__(self, port: int, topic: str, path: Path) -> None:
        self.port, self.topic, self.path = port, topic, path
        with path.open("wb") as out:
            self.proc = subprocess.Popen(
                ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1"],
                stdout=out,
            )
        # Subscribed once a message published now comes back.
        deadline = time.monotonic() + 10
        while b"probe" not in path.read_bytes():
            assert time.monotonic() < deadline, "subscriber never got its probe"
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", "probe"],
                check=True,
            )
            time.sleep(0.1)

    def seqs(self) -> list[int]:
        lines = self.path.read_bytes().splitlines()
        return [json.loads(line)["seq"] for line in lines if line != b"probe"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@dataclass(frozen=True)
class Figures:
    tasks: int
    fds: int
    rss: int  # without tracemalloc's own memory: the instrument is not the patient
    traced: int
    tracing_overhead: int

    def __str__(self) -> str:
        return (
            f"tasks={self.tasks} fds={self.fds} rss={self.rss / 1024:.0f}KiB "
            f"traced={self.traced / 1024:.1f}KiB "
            f"(tracemalloc itself: {self.tracing_overhead / 1024:.0f}KiB)"
        )


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


async def until(predicate: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not predicate():  # noqa: ASYNC110 (polling state we do not own)
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class Trickle:
    """Puts one telemetry message every TRICKLE_S, unless paused."""

    def __init__(self, queue: MessageQueue) -> None:
        self.queue = queue
        self.sent = 0
        self.running = asyncio.Event()
        self.running.set()

    async def run(self) -> None:
        while True:
            await self.running.wait()
            payload = codec.telemetry("leaky", "trickle", self.sent, [{"ts": time.time()}])
            self.queue.put(Message(TOPIC, payload, 1, "trickle"))
            self.sent += 1
            await asyncio.sleep(TRICKLE_S)


async def quiet_figures(uplink: Uplink, queue: MessageQueue, trickle: Trickle) -> Figures:
    trickle.running.clear()
    await asyncio.sleep(TRICKLE_S * 2)
    await until(lambda: uplink.connected and queue.depth == 0, "a drained queue")
    gc.collect()
    overhead = tracemalloc.get_tracemalloc_memory()
    figures = Figures(
        tasks=len(asyncio.all_tasks()),
        fds=open_fds(),
        rss=rss_bytes() - overhead,
        traced=tracemalloc.get_traced_memory()[0],
        tracing_overhead=overhead,
    )
    trickle.running.set()
    return figures


async def lose_connections(
    uplink: Uplink, proxy: Proxy, start: int, stop: int, blackholes: list[int]
) -> None:
    for loss in range(start, stop):
        accepted = proxy.accepted
        reconnects = uplink.reconnects
        if loss in BLACKHOLES:
            assert proxy.blackhole() >= 1
            blackholes.append(loss)
        else:
            assert proxy.cut() >= 1
        await until(lambda r=reconnects: uplink.reconnects > r, f"loss {loss} to be noticed")
        await until(
            lambda a=accepted: uplink.connected and proxy.accepted > a,
            f"reconnection after loss {loss}",
        )


@dataclass
class Run:
    start: Figures
    rss_end: Figures
    traced_start: Figures
    end: Figures
    uplink: Uplink
    proxy: Proxy
    sent: int
    blackholes: list[int]

    def report(self) -> str:
        return (
            f"\nlosses: {self.uplink.reconnects} seen by the uplink "
            f"({len(self.blackholes)} blackholes), {self.proxy.accepted} connections through "
            f"the proxy, {self.sent} messages"
            f"\nat loss {WARMUP}:   {self.start}\nat loss {RSS_UNTIL}:  {self.rss_end}"
            f"\nat loss {TRACE_FROM}:  {self.traced_start}\nat loss {LOSSES}:  {self.end}"
            f"\ntasks {self.start.tasks} -> {self.end.tasks}, fds {self.start.fds} -> "
            f"{self.end.fds}, rss growth {(self.rss_end.rss - self.start.rss) / 1024:.0f}KiB "
            f"over {RSS_UNTIL - WARMUP} losses, traced growth "
            f"{(self.end.traced - self.traced_start.traced) / 1024:.1f}KiB over "
            f"{LOSSES - TRACE_FROM} losses"
        )


async def run_losses(broker: Broker) -> Run:
    proxy = Proxy(broker.port).start()
    config = MqttConfig(
        brokers=[f"mqtt://127.0.0.1:{proxy.port}"],
        keepalive_s=1,
        # Short: a loss is cut and noticed in milliseconds, and the backoff's waiting would
        # be most of the run.
        backoff={"initial_s": 0.001, "max_s": 0.005},
        connect_timeout_s=5,
    )
    queue = MessageQueue(QueueConfig())
    uplink = Uplink(config, Identity("leaky", "test", "boot"), queue)
    trickle = Trickle(queue)
    blackholes: list[int] = []

    async def lose(start: int, stop: int) -> Figures:
        await lose_connections(uplink, proxy, start, stop, blackholes)
        return await quiet_figures(uplink, queue, trickle)

    try:
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(uplink.run())
            producer = tg.create_task(trickle.run())
            await until(lambda: uplink.connected, "the first connection")
            start = await lose(0, WARMUP)
            rss_end = await lose(WARMUP, RSS_UNTIL)
            tracemalloc.start()
            traced_start = await lose(RSS_UNTIL, TRACE_FROM)
            end = await lose(TRACE_FROM, LOSSES)
            producer.cancel()
            await until(lambda: queue.depth == 0, "the last messages")
            await uplink.shutdown(2.0)
            await runner
        return Run(start, rss_end, traced_start, end, uplink, proxy, trickle.sent, blackholes)
    finally:
        tracemalloc.stop()
        proxy.stop()


def test_500_connection_losses_leave_no_tasks_fds_or_memory(
    broker: Broker, tmp_path: Path
) -> None:
    sub = FileSubscriber(broker.port, TOPIC, tmp_path / "received")
    try:
        with daemon_logging(tmp_path / "uplink.log"):
            run = asyncio.run(run_losses(broker))
        deadline = time.monotonic() + 10
        while len(set(sub.seqs())) < run.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        seqs = set(sub.seqs())
    finally:
        sub.close()

    report = run.report()
    print(report)
    assert run.blackholes == list(BLACKHOLES)
    assert run.uplink.reconnects >= LOSSES, report
    assert run.proxy.accepted >= LOSSES + 1, report
    assert seqs == set(range(run.sent)), report
    assert run.end.tasks == run.start.tasks, report
    assert run.end.fds == run.start.fds, report
    assert run.rss_end.rss - run.start.rss < MAX_RSS_GROWTH, report
    assert run.end.traced - run.traced_start.traced < MAX_TRACED_GROWTH, report
