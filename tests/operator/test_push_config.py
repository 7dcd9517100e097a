"""``edge-gateway push-config`` as an operator runs it: keys from ``keygen``, real daemons
trusting them, a real Mosquitto, the command as a process."""

from __future__ import annotations

import getpass
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Broker,
    DaemonProcess,
    Subscriber,
    device_config,
    free_port,
    retained,
    retained_snapshot,
    wait_for_port,
    write_config,
)
from signing import clear_retained, publish
from tls_helpers import make_pki

from gateway.operator.pushconfig import answer
from gateway.trust.envelope import sign, verify
from gateway.trust.keys import Keyring, PrivateKey, read_public_key
from gateway.trust.payload import parse_config

ROOT = Path(__file__).resolve().parents[2]
SENSORS = [{"name": "room", "driver": "sht3x", "bus": "sim", "interval_s": 0.5}]


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=False,
        cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"},
    )


@pytest.fixture(scope="module")
def mqtt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ops`` (trusted by every device) and ``stranger`` (by none), made by keygen."""
    folder = tmp_path_factory.mktemp("keys")
    for name in ("ops", "stranger"):
        assert cli("keygen", "--out", name, cwd=folder).returncode == 0
    return folder


class Device:
    """A daemon trusting ``ops.pub``; stopped (or killed) by ``close``."""

    count = 0

    def __init__(self, broker: Broker, workdir: Path, keys: Path, groups: list[str]) -> None:
        Device.count += 1
        self.id = f"push-{os.getpid()}-{Device.count}"
        self.path = write_config(workdir / f"{self.id}.yaml", device_config(
            broker.port, workdir / f"{self.id}-state", device_id=self.id, groups=groups,
            sensors=SENSORS, remote_config={"trusted_keys": [str(keys / "ops.pub")]},
            logging={"level": "info", "format": "json"},
        ))
        status = Subscriber(broker.port, f"gw/{self.id}/status")
        self.daemon = DaemonProcess(self.path)
        try:
            status.until(lambda m: m.json()["state"] == "online")
        except BaseException:
            self.daemon.kill()
            raise
        finally:
            status.close()

    def show(self) -> dict[str, Any]:
        out = cli("config", "show", "-c", str(self.path), "--json", cwd=self.path.parent)
        assert out.returncode == 0, out.stderr
        shown: dict[str, Any] = json.loads(out.stdout)
        return shown

    def close(self) -> None:
        if self.daemon.proc.poll() is None:
            assert self.daemon.stop() == 0
        self.daemon.kill()


@pytest.fixture
def devices(mqtt: Broker, tmp_path: Path, keys: Path) -> Iterator[list[Device]]:
    started: list[Device] = []
    try:
        yield started
    finally:
        for device in started:
            device.close()


def push(broker: Broker, keys: Path, fragment: Path, *to: str, version: int,
         key: str = "ops.key", timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return cli("push-config", "--broker", broker.url, "--key", str(keys / key), *to,
               "--version", str(version), "--timeout", str(timeout), str(fragment),
               cwd=fragment.parent)


def fragment(tmp_path: Path, text: str, name: str = "update.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_applied_exits_0_and_prints_it(mqtt: Broker, keys: Path, tmp_path: Path,
                                       devices: list[Device]) -> None:
    devices.append(device := Device(mqtt, tmp_path, keys, ["line-a"]))
    update = fragment(tmp_path, "heartbeat:\n  interval_s: 7\n")
    result = push(mqtt, keys, update, "--device", device.id, version=3)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"pushed version 3 on gw/{device.id}/config/set (kid ")
    assert lines[-1] == f"{device.id}: applied"
    assert result.stderr == ""
    shown = device.show()
    assert shown["config"]["heartbeat"] == {"interval_s": 7}
    assert shown["origins"]["heartbeat"] == "device v3"

    # What stays retained for the device is the signed update (docs/PROTOCOL.md section 7.1).
    envelope = retained(mqtt.port, f"gw/{device.id}/config/set").payload
    verified = verify(envelope, Keyring([read_public_key(keys / "ops.pub")]))
    payload = parse_config(verified.payload)
    assert (payload.device, payload.group, payload.version) == (device.id, None, 3)
    assert payload.config == {"heartbeat": {"interval_s": 7}}
    assert 86_000 < payload.expires_at - payload.issued_at <= 86_400

    # An empty fragment takes the device's layer back.
    result = push(mqtt, keys, fragment(tmp_path, "{}\n", "undo.yaml"), "--device", device.id,
                  version=4)
    assert (result.returncode, result.stdout.splitlines()[-1]) == (0, f"{device.id}: applied")
    assert "heartbeat" not in device.show()["origins"]


def test_rejections_exit_1_with_the_devices_reason(mqtt: Broker, keys: Path, tmp_path: Path,
                                                   devices: list[Device]) -> None:
    devices.append(device := Device(mqtt, tmp_path, keys, []))
    update = fragment(tmp_path, "heartbeat:\n  interval_s: 9\n")
    assert push(mqtt, keys, update, "--device", device.id, version=5).returncode == 0

    # The device ignores its applied version: the retained "applied" of version 5 is not
    # taken for an answer to this push of version 5.
    result = push(mqtt, keys, update, "--device", device.id, version=5, timeout=2)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        f"{device.id}: timeout: no answer within 2 s (it had applied version 5 already, "
        "and ignores a version it has and counts one below it; push a --version above 5)")

    # Signed by a key the device does not trust: anyone could have sent it, so the device
    # only counts it, and says nothing on config/state.
    result = push(mqtt, keys, update, "--device", device.id, version=6, key="stranger.key",
                  timeout=2)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith(f"{device.id}: timeout: no answer ")
    assert "signed by a key it does not trust is only counted" in result.stdout

    # Below the applied version: a replay anyone could make from the broker, so it is only
    # counted; push-config knows the version the device has and says so.
    result = push(mqtt, keys, update, "--device", device.id, version=4, timeout=2)
    assert (result.returncode, result.stdout.splitlines()[-1]) == (
        1, f"{device.id}: timeout: no answer within 2 s (it had applied version 5 already, "
        "and ignores a version it has and counts one below it; push a --version above 5)")

    # A fragment the models accept, that the device's whole config does not: its reason.
    bad = fragment(tmp_path, "remote_config:\n  trusted_keys: []\n", "empty.yaml")
    result = push(mqtt, keys, bad, "--device", device.id, version=7)
    assert (result.returncode, result.stdout.splitlines()[-1]) == (
        1, f"{device.id}: rejected: invalid config: remote_config.trusted_keys: "
           "cannot be emptied")
    assert device.show()["config"]["heartbeat"] == {"interval_s": 9}


def test_an_invalid_fragment_exits_2_with_its_line_and_publishes_nothing(
    mqtt: Broker, keys: Path, tmp_path: Path
) -> None:
    update = fragment(tmp_path, "heartbeat:\n  interval_s: 7\nsensors:\n  - name: a\n"
                      "    driver: sht3x\n    bus: sim\n    interval_s: -1\nbogus: 1\n")
    result = push(mqtt, keys, update, "--device", "nobody", version=1)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{update}:7: sensors.0.interval_s: Input should be greater than 0",
        f"{update}:8: bogus: unknown key",
    ]
    assert retained_snapshot(mqtt.port, "gw/nobody/config/set") == {}
    # What would run a command on the device: refused before signing, in the device's words.
    local = fragment(tmp_path, "heartbeat: {interval_s: 5}\nfirmware:\n"
                     "  installer: [/bin/sh, -c, id]\n", "local.yaml")
    result = push(mqtt, keys, local, "--device", "nobody", version=1)
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (
        2, "", [f"{local}:3: firmware.installer: cannot be set remotely"])
    assert retained_snapshot(mqtt.port, "gw/nobody/config/set") == {}

    update = fragment(tmp_path, "heartbeat: {interval_s: 5}\ngroups: [line-b]\n"
                      "device_id: other\n")
    result = push(mqtt, keys, update, "--group", "line-a", version=1)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{update}:3: device_id: cannot be set remotely",
        f"{update}:2: groups: cannot be set by a group update (a device's own update can)",
    ]
    assert retained_snapshot(mqtt.port, "gw/group/line-a/config/set") == {}

    broken = fragment(tmp_path, "heartbeat:\n  interval_s: [\n", "broken.yaml")
    result = push(mqtt, keys, broken, "--device", "nobody", version=1)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{broken}:3: YAML syntax error: ")


def test_group_shows_each_online_member_applied(mqtt: Broker, keys: Path, tmp_path: Path,
                                                devices: list[Device]) -> None:
    group = f"line-{os.getpid()}"
    devices.extend(Device(mqtt, tmp_path, keys, groups) for groups in
                   (["other", group], [group], ["other"]))
    first, second, outsider = devices
    update = fragment(tmp_path, "heartbeat:\n  interval_s: 11\n")
    result = push(mqtt, keys, update, "--group", group, version=2)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith("│ push-")}
    assert set(rows) == {first.id, second.id}
    assert all("applied" in row for row in rows.values())
    assert "2/2 answered" in result.stdout
    assert result.stdout.splitlines()[-1] == f"group {group}: 2 applied of 2"
    for device in (first, second):
        assert device.show()["origins"]["heartbeat"] == f"group {group} v2"
    assert "heartbeat" not in outsider.show()["origins"]


def test_a_member_that_does_not_answer_is_silent(mqtt: Broker, keys: Path, tmp_path: Path,
                                                 devices: list[Device]) -> None:
    group = f"ghosts-{os.getpid()}"
    devices.append(device := Device(mqtt, tmp_path, keys, [group]))
    ghost = f"gw/ghost-{os.getpid()}/status"
    publish(mqtt.port, ghost, json.dumps({"state": "online", "groups": [group]}).encode())
    try:
        update = fragment(tmp_path, "heartbeat:\n  interval_s: 13\n")
        result = push(mqtt, keys, update, "--group", group, version=1, timeout=3)
    finally:
        clear_retained(mqtt.port, ghost)
    assert result.returncode == 1
    rows = {line.split()[1]: line.split()[3] for line in result.stdout.splitlines()
            if line.startswith("│ ")}
    assert rows == {device.id: "applied", f"ghost-{os.getpid()}": "silent"}
    assert "1/2 answered" in result.stdout
    assert result.stdout.splitlines()[-1] == f"group {group}: 1 applied, 1 silent of 2"


def test_a_device_that_never_answers_is_a_timeout(mqtt: Broker, keys: Path,
                                                  tmp_path: Path) -> None:
    update = fragment(tmp_path, "heartbeat:\n  interval_s: 7\n")
    started = time.monotonic()
    result = push(mqtt, keys, update, "--device", "absent", version=1, timeout=1.5)
    assert time.monotonic() - started >= 1.5
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        "absent: timeout: no answer within 1.5 s (the update stays retained on "
        "gw/absent/config/set for when it connects; an update signed by a key it does not "
        "trust is only counted, in its heartbeat's config_rejected)")


def test_a_group_with_no_device_online_is_a_failure(mqtt: Broker, keys: Path,
                                                    tmp_path: Path) -> None:
    update = fragment(tmp_path, "heartbeat:\n  interval_s: 7\n")
    result = push(mqtt, keys, update, "--group", "empty", version=1, timeout=1)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith(
        "group empty: no device online names it in its status")


def test_an_unreachable_broker_is_a_runtime_failure(keys: Path, tmp_path: Path) -> None:
    update = fragment(tmp_path, "heartbeat:\n  interval_s: 7\n")
    result = cli("push-config", "--broker", "mqtt://127.0.0.1:1", "--key",
                 str(keys / "ops.key"), "--device", "d", "--version", "1", str(update),
                 cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("edge-gateway: cannot connect to mqtt://127.0.0.1:1: ")


def state(**fields: Any) -> bytes:
    return json.dumps({"scope": "device", "version": 4, "status": "applied", "reason": None,
                       "kid": KID, "ts": 1000.0, **fields}).encode()


KID = "0fe3501758452a2d"


def test_which_states_answer_a_push() -> None:
    assert answer(state(), "device", 4, KID) is not None
    assert answer(state(version=3), "device", 4, KID) is None
    assert answer(state(scope="group:a"), "device", 4, KID) is None
    assert answer(state(kid="1111111111111111"), "device", 4, KID) is None
    assert answer(b"junk", "device", 4, KID) is None
    # A device that names no key in its state (an older release) answers by scope and
    # version alone.
    older = json.loads(state())
    del older["kid"]
    assert str(answer(json.dumps(older).encode(), "device", 4, KID)) == "applied"
    # A rejection that names no version is never taken for this push's answer, however
    # recent: it cannot be told from junk someone else sent.
    unknown = {"version": None, "status": "rejected", "reason": "malformed envelope"}
    assert answer(state(**unknown, ts=time.time()), "device", 4, KID) is None


def test_mqtts_verifies_the_broker_against_the_cas_given(keys: Path, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    broker = Broker(tmp_path)
    tls_port = free_port()
    broker.conf.write_text(
        f"user {getpass.getuser()}\nallow_anonymous true\npersistence false\n"
        f"listener {broker.port} 127.0.0.1\nlistener {tls_port} 127.0.0.1\n"
        f"certfile {pki.server.cert}\nkeyfile {pki.server.key}\n")
    update = fragment(tmp_path, "heartbeat:\n  interval_s: 7\n")
    broker.start()
    try:
        wait_for_port(tls_port)
        for ca in (pki.ca, pki.rogue_ca):
            result = subprocess.run(
                [sys.executable, "-m", "gateway", "push-config", "--broker",
                 f"mqtts://localhost:{tls_port}", "--key", str(keys / "ops.key"), "--device",
                 "tls-dev", "--version", "1", "--timeout", "0.5", str(update)],
                capture_output=True, text=True, check=False, timeout=60,
                env={**os.environ, "PYTHONPATH": str(ROOT), "SSL_CERT_FILE": str(ca.cert)})
            assert result.returncode == 1
            if ca is pki.ca:  # connected and published; nobody answers
                assert result.stdout.splitlines()[-1].startswith("tls-dev: timeout: ")
                assert retained(broker.port, "gw/tls-dev/config/set").payload
            else:
                assert result.stdout == ""
                assert result.stderr.startswith(
                    f"edge-gateway: cannot connect to mqtts://localhost:{tls_port}: ")
                assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    finally:
        broker.stop()


def test_under_a_flood_of_junk_each_push_gets_the_devices_own_answer(
        mqtt: Broker, keys: Path, tmp_path: Path, devices: list[Device]) -> None:
    devices.append(device := Device(mqtt, tmp_path, keys, []))
    topic = f"gw/{device.id}/config/set"
    stranger = PrivateKey.from_text((keys / "stranger.key").read_text())
    forged = sign(json.dumps({"kind": "config", "device": device.id, "version": 99,
                              "issued_at": time.time(), "expires_at": time.time() + 3600,
                              "config": {}}).encode(), stranger)
    junk = [forged, b"junk", b'{"alg":"Ed25519"}']
    lines = b"".join((b"x" * 70_000 if n % 100 == 0 else junk[n % len(junk)]) + b"\n"
                     for n in range(10_000))
    chunks = [lines[n * len(lines) // 10:(n + 1) * len(lines) // 10] for n in range(10)]
    states = Subscriber(mqtt.port, f"gw/{device.id}/config/state")
    done = threading.Event()

    def flood() -> None:
        for chunk in chunks:  # 10,000 messages, spread over the pushes
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-t",
                            topic, "-q", "1", "-l"], input=chunk, check=True, timeout=60)
            if done.wait(0.2):
                return

    flooding = threading.Thread(target=flood)
    flooding.start()
    try:
        results = []
        for version in (1, 2, 3):
            update = fragment(tmp_path, f"heartbeat:\n  interval_s: {10 + version}\n")
            results.append(push(mqtt, keys, update, "--device", device.id, version=version,
                                timeout=60))
    finally:
        done.set()
        flooding.join()
    said = []
    try:
        while True:
            said.append(states.get(3))
    except queue.Empty:
        pass
    finally:
        states.close()
    for version, result in enumerate(results, 1):
        assert (result.returncode, result.stdout.splitlines()[-1]) == (
            0, f"{device.id}: applied"), (version, result.stdout)
    # Nothing but the outcomes of the three updates was said on config/state.
    assert [(s.json()["version"], s.json()["status"]) for s in said] == [
        (1, "applied"), (2, "applied"), (3, "applied")]
    final = retained(mqtt.port, f"gw/{device.id}/config/state").json()
    assert (final["version"], final["status"]) == (3, "applied")
    assert device.show()["config"]["heartbeat"] == {"interval_s": 13}
