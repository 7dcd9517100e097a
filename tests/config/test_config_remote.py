"""``remote_config``: trusted keys as hex or key files, checked at load with their line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.file import load
from gateway.config.models import RemoteConfigConfig
from gateway.trust.keys import Keyring, PrivateKey

BASE = """\
device_id: dev-1
mqtt:
  brokers: ["mqtt://127.0.0.1:1883"]
"""


def write_config(directory: Path, remote: str) -> Path:
    path = directory / "gw.yaml"
    path.write_text(BASE + "remote_config:\n" + remote)
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check-config", str(path)])
    return code, capsys.readouterr().err.splitlines()


def test_defaults() -> None:
    remote = RemoteConfigConfig()
    assert (remote.trusted_keys, remote.max_envelope_bytes, remote.apply_timeout_s,
            remote.inbox_size) == ([], 65536, 30.0, 32)


def test_keys_in_hex_and_in_files_relative_to_the_config_file(tmp_path: Path) -> None:
    inline, in_file = PrivateKey.generate(), PrivateKey.generate()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ops.pub").write_text(in_file.public.text() + "\n")
    path = write_config(tmp_path, f"""\
  trusted_keys:
    - {inline.public.text()}
    - keys/ops.pub
  max_envelope_bytes: 4096
  apply_timeout_s: 5
  inbox_size: 8
""")
    remote = load(path).remote_config
    assert remote.trusted_keys == [inline.public.text(), str(tmp_path / "keys" / "ops.pub")]
    assert (remote.max_envelope_bytes, remote.apply_timeout_s, remote.inbox_size) == (4096, 5, 8)
    assert Keyring.load(remote.trusted_keys) == Keyring([inline.public, in_file.public])


def test_each_bad_entry_is_reported_on_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk.pub").write_text("not a key\n")
    path = write_config(tmp_path, """\
  trusted_keys:
    - missing.pub
    - junk.pub
    - abcdef0123
    - ops.key
    - 42
""")
    assert check(path, capsys) == (2, [
        f"{path}:8: remote_config.trusted_keys.2: a public key is 64 hex characters, "
        "this one has 10",
        f"{path}:9: remote_config.trusted_keys.3: a .key file is a private key: "
        "list its .pub file here",
        f"{path}:10: remote_config.trusted_keys.4: expected a public key (64 hex characters) "
        "or a key file's path",
    ])
    path = write_config(tmp_path, "  trusted_keys:\n    - missing.pub\n    - junk.pub\n")
    assert check(path, capsys) == (2, [
        f"{path}:6: remote_config.trusted_keys.0: cannot read key file "
        f"{tmp_path / 'missing.pub'}: No such file or directory",
        f"{path}:7: remote_config.trusted_keys.1: key file {tmp_path / 'junk.pub'} "
        "does not hold a public key (64 hex characters)",
    ])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_envelope_bytes: 100", "Input should be greater than or equal to 1024"),
        ("apply_timeout_s: 0", "Input should be greater than 0"),
        ("inbox_size: 0", "Input should be greater than or equal to 1"),
        ("colour: blue", "unknown key"),
    ],
)
def test_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str,
                message: str) -> None:
    path = write_config(tmp_path, f"  {setting}\n")
    code, errors = check(path, capsys)
    assert (code, errors) == (2, [f"{path}:5: remote_config.{setting.split(':')[0]}: {message}"])


def test_a_key_path_that_is_a_fifo_is_refused_on_its_line_without_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No writer ever opens the FIFO: a check that opened it to read would wait for ever.
    os.mkfifo(tmp_path / "ops.pub")
    (tmp_path / "keys").mkdir()
    path = write_config(tmp_path, "  trusted_keys:\n    - ops.pub\n    - keys\n")
    assert check(path, capsys) == (2, [
        f"{path}:6: remote_config.trusted_keys.0: cannot read key file "
        f"{tmp_path / 'ops.pub'}: a FIFO, not a regular file",
        f"{path}:7: remote_config.trusted_keys.1: cannot read key file "
        f"{tmp_path / 'keys'}: a directory, not a regular file",
    ])
