"""A device under remote configuration: the real daemon, a real Mosquitto, real keys."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Broker, DaemonProcess, Received, Subscriber, device_config, write_config
from nacl.signing import SigningKey
from signing import config_payload, envelope, public_hex, publish

SENSORS = [
    {"name": "room", "driver": "sht3x", "bus": "sim", "interval_s": 0.05},
    {"name": "hall", "driver": "bme280", "bus": "sim", "interval_s": 0.05},
]


@pytest.fixture(scope="module")
def mqtt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


class Device:
    """One daemon and a subscriber on everything it publishes."""

    count = 0

    def __init__(self, broker: Broker, workdir: Path, key: SigningKey, **overrides: Any) -> None:
        Device.count += 1
        self.id = f"rc-{os.getpid()}-{Device.count}"
        self.broker, self.workdir, self.key = broker, workdir, key
        self.path = workdir / f"{self.id}.yaml"
        self.settings = device_config(
            broker.port, workdir / f"{self.id}-state", device_id=self.id, groups=["line-a"],
            sensors=SENSORS,
            remote_config={"trusted_keys": [public_hex(key)], "apply_timeout_s": 3},
            heartbeat={"interval_s": 1},
            logging={"level": "info", "format": "json"},
        )
        self.settings.update(overrides)
        write_config(self.path, self.settings)
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.states: list[Received] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.daemon: DaemonProcess | None = None
        self.sub = Subscriber(broker.port, f"gw/{self.id}/#")

    # -- process ---------------------------------------------------------------------

    def start(self) -> None:
        self.daemon = DaemonProcess(self.path)
        self.wait_for(lambda m: m.topic.endswith("/status") and m.json()["state"] == "online")

    def stop(self) -> None:
        if self.daemon is not None:
            assert self.daemon.stop() == 0
            self.daemon = None

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.kill()
        self.sub.close()

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.proc.pid

    def reload(self, **changes: Any) -> None:
        self.settings.update(changes)
        write_config(self.path, self.settings)
        assert self.daemon is not None
        self.daemon.signal(signal.SIGHUP)

    # -- what arrives ------------------------------------------------------------------

    def _take(self, message: Received) -> None:
        kind = message.topic.split("/", 2)[2]
        if kind.startswith("telemetry/"):
            self.seqs[kind.removeprefix("telemetry/")].append(message.json()["seq"])
        elif kind == "config/state":
            self.states.append(message)
        elif kind == "heartbeat":
            self.heartbeats.append(message.json())

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message")
            message = self.sub.get(left)
            self._take(message)
            if predicate(message):
                return message

    def drain(self, seconds: float) -> None:
        """Collect whatever arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._take(self.sub.get(left))
            except queue.Empty:
                return

    def next_state(self, timeout: float = 15.0) -> dict[str, Any]:
        message = self.wait_for(lambda m: m.topic.endswith("/config/state") and not m.retained,
                                timeout)
        state: dict[str, Any] = message.json()
        return state

    def heartbeat(self) -> dict[str, Any]:
        self.wait_for(lambda m: m.topic.endswith("/heartbeat"))
        return self.heartbeats[-1]

    # -- sending ---------------------------------------------------------------------

    @property
    def device_topic(self) -> str:
        return f"gw/{self.id}/config/set"

    def group_topic(self, group: str = "line-a") -> str:
        return f"gw/group/{group}/config/set"

    def push(self, version: int, config: dict[str, Any], *, key: SigningKey | None = None,
             topic: str | None = None, group: str | None = None, **kw: Any) -> None:
        address = {"group": group} if group else {"device": self.id}
        payload = config_payload(version, config, **address, **kw)
        publish(self.broker.port, topic or (self.group_topic(group) if group else
                                            self.device_topic),
                envelope(key or self.key, payload))

    def show(self) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "gateway", "config", "show", "-c",
                              str(self.path), "--json"], capture_output=True, check=True,
                             text=True)
        shown: dict[str, Any] = json.loads(out.stdout)
        return shown


def gaps(seqs: list[int]) -> list[int]:
    """Numbers missing between the first and the last seen (a repeat is allowed)."""
    seen = set(seqs)
    return [n for n in range(min(seen), max(seen)) if n not in seen] if seen else []


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def device(mqtt: Broker, tmp_path: Path, key: SigningKey) -> Iterator[Device]:
    device = Device(mqtt, tmp_path, key)
    try:
        yield device
    finally:
        device.close()
