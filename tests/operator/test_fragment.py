"""The fragment ``push-config`` signs, checked before anything is signed: in process, on
real files, with the device's own rules and words."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import file as configfile
from gateway.operator import fragment

HEX = "ab" * 32


def issues(path: Path, text: str, scope: str = "device") -> list[str]:
    path.write_text(text)
    with pytest.raises(configfile.ConfigError) as caught:
        fragment.read(path, scope)
    return [str(issue) for issue in caught.value.issues]


def test_local_only_keys_are_refused_with_the_devices_words(tmp_path: Path) -> None:
    path = tmp_path / "update.yaml"
    assert issues(path, "heartbeat: {interval_s: 5}\n"
                        "firmware:\n  installer: [/bin/sh, -c, id]\n"
                        "mqtt:\n  brokers: [mqtt://b:1883]\n  username: u\n"
                        "  password_file: /etc/shadow\n"
                        "  tls:\n    ca_file: ca.pem\n"
                        f"remote_config:\n  trusted_keys:\n    - {HEX}\n    - ops.pub\n") == [
        f"{path}:3: firmware.installer: cannot be set remotely",
        f"{path}:7: mqtt.password_file: cannot be set remotely",
        f"{path}:9: mqtt.tls.ca_file: cannot be set remotely",
        f"{path}:13: remote_config.trusted_keys.1: cannot be set remotely",
    ]


def test_inline_keys_and_null_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "update.yaml"
    path.write_text(f"firmware: {{installer: null}}\nremote_config:\n  trusted_keys: [{HEX}]\n")
    assert fragment.read(path, "device") == {"firmware": {"installer": None},
                                             "remote_config": {"trusted_keys": [HEX]}}
