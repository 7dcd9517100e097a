"""``edge-gateway read``: the daemon's drivers and pipelines, printed on demand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import write_config

SENSORS: list[dict[str, Any]] = [
    {"name": "air", "driver": "sht3x", "bus": "sim", "interval_s": 0.05,
     "pipeline": [{"stage": "calibrate", "offset": {"temperature_c": 100}}]},
    {"name": "baro", "driver": "bme280", "bus": "sim", "interval_s": 0.05},
    {"name": "shaker", "driver": "adxl345", "bus": "sim", "rate_hz": 800, "interval_s": 0.02,
     "sim": {"tones": [{"axis": "y", "freq_hz": 40, "amplitude_g": 0.5}]},
     "pipeline": [{"stage": "vibration", "machine_class": "I", "window_s": 0.5}]},
    {"name": "modbus", "driver": "xymd02", "port": "sim", "interval_s": 0.05},
]


def config(tmp_path: Path, sensors: list[dict[str, Any]]) -> Path:
    return write_config(tmp_path / "gw.yaml", {
        "device_id": "dev-1", "state_dir": str(tmp_path / "state"),
        "mqtt": {"brokers": ["mqtt://127.0.0.1:1"]}, "sensors": sensors,
    })


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "read", *args],
                          capture_output=True, text=True, check=False, timeout=60)


def test_json_payloads_through_the_pipeline(tmp_path: Path) -> None:
    result = run("-c", str(config(tmp_path, SENSORS)), "--count", "2", "--json")
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    by_sensor: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        by_sensor.setdefault(message["sensor"], []).append(message)
    assert set(by_sensor) == {"air", "baro", "shaker", "modbus"}
    air = [r for m in by_sensor["air"] for r in m["readings"]]
    assert len(air) == 2 and all(r["temperature_c"] > 100 for r in air)  # calibrated
    assert {"pressure_hpa"} <= set(by_sensor["baro"][0]["readings"][0])
    shaker = by_sensor["shaker"][0]["readings"][0]
    assert abs(shaker["dominant_hz"] - 40) <= 2
    assert not (tmp_path / "state").exists()  # reading leaves the device's state alone


def test_one_sensor_in_plain_text(tmp_path: Path) -> None:
    result = run("-c", str(config(tmp_path, SENSORS)), "--sensor", "modbus")
    assert result.returncode == 0
    [line] = result.stdout.splitlines()
    assert line.startswith("modbus ") and "temperature_c=" in line and "humidity_rh=" in line


def test_failing_sensor_is_one_line_exit_1_and_the_others_still_print(tmp_path: Path) -> None:
    sensors = [SENSORS[0], {**SENSORS[1], "sim": {"unplugged": True}}]
    result = run("-c", str(config(tmp_path, sensors)))
    assert result.returncode == 1
    [error] = result.stderr.splitlines()
    assert error.startswith("baro: ") and "EREMOTEIO" in error
    assert result.stdout.startswith("air ")


def test_unknown_sensor_and_bad_count_are_usage_errors(tmp_path: Path) -> None:
    path = str(config(tmp_path, SENSORS))
    result = run("-c", path, "--sensor", "nope")
    assert result.returncode == 2
    assert "no sensor 'nope'" in result.stderr
    assert run("-c", path, "--count", "0").returncode == 2
