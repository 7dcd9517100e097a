"""Messages queued while the broker is away survive ``kill -9`` of the daemon.

The daemon (a real process, two emulated sensors at 20 Hz, the disk tier on with
``spill_after_s`` 0.3) reaches a real Mosquitto through a TCP proxy. "Broker down" is
the proxy cutting the connection and refusing new ones, so the test's subscriber,
connected straight to the broker, sees everything that gets through and the broker
never loses what it has acknowledged.

While the broker is down, the test reads ``queue.db`` (as any SQLite reader may, the
file is in WAL mode) and then kills the daemon with SIGKILL. After a restart with the
broker back, every message that was on disk must arrive, and for each sensor:

- first arrivals come in ascending ``seq`` (a re-delivery of a seq already seen, from
  an in-flight message whose PUBACK was lost in the cut, is counted, not an error);
- there is no gap from the first seq received through the highest seq that was on
  disk at the kill: the outage is covered completely. (What was still in memory at the
  kill, under ``spill_after_s`` old, is lost by design and not counted as dropped; the
  seq numbers then jump to the next reserved block.)
"""

from __future__ import annotations

import json
import queue
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from helpers import Broker, DaemonProcess, Subscriber, device_config, write_config
from proxy import Proxy

SENSORS = ("room", "rack")
TOPIC = "gw/dev-1/telemetry/"


class Arrivals:
    """Everything the subscriber got, per sensor, in arrival order."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.seqs: dict[str, list[int]] = defaultdict(list)

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
            if message.topic.startswith(TOPIC):
                payload = message.json()
                self.seqs[payload["sensor"]].append(payload["seq"])

    def drain(self, for_s: float) -> None:
        deadline = time.monotonic() + for_s
        self.pump(lambda: time.monotonic() >= deadline, for_s + 1, "the drain")

    def summary(self) -> str:
        return ", ".join(
            f"{s}: {len(v)} msgs, seq {min(v)}..{max(v)}" for s, v in self.seqs.items() if v
        )


def on_disk(db: Path) -> dict[str, list[int]]:
    """The seqs in the daemon's queue file right now, per sensor."""
    seqs: dict[str, list[int]] = defaultdict(list)
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        for (payload,) in reader.execute("SELECT payload FROM messages ORDER BY key"):
            message = json.loads(payload)
            seqs[message["sensor"]].append(message["seq"])
    finally:
        reader.close()
    return seqs


def test_queued_messages_survive_kill_9_and_arrive_in_order(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    proxy = Proxy(broker.port).start()
    settings = device_config(proxy.port, state)
    settings["sensors"] = [
        {"name": "room", "driver": "sht3x", "bus": "sim", "address": 0x44, "interval_s": 0.05},
        {"name": "rack", "driver": "sht3x", "bus": "sim", "address": 0x45, "interval_s": 0.05},
    ]
    settings["queue"] = {"disk_max_bytes": 10_000_000, "spill_after_s": 0.3}
    config = write_config(tmp_path / "gw.yaml", settings)
    sub = Subscriber(broker.port, TOPIC + "#")
    arrivals = Arrivals(sub)
    daemon = DaemonProcess(config)
    second: DaemonProcess | None = None
    try:
        arrivals.pump(
            lambda: all(len(arrivals.seqs[s]) >= 10 for s in SENSORS), 20, "first telemetry"
        )

        proxy.refuse = True  # the broker goes away for the daemon
        proxy.cut()
        # The daemon queues, and spills: until ten of each sensor are on disk.
        arrivals.pump(lambda: all(len(on_disk(state / "queue.db")[s]) >= 10 for s in SENSORS),
                      20, "the spill")
        assert daemon.proc.poll() is None, daemon.log()
        disk = on_disk(state / "queue.db")
        daemon.kill()  # SIGKILL: no flush, no close
        assert all(len(disk[s]) >= 10 for s in SENSORS), dict(disk)
        last_on_disk = {s: max(disk[s]) for s in SENSORS}
        before_restart = {s: len(arrivals.seqs[s]) for s in SENSORS}

        proxy.refuse = False  # the broker is back
        second = DaemonProcess(config)
        arrivals.pump(
            lambda: all(max(arrivals.seqs[s]) > last_on_disk[s] for s in SENSORS),
            20,
            "the queued messages and new ones after the restart",
        )
        arrivals.drain(0.5)
        assert second.stop() == 0
    finally:
        daemon.kill()
        if second is not None:
            second.kill()
        sub.close()
        proxy.stop()

    recovered = [e for e in second.events() if e.get("event") == "queue.recovered"]
    report = (
        f"\nreceived: {arrivals.summary()}\non disk at the kill: "
        + ", ".join(f"{s}: {len(disk[s])} msgs, seq {min(disk[s])}..{max(disk[s])}"
                    for s in SENSORS)
        + f"\nreceived before the restart: {before_restart}\nrecovered: {recovered}"
    )
    for sensor in SENSORS:
        seqs = arrivals.seqs[sensor]
        seen: set[int] = set()
        first_arrivals = []
        for seq in seqs:
            if seq not in seen:
                seen.add(seq)
                first_arrivals.append(seq)
        duplicates = len(seqs) - len(first_arrivals)
        report += f"\n{sensor}: {duplicates} re-deliveries"
        assert first_arrivals == sorted(first_arrivals), report
        missing = set(range(seqs[0], last_on_disk[sensor] + 1)) - seen
        assert not missing, f"{sensor} lost {sorted(missing)}{report}"
        # The rows on disk were delivered by the second life, not the first.
        assert set(disk[sensor]) - set(seqs[: before_restart[sensor]]), report
    print(report)
    assert recovered and recovered[0]["messages"] >= sum(len(v) for v in disk.values()), report
