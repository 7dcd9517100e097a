"""``edge-gateway keygen`` and ``sign`` as an operator runs them: real processes, real files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring, read_public_key
from gateway.trust.payload import parse_config

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=False,
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: os.umask(umask),  # the test process runs no threads meanwhile
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_a_private_key_0600_and_prints_kid_and_public_path(
    tmp_path: Path,
) -> None:
    result = run("keygen", "--out", "ops", cwd=tmp_path, umask=0)
    assert (result.returncode, result.stderr) == (0, "")
    key, pub = tmp_path / "ops.key", tmp_path / "ops.pub"
    assert (mode(key), mode(pub)) == (0o600, 0o644)
    public = read_public_key(pub)
    assert result.stdout.splitlines()[:2] == [
        f"kid: {public.kid}",
        "public key: ops.pub (list it in the devices' remote_config.trusted_keys)",
    ]
    assert len(key.read_text()) == len(pub.read_text()) == 65  # 64 hex and a newline
    assert key.read_text() != pub.read_text()


def test_keygen_never_overwrites_either_file(tmp_path: Path) -> None:
    assert run("keygen", "--out", "ops", cwd=tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = run("keygen", "--out", "ops", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "edge-gateway: ops.key exists; keygen never overwrites a key\n"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    (tmp_path / "other.pub").write_text("kept\n")
    result = run("keygen", "--out", "other", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2, "edge-gateway: other.pub exists; keygen never overwrites a key\n")
    assert not (tmp_path / "other.key").exists()
    assert (tmp_path / "other.pub").read_text() == "kept\n"


def test_keygen_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = run("keygen", "--out", "nowhere/ops", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2, "edge-gateway: cannot write nowhere/ops.key: No such file or directory\n")


def test_sign_then_verify_with_the_library(tmp_path: Path) -> None:
    assert run("keygen", "--out", "ops", cwd=tmp_path).returncode == 0
    payload = (b'{"kind": "config", "device": "dev-1", "version": 2,\r\n'
               b' "issued_at": 1, "expires_at": 4102444800, "config": {}}\n')
    (tmp_path / "update.json").write_bytes(payload)
    result = run("sign", "--key", "ops.key", "update.json", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.endswith("}\n")
    verified = verify(result.stdout.strip().encode(), Keyring.load([str(tmp_path / "ops.pub")]))
    assert verified.payload == payload  # byte for byte, CRLF and trailing newline included
    assert parse_config(verified.payload).version == 2


def test_sign_refuses_what_cannot_be_signed(tmp_path: Path) -> None:
    assert run("keygen", "--out", "ops", cwd=tmp_path).returncode == 0
    (tmp_path / "p.json").write_text("{}")
    cases = {
        ("ops.pub", "p.json"):
            "edge-gateway: key file ops.pub: a .pub file is a public key; use its .key file\n",
        ("gone.key", "p.json"):
            "edge-gateway: cannot read key file gone.key: No such file or directory\n",
        ("ops.key", "gone.json"):
            "edge-gateway: cannot read gone.json: No such file or directory\n",
    }
    for (key, payload), message in cases.items():
        result = run("sign", "--key", key, payload, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", message)


def test_sign_warns_when_devices_would_refuse_the_size(tmp_path: Path) -> None:
    assert run("keygen", "--out", "ops", cwd=tmp_path).returncode == 0
    (tmp_path / "big.json").write_text('"' + "x" * 60000 + '"')
    result = run("sign", "--key", "ops.key", "big.json", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr.startswith("edge-gateway: warning: the envelope is 80")
    assert len(result.stdout) > 65536


def test_the_daemon_side_commands_load_no_crypto(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text('device_id: d\nmqtt: {brokers: ["mqtt://127.0.0.1:1"]}\n')
    probe = (
        "import sys\nfrom gateway.cli import main\n"
        f"assert main(['check-config', {str(config)!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nacl'"
        " or m.startswith(('gateway.operator', 'gateway.trust'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert result.stdout.splitlines()[-1] == "[]"
