"""``edge-gateway release`` as an operator runs it: a real key, a real bundle file, a real
Mosquitto; what lands retained on the broker is checked with the devices' verifier."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Broker, free_port, retained, retained_snapshot

from gateway.firmware.rollout import eligible
from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring, read_public_key
from gateway.trust.payload import FirmwarePayload, parse_firmware

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "gw/firmware/stable/manifest"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, check=False, timeout=60, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def ops(tmp_path: Path) -> Path:
    assert run("keygen", "--out", "ops", cwd=tmp_path).returncode == 0
    return tmp_path


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "edge-gateway-1.2.0.tar.gz"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # more than one read chunk
    return path


def release(broker: Broker, cwd: Path, bundle: Path, *extra: str,
            version: str = "1.2.0") -> subprocess.CompletedProcess[str]:
    return run("release", "--broker", broker.url, "--key", "ops.key", "--channel", "stable",
               "--version", version, "--artifact", str(bundle),
               "--url", "https://updates.example.net/edge-gateway-1.2.0.tar.gz",
               "--percent", "10", *extra, cwd=cwd)


def manifest(broker: Broker, cwd: Path, topic: str = TOPIC) -> FirmwarePayload:
    keyring = Keyring([read_public_key(cwd / "ops.pub")])
    return parse_firmware(verify(retained(broker.port, topic).payload, keyring).payload)


def test_release_publishes_a_signed_retained_manifest_devices_verify(
    broker: Broker, ops: Path, bundle: Path
) -> None:
    before = time.time()
    result = release(broker, ops, bundle)
    assert (result.returncode, result.stderr) == (0, "")
    kid = read_public_key(ops / "ops.pub").kid
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert result.stdout.splitlines() == [
        f"released stable 1.2.0 to 10 % on {TOPIC} (kid {kid})",
        f"sha256 {digest}, {bundle.stat().st_size} bytes, salt stable:1.2.0",
    ]
    got = manifest(broker, ops)
    assert (got.kind, got.channel, str(got.version)) == ("firmware", "stable", "1.2.0")
    assert got.url == "https://updates.example.net/edge-gateway-1.2.0.tar.gz"
    assert (got.sha256, got.size) == (digest, bundle.stat().st_size)
    assert (got.rollout.percent, got.rollout.salt, got.halt) == (10.0, "stable:1.2.0", False)
    assert before <= got.issued_at <= time.time()
    assert got.expires_at - got.issued_at == 30 * 86400
    got.check_expiry(time.time())


def test_salt_halt_ttl_prefix_and_a_normalised_version(
    broker: Broker, ops: Path, bundle: Path
) -> None:
    result = release(broker, ops, bundle, "--salt", "spring", "--halt", "--ttl", "600",
                     "--prefix", "plant", version="1.3-rc1")
    assert result.returncode == 0, result.stderr
    assert "released stable 1.3rc1 to 10 % (halted) on plant/firmware/stable/manifest" in (
        result.stdout)
    got = manifest(broker, ops, "plant/firmware/stable/manifest")
    assert (str(got.version), got.rollout.salt, got.halt) == ("1.3rc1", "spring", True)
    assert got.expires_at - got.issued_at == 600
    # The salt draws the cohort: the one the devices compute from what they received.
    ids = [f"gw-{n}" for n in range(400)]
    assert [eligible(10, "spring", i) for i in ids] != [
        eligible(10, "stable:1.3rc1", i) for i in ids]


def nothing_retained(broker: Broker, topic: str = TOPIC) -> bool:
    return retained_snapshot(broker.port, topic) == {}


@pytest.mark.parametrize(("change", "message"), [
    (("--url", "ftp://updates.example.net/b.tar.gz"),
     "edge-gateway: the manifest would be refused: malformed payload: url: "
     "expected an http:// or https:// URL"),
    (("--key", "ops.pub"),
     "edge-gateway: key file ops.pub: a .pub file is a public key; use its .key file"),
    (("--artifact", "missing.tar.gz"),
     "edge-gateway: cannot read missing.tar.gz: No such file or directory"),
])
def test_bad_input_is_one_line_exit_2_and_publishes_nothing(
    broker: Broker, ops: Path, bundle: Path, change: tuple[str, str], message: str
) -> None:
    args = {"--key": "ops.key", "--artifact": str(bundle),
            "--url": "https://updates.example.net/b.tar.gz"}
    args[change[0]] = change[1]
    result = run("release", "--broker", broker.url, "--channel", "stable", "--version", "2",
                 "--percent", "1", *[part for item in args.items() for part in item], cwd=ops)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message + "\n")
    assert nothing_retained(broker)


@pytest.mark.parametrize(("option", "value"), [
    ("--percent", "101"), ("--version", "one"), ("--channel", "a/b"), ("--ttl", "0")])
def test_bad_arguments_are_usage_errors(ops: Path, bundle: Path, option: str,
                                        value: str) -> None:
    args = {"--broker": "mqtt://127.0.0.1:1", "--key": "ops.key", "--channel": "stable",
            "--version": "2", "--artifact": str(bundle), "--url": "http://h/b.tar.gz",
            "--percent": "5", option: value}
    result = run("release", *[part for item in args.items() for part in item], cwd=ops)
    assert result.returncode == 2
    assert f"argument {option}" in result.stderr


def test_an_unreachable_broker_is_a_runtime_failure(ops: Path, bundle: Path) -> None:
    result = run("release", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--key", "ops.key",
                 "--channel", "stable", "--version", "2", "--artifact", str(bundle),
                 "--url", "http://h/b.tar.gz", "--percent", "5", cwd=ops)
    assert result.returncode == 1
    assert result.stderr.startswith("edge-gateway: cannot connect to mqtt://127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1
