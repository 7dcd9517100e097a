"""The service under a real systemd: ``systemd/install.sh`` and the unit, as a device runs them.

``systemd-sandbox`` boots systemd as PID 1 in throw-away namespaces (an overlay over this
machine's root, loopback only). One sandbox serves the whole module, and the tests are the
steps of one scenario, in order: install.sh from wheels built here (the sandbox has no
network, so pip inside gets ``PIP_NO_INDEX=1 PIP_FIND_LINKS``), READY, the demo
configuration against a Mosquitto inside, STATUS= following the uplink, reload, the
watchdog and ``Restart=`` at work, no restart loop on an invalid file, the ``shutdown``
status on stop, a second install.sh that changes nothing, and uninstall.

They need root and the tool; otherwise they skip, saying which is missing. The tool is
looked for in ``$SYSTEMD_SANDBOX``, ``../shared/tools/`` beside the repository,
``/work/shared/tools/``, then on PATH.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.systemd

REPO = Path(__file__).resolve().parents[2]
TOOL = "systemd-sandbox"
UNIT = "edge-gateway"
# Paths inside the sandbox: the repository (read-only) and a work directory shared with it.
SRC = "/srv/edge-gateway"
WORK = "/srv/work"
CONF = "/etc/edge-gateway/gateway.yaml"
# The sandbox has a network namespace of its own: any port is free there.
BROKER_PORT = 18830
BROKER_URL = f"mqtt://127.0.0.1:{BROKER_PORT}"
STATUS_TOPIC = "gw/demo-pi/status"  # the demo config's topic_prefix and device_id
STATUS_LATENCY_S = 2.0


def find_tool() -> str | None:
    configured = os.environ.get("SYSTEMD_SANDBOX")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"SYSTEMD_SANDBOX={configured} is not an executable")
        return configured
    for candidate in (REPO.parent / "shared" / "tools" / TOOL, Path("/work/shared/tools") / TOOL):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(TOOL)


@dataclass
class Sandbox:
    tool: str
    name: str

    def sh(self, script: str, *, env: dict[str, str] | None = None, check: bool = True,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
        setenv = [a for k, v in (env or {}).items() for a in ("--setenv", f"{k}={v}")]
        result = subprocess.run(
            [self.tool, "exec", self.name, *setenv, "--", "/bin/sh", "-c", script],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{script!r} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def show(self, *properties: str) -> dict[str, str]:
        out = self.sh(f"systemctl show -p {','.join(properties)} {UNIT}").stdout
        return dict(line.split("=", 1) for line in out.splitlines())

    def journal(self, **match: str) -> list[dict[str, Any]]:
        """The unit's journal entries (the daemon's and systemd's about it) with these fields."""
        filters = " ".join(f"{key}={value}" for key, value in match.items())
        out = self.sh(f"journalctl -o json --no-pager -u {UNIT} {filters}")
        return [json.loads(line) for line in out.stdout.splitlines()]

    def retained_status(self) -> dict[str, Any]:
        out = self.sh(f"mosquitto_sub -p {BROKER_PORT} -t {STATUS_TOPIC} -q 1 -C 1 -W 5").stdout
        return dict(json.loads(out))

    def start_broker(self) -> None:
        self.sh(f"systemd-run --quiet --collect --unit=test-broker "
                f"/usr/sbin/mosquitto -c {WORK}/mosquitto.conf")

    def stop_broker(self) -> None:
        self.sh("systemctl stop test-broker")


def until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return result


def build_wheels(into: Path, cache: Path | None = None) -> None:
    """Wheels of everything install.sh's pip needs: the dependencies and the build system;
    with a ``cache`` (pytest's), built there once per requirement list and Python."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    if cache is not None:
        key = hashlib.sha256(json.dumps([sorted(requirements), sys.version,
                                         sys.platform]).encode()).hexdigest()[:16]
        built = cache / f"wheels-{key}"
        if not (built / ".complete").exists():
            shutil.rmtree(built, ignore_errors=True)
            build_wheels(built)
            (built / ".complete").touch()
        shutil.copytree(built, into, ignore=shutil.ignore_patterns(".complete"))
        return
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "-w", str(into), *requirements],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def demo_config() -> str:
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["state_dir"] = "/var/lib/edge-gateway"  # the unit's only writable place
    config["mqtt"]["brokers"] = [BROKER_URL]
    # Short reconnect waits, so the uplink finds the broker as soon as it is up.
    config["mqtt"]["backoff"] = {"initial_s": 0.2, "max_s": 1.0}
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def box(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-sandbox boots systemd as PID 1 in new namespaces")
    tool = find_tool()
    if tool is None:
        pytest.skip(f"{TOOL} not found ($SYSTEMD_SANDBOX, {REPO.parent}/shared/tools, "
                    "/work/shared/tools, PATH)")
    # Not under /tmp: the sandbox gets an empty /tmp of its own.
    work = Path(tempfile.mkdtemp(prefix="edge-gateway-systemd-", dir="/var/tmp"))
    work.chmod(0o755)
    try:
        build_wheels(work / "wheels", request.config.cache.mkdir("systemd-wheels"))
        (work / "gateway.yaml").write_text(demo_config())
        (work / "mosquitto.conf").write_text(
            f"listener {BROKER_PORT} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        name = f"edge-gateway-test-{os.getpid()}"
        started = subprocess.run(
            [tool, "start", "-q", "--name", name, "--timeout", "900",
             "--bind", f"{work}:{WORK}", "--ro-bind", f"{REPO}:{SRC}"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert started.returncode == 0, started.stderr
        try:
            yield Sandbox(tool, name)
        finally:
            subprocess.run([tool, "stop", name], capture_output=True, timeout=60, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def install(box: Sandbox, *args: str) -> str:
    result = box.sh(
        f"{SRC}/systemd/install.sh {' '.join(args)}",
        env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": f"{WORK}/wheels"},
        timeout=300,
    )
    assert result.stderr == "", result.stderr
    return result.stdout


def running(box: Sandbox) -> dict[str, str]:
    state = box.show("ActiveState", "SubState", "MainPID", "NRestarts", "StatusText")
    return state if state["ActiveState"] == "active" and state["MainPID"] != "0" else {}


def test_install_starts_the_unit_and_it_reports_ready(box: Sandbox) -> None:
    out = install(box)
    assert "created /etc/systemd/system/edge-gateway.service" in out
    assert "started edge-gateway" in out
    # Type=notify: systemctl start returned, so READY=1 came, with a first STATUS=.
    state = box.show("Type", "ActiveState", "SubState", "StatusText", "User")
    assert state["Type"] == "notify"
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    assert "; sensors " in state["StatusText"]
    assert box.sh(f"stat -c %U /proc/$(systemctl show -P MainPID {UNIT})").stdout.strip() \
        == "edge-gateway"


def status_seen(box: Sandbox, prefix: str) -> float:
    """Polls STATUS= inside the sandbox; returns when it first started with ``prefix``."""
    out = box.sh(
        f"timeout 20 sh -c 'until systemctl show -P StatusText {UNIT} | grep -q \"^{prefix}\"; "
        "do sleep 0.05; done' && date +%s.%N"
    ).stdout
    return float(out)


def logged(box: Sandbox, event: str, pid: str, after: float) -> float:
    """When journald got the daemon's first ``event`` since ``after``."""

    def since() -> list[float]:
        stamps = [int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in box.journal(EVENT=event, _PID=pid)]
        return [t for t in stamps if t > after]

    return float(min(until(since, f"{event} in the journal")))


def test_status_follows_the_uplink_at_once(box: Sandbox) -> None:
    box.sh(f"install -m 0640 -g edge-gateway {WORK}/gateway.yaml {CONF}")
    box.sh(f"systemctl restart {UNIT}")
    state = until(lambda: running(box), "the unit running the demo config")
    pid = state["MainPID"]
    assert state["StatusText"].startswith((f"connecting to {BROKER_URL}; ",
                                           "broker unreachable (ConnectionRefusedError")), state

    # The sandbox shares this machine's clock: its times and journald's compare.
    start = time.time()
    box.start_broker()
    seen = status_seen(box, f"connected to {BROKER_URL}; sensors ")
    latency = seen - logged(box, "uplink.connected", pid, start)
    print(f"STATUS= connected {latency * 1000:.0f} ms after the connected log line")
    assert latency < STATUS_LATENCY_S

    stop = time.time()
    box.stop_broker()
    seen = status_seen(box, "broker unreachable (")
    latency = seen - logged(box, "uplink.disconnected", pid, stop)
    print(f"STATUS= unreachable {latency * 1000:.0f} ms after the disconnected log line")
    assert latency < STATUS_LATENCY_S

    box.start_broker()
    status_seen(box, f"connected to {BROKER_URL}; sensors 5/5 ok; queue ")
    assert box.retained_status()["state"] == "online"
    assert running(box)["MainPID"] == pid


def test_reload_keeps_the_main_pid(box: Sandbox) -> None:
    pid = until(lambda: running(box), "the unit running")["MainPID"]
    box.sh(f"systemctl reload {UNIT}")
    until(lambda: box.journal(EVENT="config.reloaded", _PID=pid), "config.reloaded")
    assert running(box)["MainPID"] == pid


@contextlib.contextmanager
def shortened(box: Sandbox, settings: str) -> Iterator[None]:
    """The unit with ``settings`` (``[Service]`` lines) from a runtime drop-in, restarted;
    as installed again on the way out."""
    dropin = f"/run/systemd/system/{UNIT}.service.d"
    box.sh(f"mkdir -p {dropin} && printf '[Service]\\n{settings}\\n' >{dropin}/test.conf && "
           f"systemctl daemon-reload && systemctl restart {UNIT}")
    try:
        yield
    finally:
        box.sh(f"rm -r {dropin} && systemctl daemon-reload && systemctl restart {UNIT}")


# What these two tests hold is that a restart comes, not how long the unit waits first: its
# RestartSec=5 is shortened to 1 s.
def test_restart_after_kill_9(box: Sandbox) -> None:
    with shortened(box, "RestartSec=1"):
        before = until(lambda: running(box), "the unit running")
        box.sh(f"kill -9 {before['MainPID']}")
        after = until(lambda: (s := running(box)) and s["MainPID"] != before["MainPID"] and s,
                      "a new main process after SIGKILL")
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1


def test_the_watchdog_restarts_a_stopped_daemon(box: Sandbox) -> None:
    # The unit's WatchdogSec=30 shortened to 3 s as well.
    with shortened(box, "WatchdogSec=3\\nRestartSec=1"):
        before = until(lambda: running(box), "the unit running")
        stopped = time.time()
        box.sh(f"kill -STOP {before['MainPID']}")
        after = until(lambda: (s := running(box)) and s["MainPID"] != before["MainPID"] and s,
                      "a new main process after the watchdog timeout")
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
        messages = [e["MESSAGE"] for e in box.journal(_PID="1")
                    if int(e["__REALTIME_TIMESTAMP"]) / 1e6 > stopped]
        assert any("Watchdog timeout" in m for m in messages), messages


def test_an_invalid_file_stops_the_unit_without_a_restart_loop(box: Sandbox) -> None:
    box.sh(f"cp {CONF} {WORK}/good.yaml && echo 'no_such_key: 1' >>{CONF}")
    try:
        assert box.sh(f"systemctl restart {UNIT}", check=False).returncode != 0
        # systemd decided at the exit: a restart it means to make waits out RestartSec in
        # "activating/auto-restart"; "failed" is the end, and exit status 2 is why.
        failed = box.show("ActiveState", "SubState", "ExecMainStatus",
                          "RestartPreventExitStatus")
        assert (failed["ActiveState"], failed["SubState"], failed["ExecMainStatus"]) == (
            "failed", "failed", "2"), failed
        assert "2" in failed["RestartPreventExitStatus"].split(), failed
    finally:
        box.sh(f"install -m 0640 -g edge-gateway {WORK}/good.yaml {CONF} && systemctl start {UNIT}")


def test_stop_publishes_the_shutdown_status(box: Sandbox) -> None:
    until(lambda: running(box), "the unit running")
    online = until(lambda: (s := box.retained_status())["state"] == "online" and s,
                   "the retained online status")
    box.sh(f"systemctl stop {UNIT}")
    assert box.show("ActiveState", "Result") == {"ActiveState": "inactive", "Result": "success"}
    status = box.retained_status()
    assert (status["state"], status["reason"]) == ("offline", "shutdown")
    assert status["ts"] > online["ts"]


def test_a_second_install_changes_nothing(box: Sandbox) -> None:
    box.sh(f"systemctl start {UNIT}")
    pid = until(lambda: running(box), "the unit running")["MainPID"]
    out = install(box)
    assert out.splitlines()[-1] == "install.sh: done, nothing changed", out
    assert not [line for line in out.splitlines() if line.startswith(("run:", "created"))]
    assert running(box)["MainPID"] == pid


def test_uninstall_removes_the_unit(box: Sandbox) -> None:
    pid = until(lambda: running(box), "the unit running")["MainPID"]
    out = install(box, "--uninstall")
    assert "stopped and disabled edge-gateway" in out
    assert box.show("LoadState", "ActiveState") == {"LoadState": "not-found",
                                                    "ActiveState": "inactive"}
    gone = box.sh("ls /etc/systemd/system/edge-gateway.service /opt/edge-gateway "
                  "/usr/local/bin/edge-gateway", check=False)
    assert gone.stdout == "" and gone.stderr.count("No such file") == 3, gone.stderr
    assert box.sh(f"test -f {CONF}", check=False).returncode == 0  # kept without --purge
    assert box.sh(f"test -e /proc/{pid}", check=False).returncode == 1
