"""The real daemon under the unit's stand-in, against a server that drips and a state
directory too small for the release: SIGTERM in the middle of a download at 2 KB/s is
obeyed within ``mqtt.shutdown_flush_s`` + 2 s and the next start resumes with one Range
request; a release that does not fit is refused up front with the space it needs, and the
firmware task answers the next manifest. Telemetry flows throughout."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from device_kit import Device, FileServer, Unit, wait_until

SHUTDOWN_FLUSH_S = 5.0  # the default, which the devices here keep


def telemetry_flows(device: Device) -> None:
    """Readings still arrive: more than one within two seconds."""
    for _ in range(2):
        device.wait_for(lambda m: "/telemetry/" in m.topic, timeout=2)


def test_sigterm_during_a_dripping_download_stops_in_time_and_resumes_with_one_range(
        make_device: Callable[..., Device], server: FileServer) -> None:
    data = os.urandom(1_000_000)
    url = server.add("drip.tar.gz", data, rate=2000)  # eight minutes, a few bytes a read
    device = make_device()
    device.start()
    device.release("91.0.0", url, data)
    device.state(lambda s: s["state"] == "downloading" and (s["progress"] or 0) > 0)
    telemetry_flows(device)

    asked = time.monotonic()
    os.kill(device.unit.pid, signal.SIGTERM)
    # The unit's stand-in records the exit once the process and its session are gone.
    wait_until(lambda: device.unit.exits, "the daemon gone", timeout=60)
    assert time.monotonic() - asked < SHUTDOWN_FLUSH_S + 2
    assert device.unit.exits == [0]

    device.unit = Unit(device.path, device.unit.log_path, device.unit.env)
    device.unit.start()
    # Resumed (ranged responses are not paced), verified, and refused: it is no bundle.
    report = device.state(lambda s: s["state"] == "failed", timeout=60)
    assert (report["version"], report["reason"]) == ("91.0.0", "bad bundle: not a gzip file")
    requests = server.requests_for("drip.tar.gz")
    assert [r.status for r in requests] == [200, 206]
    match = re.fullmatch(r"bytes=(\d+)-", requests[1].range or "")
    assert match and 0 < int(match[1]) < len(data)


def test_a_release_larger_than_the_state_directory_is_refused_and_the_next_answered(
        make_device: Callable[..., Device], server: FileServer, tmp_path: Path,
        small_disk: Callable[[Path, str], Path]) -> None:
    small_disk(tmp_path / "state", "16m")
    device = make_device(firmware={"reserve_bytes": 4 << 20})
    assert device.state_dir == tmp_path / "state"
    device.start()
    telemetry_flows(device)

    big = os.urandom(4 << 20)
    device.release("92.0.0", server.add("big.tar.gz", big), big)
    report = device.state("failed")
    assert report["version"] == "92.0.0"
    assert re.fullmatch(r"not enough space: need 36 MiB, have 1[0-6] MiB", report["reason"])
    assert not server.requests_for("big.tar.gz")
    record = device.record()
    assert (record["state"], record["refused"]) == ("failed", None)
    telemetry_flows(device)

    small = os.urandom(100_000)
    device.release("93.0.0", server.add("small.tar.gz", small), small)
    report = device.state(lambda s: s["state"] == "failed" and s["version"] == "93.0.0")
    assert report["reason"] == "bad bundle: not a gzip file"
    telemetry_flows(device)
    assert device.unit.exits == []
