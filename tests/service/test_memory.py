"""What the daemon says of its own memory, against the kernel's figure; the report's
allocation sites under tracemalloc; the imports a configuration pays for."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import yaml
from helpers import Broker, DaemonProcess, Subscriber, device_config, write_config

from gateway.service.diagnostics import rss_bytes

MIB = 1024 * 1024
# The figure is taken a moment before the kernel's is read: a daemon at work allocates
# meanwhile. A wrong unit or page size, a peak or a virtual size is off by far more.
TOLERANCE = 1 * MIB
ROOT = Path(__file__).resolve().parents[2]


def status(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def vm_rss(pid: int) -> int:
    return status(pid, "VmRSS")


def test_rss_is_the_resident_set_now_not_the_peak() -> None:
    block = bytearray(b"\x01") * (64 * MIB)  # written, so resident
    del block  # a block this large is unmapped when freed: the peak stays behind
    kernel, peak = status("self", "VmRSS"), status("self", "VmHWM")
    assert peak - kernel > 32 * MIB
    assert abs(rss_bytes() - kernel) <= TOLERANCE, (rss_bytes(), kernel)


def diagnose(daemon: DaemonProcess, state: Path) -> tuple[dict[str, Any], int]:
    """A SIGUSR1 report, and the kernel's VmRSS read just before asking for it (the
    report's own tracemalloc snapshot, taken after its RSS, costs megabytes)."""
    kernel = vm_rss(daemon.proc.pid)
    daemon.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not list(state.glob("diag-*.json")):
        assert time.monotonic() < deadline, "no report"
        time.sleep(0.02)
    [path] = state.glob("diag-*.json")
    return json.loads(path.read_text()), kernel


def test_the_heartbeats_rss_is_the_kernels_vmrss(broker: Broker, tmp_path: Path) -> None:
    settings = device_config(broker.port, tmp_path / "state", heartbeat={"interval_s": 1})
    settings["sensors"][0]["interval_s"] = 1.0
    sub = Subscriber(broker.port, "gw/dev-1/heartbeat")
    daemon = DaemonProcess(write_config(tmp_path / "gw.yaml", settings))
    try:
        for _ in range(3):
            beat = sub.get(timeout=15).json()
            kernel = vm_rss(daemon.proc.pid)
            assert abs(beat["rss_bytes"] - kernel) <= TOLERANCE, (beat["rss_bytes"], kernel)
    finally:
        daemon.kill()
        sub.close()


def test_the_report_names_allocation_sites_and_its_rss_is_vmrss(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    settings = device_config(broker.port, state, diagnostics={"tracemalloc": True})
    sub = Subscriber(broker.port, "gw/dev-1/telemetry/room")
    daemon = DaemonProcess(write_config(tmp_path / "gw.yaml", settings))
    try:
        for _ in range(20):  # the pipeline, queue and uplink at work since start-up
            sub.get()
        report, kernel = diagnose(daemon, state)
        assert abs(report["rss_bytes"] - kernel) <= TOLERANCE, (report["rss_bytes"], kernel)
        growth = report["memory_growth"]
        assert len(growth) >= 5
        sizes = [abs(site["size_diff"]) for site in growth]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0
        for site in growth:
            assert site["trace"] and all(":" in frame for frame in site["trace"])
        ours = [frame for site in growth for frame in site["trace"]
                if frame.startswith((str(ROOT / "gateway"), str(ROOT / "drivers")))]
        assert ours, growth
    finally:
        daemon.kill()
        sub.close()


HEAVY = {"numpy", "sqlite3", "minimalmodbus", "serial"}


def demo_config(broker: Broker, state: Path) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["mqtt"]["brokers"] = [broker.url]
    config["state_dir"] = str(state)
    config["logging"] = {"level": "info", "format": "json"}
    for sensor in config["sensors"]:
        sensor["interval_s"] = min(sensor["interval_s"], 0.5)
    return config


def test_a_configuration_imports_only_what_its_features_need(
    broker: Broker, tmp_path: Path
) -> None:
    lean, full = tmp_path / "lean", tmp_path / "full"
    sub = Subscriber(broker.port, "gw/+/telemetry/+")
    daemons = [
        (lean, DaemonProcess(write_config(tmp_path / "lean.yaml",
                                          device_config(broker.port, lean)))),
        (full, DaemonProcess(write_config(tmp_path / "full.yaml", demo_config(broker, full)))),
    ]
    try:
        # Every sensor of both has published: each has opened and run its pipeline.
        wanted = {"dev-1/telemetry/room", *(f"demo-pi/telemetry/{sensor}" for sensor in
                                            ("cabinet", "room", "motor", "greenhouse", "pump"))}
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while not wanted <= seen:
            seen.add(sub.get(timeout=deadline - time.monotonic()).topic.removeprefix("gw/"))
        imported = {state: set(diagnose(daemon, state)[0]["packages"])
                    for state, daemon in daemons}
        assert not HEAVY & imported[lean]
        assert imported[full] >= HEAVY
    finally:
        for _, daemon in daemons:
            daemon.kill()
        sub.close()
