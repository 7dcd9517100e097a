"""Real parts for tests: a Mosquitto broker (``mosquitto.py``), a subscriber, the daemon as a
process."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The broker starter is shared with the benches; tests take it from here as before.
from mosquitto import Broker as Broker
from mosquitto import free_port as free_port
from mosquitto import wait_for_port as wait_for_port


@dataclass
class Received:
    retained: bool
    topic: str
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """``mosquitto_sub`` on a topic filter; messages are read with a timeout.

    ``options`` go to mosquitto_sub as they are, e.g. ``("-c", "-i", ID)`` for a
    persistent session that outlives a broker restart.
    """

    def __init__(self, port: int, topic: str, options: Sequence[str] = ()) -> None:
        self._lines: queue.Queue[bytes] = queue.Queue()
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1",
             "-F", "%r|%t|%p", *options],
            stdout=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Our payloads are single-line JSON, so one line is one message.
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip(b"\n"))

    def get(self, timeout: float = 10.0) -> Received:
        line = self._lines.get(timeout=timeout)
        retained, topic, payload = line.split(b"|", 2)
        return Received(retained == b"1", topic.decode(), payload)

    def until(self, predicate: Any, timeout: float = 15.0) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message")
            message = self.get(left)
            if predicate(message):
                return message

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


def retained(port: int, topic: str, timeout: float = 5.0) -> Received:
    sub = Subscriber(port, topic)
    try:
        return sub.get(timeout)
    finally:
        sub.close()


def collect(sub: Subscriber, want: Callable[[Received], bool], topics: set[str],
            timeout: float = 30.0) -> dict[str, bytes]:
    """The last payload on each of ``topics`` among the messages ``want`` keeps, once every
    one of them has had one."""
    got: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout
    while not topics <= got.keys():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"never came: {sorted(topics - got.keys())}")
        try:
            message = sub.get(left)
        except queue.Empty:
            continue
        if message.topic in topics and want(message):
            got[message.topic] = message.payload
    return got


def retained_snapshot(port: int, topic_filter: str, timeout: float = 10.0) -> dict[str, bytes]:
    """What the broker holds retained under ``topic_filter`` (messages published while
    we look are left out).

    The broker sends a new subscription's retained messages when it takes the SUBSCRIBE,
    so a marker published to the same subscriber afterwards arrives after all of them: the
    snapshot ends at the marker, with no quiet period to wait out."""
    marker = f"test/snapshot/{uuid.uuid4().hex}"
    sub = Subscriber(port, topic_filter, ("-t", marker))
    got: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            # Until the subscription is in place, a marker reaches no one: send again.
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", marker,
                            "-q", "1", "-m", "end"], check=True, timeout=10)
            try:
                while True:
                    message = sub.get(0.05)
                    if message.topic == marker:
                        return got
                    if message.retained:
                        got[message.topic] = message.payload
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no snapshot of {topic_filter}") from None
    finally:
        sub.close()


def device_config(broker_port: int, state_dir: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "device_id": "dev-1",
        "state_dir": str(state_dir),
        "mqtt": {
            "brokers": [f"mqtt://127.0.0.1:{broker_port}"],
            "keepalive_s": 5,
            "backoff": {"initial_s": 0.1, "max_s": 0.5},
        },
        "sensors": [
            {"name": "room", "driver": "sht3x", "bus": "sim", "interval_s": 0.05},
        ],
        "logging": {"level": "debug", "format": "json"},
    }
    config.update(overrides)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class DaemonProcess:
    """``edge-gateway run`` as a child process, its log in a file."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = config.with_suffix(".log")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        log.close()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text()

    def events(self) -> Iterator[dict[str, Any]]:
        for line in self.log().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                yield json.loads(line)
