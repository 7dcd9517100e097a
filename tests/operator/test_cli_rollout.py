"""``edge-gateway rollout`` around the fleet test: what it re-signs, what it refuses to
start from, and a manifest replaced under it. Real processes, keys and Mosquitto."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Broker, retained
from signing import publish

from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring, read_public_key
from gateway.trust.payload import FirmwarePayload, parse_firmware

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "gw/firmware/stable/manifest"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), capture_output=True, text=True, check=False,
                          timeout=60, cwd=cwd, env=ENV)


@pytest.fixture
def ops(tmp_path: Path) -> Path:
    for name in ("ops", "other"):
        assert run("keygen", "--out", name, cwd=tmp_path).returncode == 0
    (tmp_path / "bundle.tar.gz").write_bytes(b"wheels" * 1000)
    return tmp_path


def release(broker: Broker, ops: Path, *extra: str, key: str = "ops.key",
            version: str = "1.0.0") -> None:
    result = run("release", "--broker", broker.url, "--key", key, "--channel", "stable",
                 "--version", version, "--artifact", "bundle.tar.gz",
                 "--url", "http://updates.example.net/b.tar.gz", *extra, cwd=ops)
    assert result.returncode == 0, result.stderr


def rollout_args(broker: Broker, *extra: str, version: str = "1.0.0") -> list[str]:
    return ["rollout", "--broker", broker.url, "--key", "ops.key", "--channel", "stable",
            "--version", version, "--max-failure-rate", "0.1", "--settle", "0.2", *extra]


def manifest(broker: Broker, ops: Path) -> FirmwarePayload:
    keyring = Keyring([read_public_key(ops / "ops.pub")])
    return parse_firmware(verify(retained(broker.port, TOPIC).payload, keyring).payload)


def test_each_step_re_signs_the_same_release_and_a_halted_one_resumes(
    broker: Broker, ops: Path
) -> None:
    release(broker, ops, "--percent", "30", "--salt", "spring", "--ttl", "600", "--halt")
    before = manifest(broker, ops)
    result = run(*rollout_args(broker, "--steps", "10,50", "--soak", "0.2"), cwd=ops)
    assert (result.returncode, result.stderr) == (0, ""), result.stdout
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "stable 1.0.0 was halted at 30 %; the rollout resumes it",
        "0 devices of channel stable can take 1.0.0 (0 online)",
        "10 %: skipped, the release is at 30 % already",
        "50 %: published on gw/firmware/stable/manifest",
    ]
    assert "50 %: only 0 reported, fewer than --min-reports 5: the failure rate was not " \
           "judged" in lines
    assert "stable 1.0.0: rollout complete at 50 %" in lines
    after = manifest(broker, ops)
    assert (after.rollout.percent, after.halt) == (50, False)
    same = ("channel", "version", "url", "sha256", "size")
    assert [getattr(after, name) for name in same] == [getattr(before, name) for name in same]
    assert after.rollout.salt == "spring"
    assert after.expires_at - after.issued_at == 600
    assert after.issued_at > before.issued_at


@pytest.mark.parametrize(("setup", "message"), [
    ("none", "edge-gateway: no manifest on gw/firmware/stable/manifest: publish the release "
     "first (edge-gateway release)"),
    ("other key", "edge-gateway: the manifest on gw/firmware/stable/manifest is refused: "
     "unknown key (it is not signed by this key, kid {kid})"),
    ("other version", "edge-gateway: the manifest on gw/firmware/stable/manifest releases "
     "0.9.0, not 1.0.0: release 1.0.0 first (edge-gateway release)"),
    ("junk", "edge-gateway: the manifest on gw/firmware/stable/manifest is refused: "
     "not json"),
])
def test_refuses_to_start_from_anything_but_this_release_signed_with_this_key(
    broker: Broker, ops: Path, setup: str, message: str
) -> None:
    if setup == "other key":
        release(broker, ops, "--percent", "1", key="other.key")
    elif setup == "other version":
        release(broker, ops, "--percent", "1", version="0.9.0")
    elif setup == "junk":
        publish(broker.port, TOPIC, b"{{{")
    before = None if setup == "none" else retained(broker.port, TOPIC).payload
    result = run(*rollout_args(broker, "--steps", "100", "--soak", "1"), cwd=ops)
    kid = read_public_key(ops / "ops.pub").kid
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == message.format(kid=kid) + "\n"
    if before is not None:
        assert retained(broker.port, TOPIC).payload == before  # nothing re-signed


@pytest.mark.parametrize(("option", "value"), [
    ("--steps", "10,5"), ("--steps", "0,100"), ("--max-failure-rate", "1"),
    ("--max-failure-rate", "-0.1"), ("--min-reports", "0"), ("--report-timeout", "0"),
    ("--version", "v-one")])
def test_bad_arguments_are_usage_errors(ops: Path, option: str, value: str) -> None:
    args = ["rollout", "--broker", "mqtt://127.0.0.1:1", "--key", "ops.key", "--channel",
            "stable", "--version", "1.0.0", "--steps", "100", "--soak", "1",
            "--max-failure-rate", "0.1", option, value]
    result = run(*args, cwd=ops)
    assert result.returncode == 2
    assert f"argument {option}" in result.stderr


def test_a_manifest_replaced_by_another_publisher_stops_the_rollout(
    broker: Broker, ops: Path
) -> None:
    release(broker, ops, "--percent", "0")
    proc = subprocess.Popen(command(*rollout_args(broker, "--steps", "50,100", "--soak", "60")),
                            cwd=ops, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while manifest(broker, ops).rollout.percent != 50:
            assert time.monotonic() < deadline, "the rollout never published its first step"
            time.sleep(0.2)
        release(broker, ops, "--percent", "50", "--halt")  # another operator stops it
        stopped = manifest(broker, ops)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out
    assert err == ("edge-gateway: rollout stopped: another publisher replaced the manifest on "
                   "gw/firmware/stable/manifest (the rollout published nothing more)\n")
    assert manifest(broker, ops) == stopped  # left as the other publisher put it
