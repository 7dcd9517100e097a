"""The daemon as a process against a real Mosquitto, seen by a real subscriber."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from helpers import (
    Broker,
    DaemonProcess,
    Subscriber,
    device_config,
    retained,
    retained_snapshot,
    write_config,
)

TELEMETRY = "gw/dev-1/telemetry/room"
STATUS = "gw/dev-1/status"


def telemetry(sub: Subscriber, count: int, topic: str = TELEMETRY) -> list[dict[str, object]]:
    out = []
    while len(out) < count:
        message = sub.until(lambda m: m.topic == topic)
        out.append(message.json())
    return out


def wait_online(port: int, boot_id: str | None = None) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        payload = retained_snapshot(port, STATUS).get(STATUS)
        if payload is not None:
            status = json.loads(payload)
            if status["state"] == "online" and boot_id in (None, status["boot_id"]):
                return dict(status)
        time.sleep(0.1)
    raise AssertionError("device never came online")


def test_telemetry_shape_seq_status_and_clean_shutdown(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw.yaml", device_config(broker.port, tmp_path / "state"))
    sub = Subscriber(broker.port, "gw/#")
    daemon = DaemonProcess(config)
    try:
        payloads = telemetry(sub, 12)
        for payload in payloads:
            assert set(payload) == {"device", "sensor", "seq", "readings"}
            assert payload["device"] == "dev-1"
            assert payload["sensor"] == "room"
            [reading] = payload["readings"]  # type: ignore[misc]
            assert set(reading) == {"ts", "temperature_c", "humidity_rh"}
            assert abs(reading["ts"] - time.time()) < 30
            assert -45 <= reading["temperature_c"] <= 130
            assert 0 <= reading["humidity_rh"] <= 100
        seqs = [p["seq"] for p in payloads]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

        status = wait_online(broker.port)
        assert set(status) == {"state", "ts", "version", "boot_id", "groups"}
        assert status["groups"] == []

        assert daemon.stop() == 0
        message = retained(broker.port, STATUS)
        assert message.retained
        assert message.json()["state"] == "offline"
        assert message.json()["reason"] == "shutdown"
    finally:
        daemon.kill()
        sub.close()


def test_last_will_after_kill(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw.yaml", device_config(broker.port, tmp_path / "state"))
    daemon = DaemonProcess(config)
    try:
        wait_online(broker.port)
        daemon.kill()
        deadline = time.monotonic() + 10
        while (status := retained(broker.port, STATUS).json())["state"] != "offline":
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status == {"state": "offline", "reason": "connection lost"}
    finally:
        daemon.kill()


def test_seq_never_repeats_across_restarts(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw.yaml", device_config(broker.port, tmp_path / "state"))
    seen: list[int] = []
    for run in range(3):
        sub = Subscriber(broker.port, TELEMETRY)
        daemon = DaemonProcess(config)
        try:
            seqs = [int(p["seq"]) for p in telemetry(sub, 5)]  # type: ignore[call-overload]
            assert seqs == list(range(seqs[0], seqs[0] + 5))
            assert not seen or seqs[0] > max(seen), (run, seen, seqs)
            seen += seqs
            if run == 1:
                daemon.kill()  # a crash: the reserved block is skipped, never reused
            else:
                assert daemon.stop() == 0
        finally:
            daemon.kill()
            sub.close()


def test_sighup_reload_keeps_running_config_on_error_and_applies_valid(
    broker: Broker, tmp_path: Path
) -> None:
    settings = device_config(broker.port, tmp_path / "state")
    config = write_config(tmp_path / "gw.yaml", settings)
    sub = Subscriber(broker.port, "gw/dev-1/telemetry/#")
    daemon = DaemonProcess(config)
    try:
        telemetry(sub, 3)
        config.write_text(config.read_text() + "bogus_key: 1\n")
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not any(e.get("event") == "config.reload_rejected" for e in daemon.events()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        rejected = next(e for e in daemon.events() if e.get("event") == "config.reload_rejected")
        assert "bogus_key" in rejected["error"]
        assert f"{config}:" in rejected["error"]
        telemetry(sub, 3)  # still publishing on the old config

        settings["sensors"].append(
            {"name": "rack", "driver": "sht3x", "bus": "sim", "address": 0x45, "interval_s": 0.05}
        )
        write_config(config, settings)
        daemon.signal(signal.SIGHUP)
        telemetry(sub, 3, topic="gw/dev-1/telemetry/rack")
        telemetry(sub, 3)
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        sub.close()
