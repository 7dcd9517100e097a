"""``edge-gateway read``: the daemon's drivers and pipelines, printed on demand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import write_config
from serial_server import TcpSerialServer

from drivers.sim.faults import Faults
from drivers.sim.signal import Climate
from drivers.sim.wtvb01 import Machine, WTVB01Sim
from drivers.sim.xymd02 import XYMD02Sim

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


def test_modbus_sensors_behind_a_tcp_serial_server(tmp_path: Path) -> None:
    # The emulators stand on RS-485 lines behind two serial-server ports; the gateway
    # reaches them only as socket:// URLs.
    climate = XYMD02Sim(Climate(18.4, 62.0, noise=0.0), clock=lambda: 0.0)
    machine = WTVB01Sim(Machine((3.0, 2.0, 5.0), (24.8, 24.8, 49.6), 41.0, noise=0.0),
                        clock=lambda: 0.0)
    with (
        climate.server() as line_1, TcpSerialServer(line_1.port, tmp_path) as port_1,
        machine.server() as line_2, TcpSerialServer(line_2.port, tmp_path) as port_2,
    ):
        sensors = [
            {"name": "air", "driver": "xymd02", "port": port_1.url, "interval_s": 0.05},
            {"name": "pump", "driver": "wtvb01", "port": port_2.url, "interval_s": 0.05},
        ]
        result = run("-c", str(config(tmp_path, sensors)), "--count", "2", "--json")
        assert result.returncode == 0, result.stderr
        assert (line_1.requests, line_2.requests) == (2, 2)
    readings = {}
    for line in result.stdout.splitlines():
        message = json.loads(line)
        readings.setdefault(message["sensor"], []).extend(message["readings"])
    assert [(r["temperature_c"], r["humidity_rh"]) for r in readings["air"]] == [(18.4, 62.0)] * 2
    pump = readings["pump"][0]
    assert pump["temperature_c"] == 41.0
    assert (pump["velocity_x_mm_s"], pump["velocity_y_mm_s"], pump["velocity_z_mm_s"]) == (3, 2, 5)
    assert pump["frequency_z_hz"] == 49.6
    assert abs(pump["accel_z_g"] - 1.0) < 0.05  # mounted upright: gravity on Z


def test_silent_device_behind_a_serial_server_is_a_timeout(tmp_path: Path) -> None:
    sim = XYMD02Sim(faults=Faults(unplugged=True))
    with sim.server() as line, TcpSerialServer(line.port, tmp_path) as tcp:
        sensors = [{"name": "air", "driver": "xymd02", "port": tcp.url, "interval_s": 0.05,
                    "timeout_s": 0.2}]
        result = run("-c", str(config(tmp_path, sensors)))
    assert result.returncode == 1
    [error] = result.stderr.splitlines()
    assert error.startswith("air: ") and "no answer" in error
    assert line.requests == 3
