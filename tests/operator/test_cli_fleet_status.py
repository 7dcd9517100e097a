"""``edge-gateway fleet status`` against a real Mosquitto holding what devices would have left
there: retained status, config/state and firmware/state, and live heartbeats meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Broker
from signing import publish

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, check=False, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})


class Heartbeats:
    """A device's heartbeat, published live (not retained) every 0.2 s until closed."""

    def __init__(self, port: int, device: str, body: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", f"gw/{device}/heartbeat",
             "-q", "0", "-l"], stdin=subprocess.PIPE, text=True)
        self.body = body
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        assert self.proc.stdin is not None
        while not self.stopped.wait(0.2):
            self.proc.stdin.write(json.dumps(self.body) + "\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(5)


def heartbeat(version: str, slot: str | None, channel: str, depth: int,
              config_version: dict[str, int]) -> dict[str, Any]:
    return {"ts": 1.0e9, "uptime_s": 5.0,
            "queue": {"depth": depth, "bytes": 0, "dropped": 0, "spilled": 0},
            "sensors": {}, "rss_bytes": 1, "tasks": 1, "config_version": config_version,
            "firmware": {"version": version, "slot": slot, "channel": channel}}


def put(broker: Broker, topic: str, body: object) -> None:
    publish(broker.port, topic, json.dumps(body).encode() if not isinstance(body, bytes)
            else body)


@pytest.fixture
def fleet(broker: Broker) -> Iterator[Broker]:
    put(broker, "gw/dev-a/status", {"state": "online", "ts": 1.0, "version": "0.1.0",
                                    "boot_id": "x"})
    put(broker, "gw/dev-a/firmware/state", {"version": "0.2.0", "state": "committed",
                                            "reason": None, "progress": None, "ts": 2.0})
    put(broker, "gw/dev-a/config/state", {"scope": "device", "version": 2, "status": "applied",
                                          "reason": None, "ts": 1.0})
    put(broker, "gw/dev-b/status", {"state": "online", "ts": 1.0, "version": "0.1.0",
                                    "boot_id": "y", "groups": ["line-a"], "channel": "stable"})
    put(broker, "gw/dev-b/firmware/state", {"version": "0.2.0", "state": "not_eligible",
                                            "reason": None, "progress": None, "ts": 2.0})
    put(broker, "gw/dev-c/status", {"state": "offline", "reason": "connection lost"})
    put(broker, "gw/dev-c/firmware/state", {"version": "0.2.0", "state": "rolled_back",
                                            "reason": "health check failed", "progress": None,
                                            "ts": 3.0})
    put(broker, "gw/dev-c/config/state", {"scope": "group:line-a", "version": 5,
                                          "status": "rejected", "reason": "bad signature",
                                          "ts": 3.0})
    put(broker, "gw/dev-e/status", b"not json")  # anyone may publish junk: never fatal
    put(broker, "gw/dev-a/firmware/state/extra", {"state": "committed"})
    beats = [
        Heartbeats(broker.port, "dev-a", heartbeat("0.2.0", "a", "stable", 3, {"device": 2})),
        Heartbeats(broker.port, "dev-d", heartbeat("0.3.0b1", "b", "beta", 0, {})),
    ]
    put(broker, "gw/dev-d/firmware/state", {"version": "0.3.0b1", "state": "downloading",
                                            "reason": None, "progress": 0.4, "ts": 4.0})
    try:
        yield broker
    finally:
        for beat in beats:
            beat.close()


def test_json_counts_devices_per_channel_release_and_state(fleet: Broker) -> None:
    result = run("fleet", "status", "--broker", fleet.url, "--settle", "1.5", "--json")
    assert (result.returncode, result.stderr) == (0, "")
    summary = json.loads(result.stdout)
    assert summary["channels"] == {
        "beta": {"0.3.0b1": {"devices": 1, "online": 1, "states": {"downloading": 1}}},
        "stable": {"0.1.0": {"devices": 1, "online": 1, "states": {"not_eligible": 1}},
                   "0.2.0": {"devices": 1, "online": 1, "states": {"committed": 1}}},
        "unknown": {"unknown": {"devices": 1, "online": 0, "states": {"rolled_back": 1}}},
    }
    devices = summary["devices"]
    assert list(devices) == ["dev-a", "dev-b", "dev-c", "dev-d"]
    a = devices["dev-a"]
    assert (a["online"], a["channel"], a["version"], a["slot"]) == (True, "stable", "0.2.0", "a")
    assert (a["queue_depth"], a["config_version"], a["last_heartbeat_ts"]) == (
        3, {"device": 2}, 1.0e9)
    assert 0 <= a["heartbeat_age_s"] < 1.5
    assert a["firmware_state"]["state"] == "committed"
    # No heartbeat: the status gives the release and the channel, nothing gives a queue.
    b = devices["dev-b"]
    assert (b["online"], b["channel"], b["version"], b["queue_depth"]) == (
        True, "stable", "0.1.0", None)
    c = devices["dev-c"]
    assert (c["online"], c["status_reason"], c["version"], c["channel"]) == (
        False, "connection lost", None, None)
    assert c["config_state"]["status"] == "rejected"
    assert devices["dev-d"]["online"] is True  # no status at all, but it speaks


def test_table_shows_each_device_and_each_channel_release(fleet: Broker) -> None:
    result = run("fleet", "status", "--broker", fleet.url, "--settle", "1.5")
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()

    def row(*cells: str) -> str:
        found = [line for line in lines if all(cell in line for cell in cells)]
        assert len(found) == 1, (cells, result.stdout)
        return found[0]

    row("dev-a", "online", "stable", "0.2.0 (a)", "committed 0.2.0", "device v2", " 3 ",
        "s ago")
    row("dev-c", "offline (connection lost)", "rolled_back 0.2.0: health check failed",
        "rejected v5")
    row("dev-d", "beta", "downloading 0.3.0b1 40%")
    row("stable", "0.1.0", "not_eligible 1")
    row("beta", "0.3.0b1", "downloading 1")
    row("unknown", "rolled_back 1")


def test_an_empty_broker_is_an_empty_fleet(broker: Broker) -> None:
    result = run("fleet", "status", "--broker", broker.url, "--settle", "0.3", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"devices": {}, "channels": {}}
