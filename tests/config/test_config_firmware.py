"""The ``firmware`` section: its defaults, its errors as FILE:LINE lines, and the launcher's
reading of ``state_dir`` alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.file import ConfigError, parse, state_dir_of

BASE = """\
device_id: dev-1
mqtt:
  brokers: ["mqtt://127.0.0.1:1883"]
"""


def test_the_defaults() -> None:
    firmware = parse(BASE, "gw.yaml").firmware
    assert (firmware.channel, firmware.health_timeout_s, firmware.max_trial_boots,
            firmware.installer, firmware.install_timeout_s, firmware.progress_interval_s) == (
        "stable", 120.0, 3, None, 900.0, 5.0)
    custom = parse(BASE + 'firmware:\n  installer: ["{venv}/bin/pip", "install", '
                   '"{bundle}/edge_gateway-{version}-py3-none-any.whl"]\n', "gw.yaml")
    assert custom.firmware.installer == ["{venv}/bin/pip", "install",
                                         "{bundle}/edge_gateway-{version}-py3-none-any.whl"]


def test_errors_name_their_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE + "firmware:\n  channel: a/b\n  max_trial_boots: 0\n"
                    '  installer: ["{venv}/bin/pip", "{wheels}"]\n  retries: 3\n')
    assert main(["check-config", str(path)]) == 2
    assert sorted(capsys.readouterr().err.splitlines()) == [
        f"{path}:5: firmware.channel: String should match pattern "
        "'^[A-Za-z0-9][A-Za-z0-9_.-]*$'",
        f"{path}:6: firmware.max_trial_boots: Input should be greater than or equal to 1",
        f"{path}:7: firmware.installer: unknown placeholder {{wheels}} in '{{wheels}}' "
        "(known: {bundle}, {venv}, {version})",
        f"{path}:8: firmware.retries: unknown key",
    ]
    path.write_text(BASE + "firmware:\n  installer: []\n")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == (f"{path}:5: firmware.installer: expected a non-empty "
                                       "list of strings (the installer's argv)\n")


def test_the_launcher_reads_only_state_dir(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    # A key the base install may not know yet must not stop the launcher.
    path.write_text("state_dir: ./var\nsome_newer_key: 1\n")
    assert state_dir_of(path) == tmp_path / "var"
    path.write_text("device_id: x\n")
    assert state_dir_of(path) == Path("/var/lib/edge-gateway")
    path.write_text("state_dir: [1]\n")
    with pytest.raises(ConfigError):
        state_dir_of(path)
    path.write_text("state_dir: [unclosed\n")
    with pytest.raises(ConfigError):
        state_dir_of(path)
