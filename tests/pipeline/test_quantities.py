"""The quantities a sensor's telemetry carries, known from its configuration, are the ones
the real drivers and stages put in its readings, for every driver with and without a
vibration stage (``edge-gateway read --json``: the daemon's drivers on their emulators,
through its pipelines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import write_config

from gateway.config.models import Config
from gateway.config.quantities import DRIVER_QUANTITIES, quantities

VIBRATION = {"stage": "vibration", "machine_class": "II", "window_s": 0.5}
TONES = {"tones": [{"axis": "x", "freq_hz": 50, "amplitude_g": 0.3}]}

SENSORS: list[dict[str, Any]] = [
    {"name": "sht", "driver": "sht3x", "bus": "sim", "interval_s": 0.05,
     "pipeline": [{"stage": "median", "window": 3}]},
    # A vibration stage passes readings without velocity unchanged.
    {"name": "sht-vib", "driver": "sht3x", "bus": "sim", "interval_s": 0.05,
     "pipeline": [VIBRATION]},
    {"name": "bme", "driver": "bme280", "bus": "sim", "interval_s": 0.05,
     "pipeline": [{"stage": "batch", "max_readings": 2, "max_delay_s": 5}]},
    {"name": "adxl", "driver": "adxl345", "bus": "sim", "interval_s": 0.05},
    {"name": "adxl-vib", "driver": "adxl345", "bus": "sim", "rate_hz": 800,
     "interval_s": 0.02, "sim": TONES, "pipeline": [VIBRATION]},
    {"name": "xymd", "driver": "xymd02", "port": "sim", "interval_s": 0.05},
    {"name": "wtvb", "driver": "wtvb01", "port": "sim", "interval_s": 0.05},
    {"name": "wtvb-vib", "driver": "wtvb01", "port": "sim", "interval_s": 0.05,
     "pipeline": [VIBRATION, {"stage": "average", "every": 2}]},
    {"name": "probe", "driver": "ds18b20", "w1_root": "sim", "interval_s": 0.05},
    # A generic device's quantities are its registers' names.
    {"name": "meter", "driver": "modbus", "host": "sim", "interval_s": 0.05,
     "registers": [{"name": "voltage_v", "table": "input", "address": 0, "type": "float32"},
                   {"name": "energy_kwh", "table": "holding", "address": 0, "type": "uint32"}]},
]


def test_configured_quantities_are_those_the_readings_carry(tmp_path: Path) -> None:
    settings = {"device_id": "dev-1", "state_dir": str(tmp_path / "state"),
                "mqtt": {"brokers": ["mqtt://127.0.0.1:1"]}, "sensors": SENSORS}
    path = write_config(tmp_path / "gw.yaml", settings)
    result = subprocess.run([sys.executable, "-m", "gateway", "read", "-c", str(path),
                             "--count", "2", "--json"],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    seen: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        message = json.loads(line)
        for reading in message["readings"]:
            seen.setdefault(message["sensor"], set()).update(set(reading) - {"ts"})
    config = Config.model_validate(settings)
    expected = {sensor.name: set(quantities(sensor)) for sensor in config.sensors}
    assert seen == expected
    # Every driver is covered, and the vibration stage changed what it should.
    assert {s["driver"] for s in SENSORS} == {*DRIVER_QUANTITIES, "modbus"}
    assert expected["meter"] == {"voltage_v", "energy_kwh"}
    assert expected["sht-vib"] == expected["sht"]
    assert expected["wtvb-vib"] - expected["wtvb"] == {"velocity_rms_mm_s", "zone"}
    assert "zone" in expected["adxl-vib"] and "accel_x_g" not in expected["adxl-vib"]
