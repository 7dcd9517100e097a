"""``edge-gateway check-config``: every error as FILE:LINE: field: message, exit 2."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.file import ConfigError, parse
from gateway.config.models import SERIAL_URL_SCHEMES, parse_broker_url

ROOT = Path(__file__).resolve().parents[2]

VALID = """\
device_id: dev-1
mqtt:
  brokers: ["mqtt://127.0.0.1:1883"]
sensors:
  - name: room
    driver: sht3x
    bus: sim
    interval_s: 1
"""


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    return code, capsys.readouterr().err.splitlines()


def test_valid_file_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(tmp_path, VALID, capsys) == (0, [])


@pytest.mark.parametrize("name", ["demo.yaml", "example.yaml"])
def test_shipped_configs_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "config" / name)]) == 0


def test_unknown_key_wrong_type_and_syntax_error_each_name_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    text = VALID.replace("  brokers:", "  colour: blue\n  brokers:").replace(
        "interval_s: 1", "interval_s: often"
    )
    code, errors = check(tmp_path, text, capsys)
    assert code == 2
    assert errors == [
        f"{path}:3: mqtt.colour: unknown key",
        f"{path}:9: sensors.0.interval_s: Input should be a valid number",
    ]

    code, errors = check(tmp_path, VALID.replace("  - name: room", "  - name: [room"), capsys)
    assert code == 2
    [error] = errors
    assert error.startswith(f"{path}:6: YAML syntax error:")


def test_missing_key_is_reported_on_its_parent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, errors = check(tmp_path, VALID.replace("    interval_s: 1\n", ""), capsys)
    assert (code, errors) == (2, [f"{tmp_path / 'gw.yaml'}:5: sensors.0.interval_s: "
                                  "required key is missing"])


def test_cross_field_rules_and_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = VALID + "  - name: room\n    driver: sht3x\n    bus: 1\n    interval_s: 2\n"
    text += "    sim: {nack_rate: 0.5}\n"
    code, errors = check(tmp_path, text, capsys)
    path = tmp_path / "gw.yaml"
    assert code == 2
    assert errors == [
        f"{path}:9: sensors.1.name: duplicate sensor name 'room'",
        f"{path}:13: sensors.1.sim: emulator settings need bus: sim",
    ]
    code, errors = check(tmp_path, VALID + "device_id: again\n", capsys)
    assert (code, errors) == (2, [f"{path}:9: device_id: duplicate key"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "1: expected a mapping of settings"),
        ("- a\n- b\n", "1: expected a mapping of settings"),
        ("device_id: 12\nmqtt: {brokers: [mqtt://h]}\n", "1: device_id: Input should be a valid"),
        ("device_id: a/b\nmqtt: {brokers: [mqtt://h]}\n", "1: device_id: String should match"),
        ("device_id: a\nmqtt: {brokers: [http://h]}\n", "2: mqtt.brokers.0: scheme must be"),
        ("device_id: a\nmqtt: {brokers: []}\n", "2: mqtt.brokers: List should have at least 1"),
        ("device_id: a\nmqtt:\n  brokers: [mqtt://h]\n  protocol: 3.1\n",
         "4: mqtt.protocol: must be auto, 5 or 3.1.1"),
        ("device_id: a\nmqtt: {brokers: [mqtt://h], protocol: mqttv5}\n",
         "2: mqtt.protocol: must be auto, 5 or 3.1.1"),
    ],
)
def test_wrong_values(tmp_path: Path, text: str, message: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    code, errors = check(tmp_path, text, capsys)
    assert code == 2
    assert errors[0].startswith(f"{tmp_path / 'gw.yaml'}:{message}"), errors


def test_missing_file_is_one_line_and_no_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(missing)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr == f"{missing}: cannot read: No such file or directory\n"


def test_run_with_invalid_file_exits_2_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(VALID + "extra: 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(path)],
        capture_output=True, text=True, check=False, timeout=30,
    )
    assert (result.returncode, result.stderr) == (2, f"{path}:9: extra: unknown key\n")


def test_relative_state_dir_is_anchored_at_the_file(tmp_path: Path) -> None:
    config = parse(VALID + "state_dir: state\n", "gw.yaml", base_dir=tmp_path)
    assert config.state_dir == tmp_path / "state"


def test_broker_urls() -> None:
    assert str(parse_broker_url("mqtt://host")) == "mqtt://host:1883"
    assert str(parse_broker_url("mqtts://host")) == "mqtts://host:8883"
    assert parse_broker_url("mqtt://10.0.0.2:1884").port == 1884
    for bad in ("tcp://h:1", "mqtt://", "mqtt://h:99999", "mqtt://h/x"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)


@pytest.mark.parametrize(
    ("written", "protocol"), [("", "auto"), ("auto", "auto"), ("5", "5"), ('"5"', "5"),
                              ("3.1.1", "3.1.1")],
)  # fmt: skip
def test_mqtt_protocol_as_yaml_reads_it(written: str, protocol: str) -> None:
    # YAML reads 5 as a number and 3.1.1 as a string; both are meant.
    text = VALID.replace("  brokers:", f"  protocol: {written}\n  brokers:") if written else VALID
    assert parse(text, "gw.yaml").mqtt.protocol == protocol


def test_config_error_lists_all_issues() -> None:
    with pytest.raises(ConfigError) as info:
        parse("device_id: a\nmqtt: {brokers: [x], qos: 3}\nqueue: {memory_max_messages: 0}\n", "f")
    assert [issue.field for issue in info.value.issues] == [
        "mqtt.brokers.0", "mqtt.qos", "queue.memory_max_messages"]


def test_unusable_state_dir_is_one_line_and_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = tmp_path / "gw.yaml"
    path.write_text(VALID + f"state_dir: {blocker}/state\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(path)],
        capture_output=True, text=True, check=False, timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("edge-gateway: cannot start: ")
    assert "Traceback" not in result.stderr


MODBUS = VALID + """\
  - name: line
    driver: xymd02
    port: {port}
    interval_s: 1
"""


@pytest.mark.parametrize(
    "port",
    ["sim", "/dev/ttyUSB0", "/tmp/x/ttyV0", "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0",
     "socket://10.0.0.5:4001", "rfc2217://host:4000", "loop://", "spy:///dev/ttyUSB0"],
)
def test_serial_ports_by_any_path_or_pyserial_url(
    tmp_path: Path, port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(tmp_path, MODBUS.format(port=port), capsys) == (0, [])


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ("COM3", "port must be sim, an absolute path such as /dev/ttyUSB0, or a pyserial URL "
                 "(socket://HOST:PORT, rfc2217://HOST:PORT, loop://), not 'COM3'"),
        ("ttyUSB0", "port must be sim, an absolute path"),
        ("dev/ttyUSB0", "port must be sim, an absolute path"),
        ("http://host:80", "port must be sim, an absolute path"),
        ("socket://10.0.0.5", "expected socket://HOST:PORT, not 'socket://10.0.0.5'"),
        ("rfc2217://:4000", "expected rfc2217://HOST:PORT"),
        ("4001", "port must be sim"),
    ],
)
def test_what_is_neither_path_nor_url_is_refused_on_its_line(
    tmp_path: Path, port: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, errors = check(tmp_path, MODBUS.format(port=port), capsys)
    assert code == 2
    [error] = errors
    assert error.startswith(f"{tmp_path / 'gw.yaml'}:11: sensors.1.port: {message}"), error


def test_accepted_url_schemes_are_pyserials() -> None:
    # Every scheme the validator lets through has a handler in the installed pyserial.
    for scheme in SERIAL_URL_SCHEMES:
        importlib.import_module(f"serial.urlhandler.protocol_{scheme}")
