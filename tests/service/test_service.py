"""The daemon as systemd sees it: sd_notify over a real NOTIFY_SOCKET, the watchdog,
sensor health in the heartbeat, and the SIGUSR1 diagnostics report."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Broker, DaemonProcess, Subscriber, device_config, write_config


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket named by NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def receive(self, until: float) -> None:
        while (left := until - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, line: str, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            for stamp, message in self.messages:
                if line in message.splitlines():
                    return stamp
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {line!r} in {self.messages}")
            self.receive(min(deadline, time.monotonic() + 0.2))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def start(tmp_path: Path, broker: Broker, notify: NotifySocket, **env: str) -> DaemonProcess:
    config = write_config(tmp_path / "gw.yaml", device_config(broker.port, tmp_path / "state"))
    environment = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000", **env}
    return DaemonProcess(config, env=environment)


def test_ready_watchdog_status_and_stopping(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    daemon = start(tmp_path, broker, notify)
    try:
        ready = notify.wait_for("READY=1")
        notify.receive(time.monotonic() + 2.0)
        pings = [t for t, m in notify.messages if "WATCHDOG=1" in m.splitlines()]
        # Half of WatchdogSec (0.4 s): about ten in two seconds.
        assert len(pings) >= 6, notify.messages
        assert all(t >= ready for t in pings)
        statuses = [m for _, m in notify.messages if m.startswith("STATUS=")]
        assert any("connected to mqtt://127.0.0.1" in s and "sensors 1/1 ok" in s
                   for s in statuses), statuses
        assert daemon.stop() == 0
        notify.wait_for("STOPPING=1", timeout=1)
    finally:
        daemon.kill()


def test_ready_does_not_wait_for_the_broker(tmp_path: Path, notify: NotifySocket) -> None:
    settings = device_config(1, tmp_path / "state")  # nothing listens on port 1
    config = write_config(tmp_path / "gw.yaml", settings)
    daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        notify.wait_for("READY=1")
        [status] = [m for _, m in notify.messages if "READY=1" in m]
        assert "connecting to mqtt://127.0.0.1:1" in status or (
            "broker unreachable (ConnectionRefusedError" in status
        ), status
    finally:
        daemon.kill()


def statuses(notify: NotifySocket) -> list[str]:
    return [line.removeprefix("STATUS=") for _, m in notify.messages
            for line in m.splitlines() if line.startswith("STATUS=")]


def wait_for_status(notify: NotifySocket, start: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in statuses(notify) if s.startswith(start)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no STATUS={start}... in {statuses(notify)}"
        notify.receive(min(deadline, time.monotonic() + 0.2))


def test_status_follows_the_uplink_without_waiting_for_a_watchdog_ping(
    tmp_path: Path, notify: NotifySocket
) -> None:
    # No WATCHDOG_USEC: no pings, so every STATUS= after READY comes from the link changing.
    broker = Broker(tmp_path)
    config = write_config(tmp_path / "gw.yaml", device_config(broker.port, tmp_path / "state"))
    daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        notify.wait_for("READY=1")
        refused = wait_for_status(notify, "broker unreachable (")
        assert re.fullmatch(r"broker unreachable \(ConnectionRefusedError: .*\); "
                            r"sensors [01]/1 ok; queue \d+", refused), refused
        broker.start()
        connected = wait_for_status(notify, f"connected to {broker.url}; ")
        assert re.fullmatch(r"connected to \S+; sensors 1/1 ok; queue \d+", connected)
        notify.messages.clear()
        broker.stop()
        lost = wait_for_status(notify, "broker unreachable (")
        assert lost.startswith("broker unreachable (connection closed); sensors 1/1 ok"), lost
        wait_for_status(notify, f"connecting to {broker.url}; ")
        assert not [m for _, m in notify.messages if "WATCHDOG=1" in m]
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        broker.stop()


def test_a_wedged_event_loop_stops_the_watchdog_pings(
    broker: Broker, tmp_path: Path, notify: NotifySocket
) -> None:
    daemon = start(tmp_path, broker, notify, EDGE_GATEWAY_DEBUG_HOOKS="1")
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")
        daemon.signal(signal.SIGUSR2)
        time.sleep(0.5)  # a ping already on its way may still land
        notify.messages.clear()
        # Five times the ping interval (half of 0.4 s) without one.
        notify.receive(time.monotonic() + 1.0)
        assert not [m for _, m in notify.messages if "WATCHDOG=1" in m]
    finally:
        daemon.kill()


def heartbeats(sub: Subscriber, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    message = sub.until(lambda m: m.topic.endswith("/heartbeat") and predicate(m.json()),
                        timeout=timeout)
    return dict(message.json())


def test_unplugged_sensor_degrades_fails_and_recovers_alone(
    broker: Broker, tmp_path: Path
) -> None:
    settings = device_config(broker.port, tmp_path / "state", heartbeat={"interval_s": 1})
    settings["sensors"] = [
        {"name": "flaky", "driver": "sht3x", "bus": "sim", "interval_s": 0.4,
         "health": {"degrade_after_errors": 1, "fail_after_errors": 6, "retry_max_s": 0.5},
         "sim": {"unplugged": False}},
        {"name": "steady", "driver": "bme280", "bus": "sim", "interval_s": 0.1},
    ]
    config = write_config(tmp_path / "gw.yaml", settings)
    sub = Subscriber(broker.port, "gw/dev-1/#")
    daemon = DaemonProcess(config)
    try:
        beat = heartbeats(sub, lambda b: b["sensors"]["flaky"]["state"] == "ok")
        assert set(beat) == {"ts", "uptime_s", "queue", "sensors", "rss_bytes", "tasks",
                             "config_version", "config_rejected", "firmware", "uplink",
                             "alarms"}
        assert beat["alarms"] == {"info": 0, "warning": 0, "critical": 0}
        assert set(beat["queue"]) == {"depth", "bytes", "dropped", "spilled", "in_flight"}
        assert beat["uplink"] == {"reconnects": 0, "last_error": None}
        assert beat["rss_bytes"] > 10_000_000 and beat["tasks"] > 3

        settings["sensors"][0]["sim"]["unplugged"] = True
        write_config(config, settings)
        daemon.signal(signal.SIGHUP)
        heartbeats(sub, lambda b: b["sensors"]["flaky"]["state"] == "degraded")
        failed = heartbeats(sub, lambda b: b["sensors"]["flaky"]["state"] == "failed")
        assert failed["sensors"]["flaky"]["errors"] >= 6
        assert failed["sensors"]["steady"]["state"] == "ok"
        # The other sensor and the uplink go on regardless.
        steady_seqs = [sub.until(lambda m: m.topic.endswith("/steady")).json()["seq"]
                       for _ in range(5)]
        assert steady_seqs == sorted(steady_seqs)

        settings["sensors"][0]["sim"]["unplugged"] = False
        write_config(config, settings)
        daemon.signal(signal.SIGHUP)
        sub.until(lambda m: m.topic.endswith("/telemetry/flaky"))
        back = heartbeats(sub, lambda b: b["sensors"]["flaky"]["state"] == "ok")
        assert back["uptime_s"] > failed["uptime_s"]  # the same process all along
        events = [e["event"] for e in daemon.events()]
        assert "sensor.failed" in events and "sensor.recovered" in events
        assert events.count("daemon.started") == 1
    finally:
        daemon.kill()
        sub.close()


def test_sigusr1_writes_a_report_and_the_daemon_keeps_publishing(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path / "gw.yaml", device_config(broker.port, state))
    sub = Subscriber(broker.port, "gw/dev-1/telemetry/room")
    daemon = DaemonProcess(config)
    try:
        sub.get()
        daemon.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not list(state.glob("diag-*.json")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [path] = state.glob("diag-*.json")
        report = json.loads(path.read_text())
        names = {task["name"] for task in report["tasks"]}
        assert {"uplink", "sampler:room", "pipeline:room", "heartbeat"} <= names
        assert all(task["age_s"] is not None and task["stack"] for task in report["tasks"]
                   if task["name"] != "Task-1")
        assert report["fds"]["by_kind"]["socket"] >= 1  # the broker connection at least
        assert report["fds"]["count"] == len(report["fds"]["open"])
        assert any(t["name"].startswith("sensor-room") for t in report["threads"])
        assert report["figures"]["queue"]["depth"] >= 0
        assert report["memory_growth"] is None
        seq = sub.get().json()["seq"]
        assert sub.get().json()["seq"] == seq + 1
        assert daemon.proc.poll() is None
        assert path.stat().st_size > 0
    finally:
        daemon.kill()
        sub.close()


JOURNAL_SOCKET = Path("/run/systemd/journal/socket")


def _journal_entry(datagram: bytes) -> dict[str, str]:
    """The native journal protocol's KEY=value lines (values here have no newlines)."""
    entry = {}
    for line in datagram.decode().splitlines():
        key, _, value = line.partition("=")
        entry[key] = value
    return entry


@pytest.mark.skipif(
    os.geteuid() != 0 or JOURNAL_SOCKET.exists(),
    reason="needs to stand in for journald's socket, which only root can, and only where "
    "no journald runs",
)
def test_under_systemd_events_go_to_journald_with_fields(
    broker: Broker, tmp_path: Path
) -> None:
    JOURNAL_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(JOURNAL_SOCKET))
    settings = device_config(broker.port, tmp_path / "state")
    settings["logging"] = {"level": "info", "format": "auto"}
    config = write_config(tmp_path / "gw.yaml", settings)
    daemon = DaemonProcess(config, env={"INVOCATION_ID": "0123456789abcdef"})
    try:
        entries = []
        journal.settimeout(10)
        # Both come, in either order: the sensor opens in its thread as the uplink connects.
        while not {"uplink.connected", "sensor.opened"} <= {e.get("EVENT") for e in entries}:
            entries.append(_journal_entry(journal.recv(65536)))
        opened = next(e for e in entries if e.get("EVENT") == "sensor.opened")
        assert opened["SENSOR"] == "room"
        assert opened["DRIVER"] == "sht3x"
        assert opened["PRIORITY"] == "6"
        assert opened["SYSLOG_IDENTIFIER"] == "edge-gateway"
        assert opened["MESSAGE"].startswith("sensor.opened")
        assert daemon.stop() == 0
        assert "uplink.connected" not in daemon.log()  # nothing on stderr but the journal
    finally:
        daemon.kill()
        journal.close()
        JOURNAL_SOCKET.unlink()
