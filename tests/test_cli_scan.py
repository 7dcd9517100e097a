"""``edge-gateway scan``: names what answers; a missing bus is one line, exit 1."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=False
    )


def test_scan_sim_bus_lists_the_chips() -> None:
    result = run("scan", "--bus", "sim")
    assert (result.returncode, result.stdout) == (0, "0x44  sht3x\n0x53  adxl345\n0x76  bme280\n")


def test_scan_missing_bus_is_one_line() -> None:
    result = run("scan", "--bus", "/dev/i2c-99")
    assert result.returncode == 1
    assert result.stderr == (
        "edge-gateway: cannot open I2C bus /dev/i2c-99: No such file or directory\n"
    )


def test_scan_bad_bus_argument_is_usage_error() -> None:
    assert run("scan", "--bus", "seven").returncode == 2
