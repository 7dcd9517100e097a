"""``edge-gateway scan``: names what answers on the I2C bus and what is on the 1-Wire bus;
a bus that is not there is a line saying how to turn it on, and exit 1 only when neither
is there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from drivers.sim.ds18b20 import DS18B20Sim, W1Tree

I2C_HINT = ("is I2C enabled? (sudo raspi-config nonint do_i2c 0, or dtparam=i2c_arm=on in "
            "/boot/firmware/config.txt, then reboot)")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=False
    )


def test_scan_sim_bus_lists_the_chips_and_the_probes(tmp_path: Path) -> None:
    w1 = W1Tree(tmp_path / "devices")
    w1.attach(DS18B20Sim("28-0316a2794cff"))
    (tmp_path / "devices" / "10-000801b5a2f3").mkdir()
    result = run("scan", "--bus", "sim", "--w1-root", str(w1.root))
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "0x44  sht3x\n0x53  adxl345\n0x76  bme280\n"
           "10-000801b5a2f3  ds18s20 (unsupported)\n28-0316a2794cff  ds18b20\n", "")


def test_a_missing_bus_says_how_to_enable_it(tmp_path: Path) -> None:
    w1 = W1Tree(tmp_path / "devices")
    missing_w1 = tmp_path / "no-w1"
    result = run("scan", "--bus", "/dev/i2c-99", "--w1-root", str(w1.root))
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == (
        f"no 1-Wire device under {w1.root}\n"
        f"edge-gateway: cannot open I2C bus /dev/i2c-99: No such file or directory: {I2C_HINT}\n")
    result = run("scan", "--bus", "sim", "--w1-root", str(missing_w1))
    assert result.returncode == 0
    assert result.stderr == (
        f"edge-gateway: 1-Wire: {missing_w1} does not exist: is the 1-Wire bus enabled? "
        "(dtoverlay=w1-gpio in /boot/firmware/config.txt, then reboot)\n")


def test_scan_with_neither_bus_fails(tmp_path: Path) -> None:
    result = run("scan", "--bus", "/dev/i2c-99", "--w1-root", str(tmp_path / "no-w1"))
    assert result.returncode == 1
    assert [line.split(":")[1] for line in result.stderr.splitlines()] == [
        " cannot open I2C bus /dev/i2c-99", " 1-Wire"]


def test_scan_bad_bus_argument_is_usage_error() -> None:
    assert run("scan", "--bus", "seven").returncode == 2
