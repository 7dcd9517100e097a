"""Firmware updates under a real systemd: the unit as install.sh installs it, its stable
launcher (``ExecStart=... launch``) and ``RestartForceExitStatus=75``.

A sandbox of its own (``systemd-sandbox``, as ``test_systemd.py`` uses it; root only, else
skipped), with a Mosquitto and an HTTP server inside (the firmware tests' ``FileServer``, run
by ``bundle_server.py``) serving release bundles built here from this source. In order:
install.sh from wheels; a good release is published, whose server sends part of the bundle
and then hangs, and ``systemctl stop`` during that download ends within
``mqtt.shutdown_flush_s`` + 2 s (measured), the next start resuming with one ``Range``
request from the bytes that came; the release goes on through activation and
the restart in the same process (the launcher exec'd again: no ``RestartSec=``, the exit-75
downtime measured), and the service runs it from slot a; a release that raises at
import is rolled back by the launcher after ``max_trial_boots`` starts, the service ending
``active`` on slot a with ``rolled_back`` reported; a manual install.sh of another source
takes over from the slots.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from nacl.signing import SigningKey
from releases import (
    NO_IMPORT_PATCH,
    build_releases,
    dependency_wheels,
    manifest,
    set_version,
)
from signing import public_hex
from test_systemd import (
    BROKER_PORT,
    CONF,
    REPO,
    SRC,
    TOOL,
    UNIT,
    WORK,
    Sandbox,
    build_wheels,
    demo_config,
    find_tool,
    install,
    running,
    until,
)

pytestmark = pytest.mark.systemd


def _sandboxed_python() -> str:
    """The interpreter running these tests, as the sandbox sees it: the sandbox's / is this
    machine's through an overlay, but with an empty /tmp, and the clone bound at ``SRC``;
    so a venv inside the clone (``.ci/setup`` makes ``.venv`` there) is named under ``SRC``.
    Its packages come from the venv, the gateway from ``SRC`` (an editable install's link
    points at the clone's host path)."""
    try:
        inside = Path(sys.prefix).resolve().relative_to(REPO)
    except ValueError:
        return sys.executable
    return f"{SRC}/{inside}/bin/python"

GOOD = "90.0.0"
NO_IMPORT = "90.2.0"
MANUAL = "91.0.0"
HTTP_PORT = 18081
STATE_TOPIC = "gw/demo-pi/firmware/state"
HEARTBEAT_TOPIC = "gw/demo-pi/heartbeat"
MANIFEST_TOPIC = "gw/firmware/stable/manifest"
STATE_DIR = "/var/lib/edge-gateway"
SHUTDOWN_FLUSH_S = 5.0
# The promise: SIGTERM during a download, the daemon gone within the flush time + 2 s.
STOP_BOUND_S = SHUTDOWN_FLUSH_S + 2
# Where the good bundle's first answer hangs, as the device reports its progress.
HANG_AT = 0.3
# pip installs numpy and the rest into a slot as the service's user: minutes on a slow day.
INSTALL_S = 240


@dataclass
class Box:
    sandbox: Sandbox
    work: Path
    # The good release's bundle: its file name, and the bytes of its first answer.
    good: str
    hang_at: int

    def sh(self, script: str, **options: Any) -> subprocess.CompletedProcess[str]:
        return self.sandbox.sh(script, **options)

    def retained(self, topic: str) -> dict[str, Any] | None:
        out = self.sh(f"mosquitto_sub -p {BROKER_PORT} -t {topic} -q 1 -C 1 -W 3",
                      check=False).stdout
        return json.loads(out) if out.strip() else None

    def firmware_state(self, state: str, timeout: float) -> dict[str, Any]:
        last: list[dict[str, Any] | None] = [None]

        def reached() -> dict[str, Any] | None:
            report = last[0] = self.retained(STATE_TOPIC)
            return report if report is not None and report["state"] == state else None

        try:
            found: dict[str, Any] = until(reached, f"firmware state {state}", timeout)
        except AssertionError as exc:
            tail = "\n".join(str(e.get("MESSAGE", "")) for e in self.sandbox.journal()[-40:])
            raise AssertionError(f"{exc}; last reported {last[0]}; journal:\n{tail}") from None
        return found

    def heartbeat(self) -> dict[str, Any]:
        out = self.sh(f"mosquitto_sub -p {BROKER_PORT} -t {HEARTBEAT_TOPIC} -C 1 -W 10").stdout
        beat: dict[str, Any] = json.loads(out)
        return beat

    def publish(self, name: str) -> None:
        self.sh(f"mosquitto_pub -p {BROKER_PORT} -t {MANIFEST_TOPIC} -q 1 -r "
                f"-f {WORK}/{name}")

    def launcher_lines(self) -> list[str]:
        return [str(e.get("MESSAGE", "")) for e in self.sandbox.journal()
                if str(e.get("MESSAGE", "")).startswith("edge-gateway launch: ")]


def device_config(key: SigningKey) -> str:
    config = yaml.safe_load(demo_config())
    config["remote_config"] = {"trusted_keys": [public_hex(key)]}
    config["mqtt"]["shutdown_flush_s"] = SHUTDOWN_FLUSH_S
    config["firmware"] = {"health_timeout_s": 60, "max_trial_boots": 2,
                          "progress_interval_s": 0.5}
    config["heartbeat"] = {"interval_s": 2}
    return yaml.safe_dump(config, sort_keys=False)


def reported_from(fraction: float, size: int) -> int:
    """The fewest bytes of ``size`` that the device reports (to three decimals, as
    ``gateway/firmware/job.py`` rounds) as ``fraction`` done: a body that stops there reads
    ``fraction`` only once all of it has come."""
    have = int((fraction - 0.001) * size)
    while round(have / size, 3) < fraction:
        have += 1
    return have


@pytest.fixture(scope="module")
def box(request: pytest.FixtureRequest) -> Iterator[Box]:
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-sandbox boots systemd as PID 1 in new namespaces")
    tool = find_tool()
    if tool is None:
        pytest.skip(f"{TOOL} not found ($SYSTEMD_SANDBOX, {REPO.parent}/shared/tools, "
                    "/work/shared/tools, PATH)")
    work = Path(tempfile.mkdtemp(prefix="edge-gateway-firmware-", dir="/var/tmp"))
    work.chmod(0o755)
    try:
        build_wheels(work / "wheels")
        deps = dependency_wheels(request.config.cache.mkdir("firmware-wheels"))
        bundles = build_releases(
            {GOOD: {}, NO_IMPORT: {"gateway/daemon/__init__.py": NO_IMPORT_PATCH}},
            deps, work / "build")
        releases = work / "releases"
        releases.mkdir()
        key = SigningKey.generate()
        for version, bundle in bundles.items():
            name = bundle.name
            shutil.move(bundle, releases / name)
            (work / f"manifest-{version}.json").write_bytes(manifest(
                key, "stable", version, f"http://127.0.0.1:{HTTP_PORT}/{name}",
                releases / name))
        shutil.rmtree(work / "build")
        good = bundles[GOOD].name
        hang_at = reported_from(HANG_AT, (releases / good).stat().st_size)
        (work / "gateway.yaml").write_text(device_config(key))
        (work / "mosquitto.conf").write_text(
            f"listener {BROKER_PORT} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        # The state directory on a real file system, as on a device: the sandbox's own is
        # in memory (tmpfs), where every file a slot's venv holds would count against the
        # unit's MemoryMax= and pip would be killed half way.
        (work / "state").mkdir()
        name = f"edge-gateway-firmware-{os.getpid()}"
        started = subprocess.run(
            [tool, "start", "-q", "--name", name, "--timeout", "1800",
             "--bind", f"{work}:{WORK}", "--ro-bind", f"{REPO}:{SRC}",
             "--bind", f"{work / 'state'}:{STATE_DIR}"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert started.returncode == 0, started.stderr
        try:
            yield Box(Sandbox(tool, name), work, good, hang_at)
        finally:
            subprocess.run([tool, "stop", name], capture_output=True, timeout=60, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_the_installed_unit_starts_through_the_launcher(box: Box) -> None:
    out = install(box.sandbox)
    assert "started edge-gateway" in out
    assert box.sandbox.show("ExecStart")["ExecStart"].count(" launch -c ") == 1
    assert box.sandbox.show("RestartForceExitStatus")["RestartForceExitStatus"] == "75"
    # Our configuration, a broker and the release server; restarts after 1 s, not 5.
    dropin = f"/run/systemd/system/{UNIT}.service.d"
    box.sh(f"install -m 0640 -g edge-gateway {WORK}/gateway.yaml {CONF} && "
           f"mkdir -p {dropin} && printf '[Service]\\nRestartSec=1\\n' >{dropin}/test.conf && "
           "systemctl daemon-reload")
    box.sandbox.start_broker()
    # The good bundle's first answer: its first bytes in about two seconds, then the
    # connection held open with nothing more (a hung server), far less than the stall
    # timeout (30 s). Ranged answers are whole and at once.
    box.sh(f"systemd-run --quiet --collect --unit=test-http "
           f"--setenv=PYTHONPATH={SRC}:{SRC}/tests:{SRC}/tests/firmware {_sandboxed_python()} "
           f"{SRC}/tests/service/bundle_server.py {WORK}/releases {HTTP_PORT} "
           f"--slow {box.good} --rate {box.hang_at / 2:.0f} --stall-at {box.hang_at}")
    until(lambda: served(box), "the release server listening")
    box.sh(f"systemctl restart {UNIT}")
    until(lambda: running(box.sandbox), "the unit running")
    assert box.firmware_state("idle", 30)["version"] is None
    assert box.heartbeat()["firmware"]["slot"] is None


def served(box: Box) -> list[dict[str, Any]]:
    """The release server's log: what it serves, then each request (path, range, status)."""
    out = box.sh("journalctl -o cat --no-pager -u test-http").stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def bundle_requests(box: Box) -> list[dict[str, Any]]:
    return [r for r in served(box) if r.get("path") == f"/{box.good}"]


def test_sigterm_during_a_slow_download_stops_in_time_and_resumes_with_one_range(
        box: Box) -> None:
    before = until(lambda: running(box.sandbox), "the unit running")
    box.publish(f"manifest-{GOOD}.json")
    # All of the first answer has come, and the download waits in a read for more.
    report = box.firmware_state("downloading", 60)
    assert report["version"] == GOOD

    def progress() -> float | None:
        now = box.retained(STATE_TOPIC) or {}
        return now.get("progress") if now.get("state") == "downloading" else None

    until(lambda: progress() == HANG_AT, f"progress {HANG_AT}", 30)
    assert [r["range"] for r in bundle_requests(box)] == [None]

    timeout_s = float(box.sandbox.show("TimeoutStopUSec")["TimeoutStopUSec"].removesuffix("s"))
    times = box.sh(f"date +%s.%N; systemctl stop {UNIT}; date +%s.%N").stdout.split()
    stop_s = float(times[1]) - float(times[0])
    print(f"SIGTERM during a download: systemctl stop took {stop_s:.2f} s; the bound "
          f"{STOP_BOUND_S:g} s, the unit's TimeoutStopSec {timeout_s:g} s")
    # Stopped by the daemon itself, not by systemd's SIGKILL after the timeout.
    assert box.sandbox.show("ActiveState", "Result") == {"ActiveState": "inactive",
                                                         "Result": "success"}
    assert box.sh(f"test -e /proc/{before['MainPID']}", check=False).returncode == 1
    assert stop_s < min(STOP_BOUND_S, timeout_s)

    started = time.time()
    box.sh(f"systemctl start {UNIT}")
    resumed = until(lambda: [e for e in box.sandbox.journal(EVENT="firmware.downloaded")
                             if int(e["__REALTIME_TIMESTAMP"]) / 1e6 > started],
                    "the download resumed and done", 60)
    assert (resumed[0]["REQUESTS"], resumed[0]["RANGED"]) == ("1", "1")
    resuming = box.sandbox.journal(EVENT="firmware.resuming")
    assert [e["HAVE"] for e in resuming] == [str(box.hang_at)]
    requests = bundle_requests(box)
    assert [(r["range"], r["status"]) for r in requests] == [
        (None, 200), (f"bytes={box.hang_at}-", 206)], requests


def event_times(box: Box, name: str, **fields: str) -> list[float]:
    """When the daemon logged ``name`` (journald's receive time, seconds)."""
    return [int(e["__REALTIME_TIMESTAMP"]) / 1e6
            for e in box.sandbox.journal(EVENT=name, **fields)]


def test_a_good_release_is_activated_through_a_restart_in_the_process(box: Box) -> None:
    # Published in the step before, its download resumed there.
    before = until(lambda: running(box.sandbox), "the unit running")
    committed = box.firmware_state("committed", INSTALL_S)
    assert committed["version"] == GOOD

    # Not a restart by systemd: the same process, the launcher exec'd again.
    after = until(lambda: running(box.sandbox), "the unit running")
    assert after["MainPID"] == before["MainPID"]
    assert after["NRestarts"] == before["NRestarts"]
    # The exit-75 downtime: from the old daemon's stop to the new one's start and its uplink.
    asked = event_times(box, "daemon.signal", ACTION="restart")[-1]
    stopped = event_times(box, "daemon.stopped")[-1]
    started = next(t for t in event_times(box, "daemon.started") if t > stopped)
    connected = next(t for t in event_times(box, "uplink.connected") if t > stopped)
    print(f"exit-75 downtime: stop {stopped - asked:.2f} s, exec to daemon.started "
          f"{started - stopped:.2f} s, stop asked to uplink connected {connected - asked:.2f} s")
    command = box.sh(f"tr '\\0' ' ' </proc/{after['MainPID']}/cmdline").stdout
    assert command.split()[1:] == [f"{STATE_DIR}/slots/a/venv/bin/edge-gateway", "run", "-c",
                                   CONF], command
    assert box.sh(f"readlink {STATE_DIR}/current").stdout.strip() == "slots/a"
    beat = until(lambda: (b := box.heartbeat())["firmware"]["version"] == GOOD and b,
                 "a heartbeat of the new version")
    assert beat["firmware"] == {"version": GOOD, "slot": "a", "channel": "stable"}
    assert f"trial start 1 of 2 of {GOOD} in slot a" in "\n".join(box.launcher_lines())
    assert "; sensors 5/5 ok;" in after["StatusText"]


def test_a_release_that_cannot_import_is_rolled_back_by_the_launcher(box: Box) -> None:
    box.publish(f"manifest-{NO_IMPORT}.json")
    report = box.firmware_state("rolled_back", INSTALL_S)
    assert (report["version"], report["reason"]) == (NO_IMPORT, "did not come up 2 times")

    state = until(lambda: running(box.sandbox), "the unit running again")
    assert box.sandbox.show("ActiveState")["ActiveState"] == "active"
    assert box.sh(f"readlink {STATE_DIR}/current").stdout.strip() == "slots/a"
    beat = until(lambda: (b := box.heartbeat())["firmware"]["version"] == GOOD and b,
                 "a heartbeat of the previous version")
    assert beat["firmware"]["slot"] == "a"
    lines = "\n".join(box.launcher_lines())
    assert f"{NO_IMPORT} in slot b did not come up 2 times: back to slot a" in lines
    journal = "\n".join(str(e.get("MESSAGE", "")) for e in box.sandbox.journal())
    assert "a release that cannot import its daemon" in journal
    assert state["StatusText"].startswith("connected to ")


def test_a_manual_install_takes_over_from_the_slots(box: Box) -> None:
    source = box.work / "source"
    source.mkdir()
    for item in ("pyproject.toml", "README.md", "gateway", "drivers", "config", "systemd"):
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, source / item)
        else:
            shutil.copy2(REPO / item, source / item)
    set_version(source, MANUAL)
    out = install(box.sandbox, "--source", f"{WORK}/source")
    assert f"removed {STATE_DIR}/current" in out
    assert f"removed {STATE_DIR}/slots" in out
    until(lambda: running(box.sandbox), "the unit running")
    beat = until(lambda: (b := box.heartbeat())["firmware"]["version"] == MANUAL and b,
                 "a heartbeat of the installed version")
    assert beat["firmware"]["slot"] is None
    assert box.sh(f"test -e {STATE_DIR}/current", check=False).returncode == 1
    # The retained manifest is older than what runs now.
    report = box.firmware_state("failed", 30)
    assert report["reason"] == f"not newer than the running {MANUAL}"
