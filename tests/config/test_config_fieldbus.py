"""``check-config`` on Modbus register maps and DS18B20 probes: every refusal on its own
line, at the register or setting it is about."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

# Rules that span a sensor's fields: judged once the file is well-formed.
UNREADABLE = """\
device_id: d
mqtt: {brokers: ["mqtt://h"]}
sensors:
  - name: meter
    driver: modbus
    port: /dev/ttyUSB0
    tcp_port: 503
    unit: 0
    interval_s: 1
    max_registers_per_request: 2
    registers:
      - {name: voltage_v, table: input, address: 0, type: float32}
      - {name: current_a, table: input, address: 1, type: float32}
      - {name: energy_kwh, table: holding, address: 65535, type: float32}
      - {name: total_wh, table: holding, address: 0, type: float64}
      - {name: voltage_v, table: holding, address: 8, type: int16}
  - name: tcp
    driver: modbus
    host: 192.0.2.10
    baudrate: 19200
    interval_s: 1
    registers:
      - {name: voltage_v, table: input, address: 0, type: float32}
  - name: neither
    driver: modbus
    interval_s: 1
    registers:
      - {name: voltage_v, table: input, address: 0, type: float32}
  - name: probe
    driver: ds18b20
    interval_s: 1
    sim: {nack_rate: 0.5}
"""

# Fields that are wrong by themselves.
MALFORMED = """\
device_id: d
mqtt: {brokers: ["mqtt://h"]}
sensors:
  - name: meter
    driver: modbus
    port: sim
    interval_s: 1
    max_registers_per_request: 126
    registers:
      - {name: Voltage, table: input, address: 0, type: float32}
      - {name: zone, table: input, address: 2, type: float32}
      - {name: power_w, table: coils, address: 65536, type: float16}
      - {name: health, table: input, address: 9, type: int16}
  - name: empty
    driver: modbus
    host: sim
    interval_s: 1
    registers: []
  - name: probe
    driver: ds18b20
    id: 10-0316a2797aff
    w1_root: sys/bus/w1/devices
    interval_s: 1
"""


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    return [line.removeprefix(f"{path}:") for line in capsys.readouterr().err.splitlines()]


def test_an_unreadable_map_is_refused_at_each_register(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(tmp_path, UNREADABLE, capsys) == [
        "7: sensors.0.tcp_port: Modbus TCP only: give host, not port",
        "8: sensors.0.unit: a unit on a serial line is 1 to 247",
        "13: sensors.0.registers.1: input register 1 (float32) overlaps 'voltage_v' "
        "(register #0, float32 at 0)",
        "14: sensors.0.registers.2: a float32 at 65535 needs 2 registers, past the last "
        "address 65535",
        "15: sensors.0.registers.3: a float64 is 4 registers, more than the 2 one request "
        "may read",
        "16: sensors.0.registers.4: name 'voltage_v' is also register #0",
        "20: sensors.1.baudrate: a serial line's setting: Modbus TCP has none",
        "24: sensors.2: give port (Modbus RTU) or host (Modbus TCP), one of them",
        "32: sensors.3.sim: emulator settings need w1_root: sim",
    ]


def test_malformed_registers_and_probes_are_refused_with_their_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(tmp_path, MALFORMED, capsys) == [
        "8: sensors.0.max_registers_per_request: Input should be less than or equal to 125",
        "10: sensors.0.registers.0.name: 'Voltage' is not a quantity name: lowercase letters "
        "and digits in words joined by '_', the unit last, such as voltage_v",
        "11: sensors.0.registers.1.name: 'zone' is a key of every telemetry reading, "
        "not a quantity name",
        "12: sensors.0.registers.2.table: Input should be 'input' or 'holding'",
        "12: sensors.0.registers.2.address: Input should be less than or equal to 65535",
        "12: sensors.0.registers.2.type: Input should be 'int16', 'uint16', 'int32', "
        "'uint32', 'float32' or 'float64'",
        "13: sensors.0.registers.3.name: 'health' is the sensor's health in Home Assistant, "
        "not a quantity name",
        "18: sensors.1.registers: List should have at least 1 item after validation, not 0",
        "21: sensors.2.id: id must be auto or a DS18B20's 1-Wire id (28- and 12 hex digits, "
        "as scan lists it), not '10-0316a2797aff'",
        "22: sensors.2.w1_root: w1_root must be an absolute path or sim, "
        "not 'sys/bus/w1/devices'",
    ]


def test_a_good_map_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("""\
device_id: d
mqtt: {brokers: ["mqtt://h"]}
sensors:
  - {name: meter, driver: modbus, host: 192.0.2.10, unit: 255, interval_s: 1,
     registers: [{name: voltage_v, table: input, address: 0, type: float32, unit: V},
                 {name: total_kwh, table: input, address: 0x156, type: float32}]}
  - {name: probe, driver: ds18b20, id: 28-0316a2797aff, interval_s: 1}
""")
    assert main(["check-config", str(path)]) == 0


def test_the_readmes_sdm120_map_is_valid_and_read_in_three_requests() -> None:
    from drivers.register_map import plan
    from gateway.config.file import parse
    from gateway.config.models import ModbusSensor

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("  - name: meter\n    driver: modbus\n")
    block = readme[start:readme.index("```", start)]
    config = parse(f'device_id: d\nmqtt: {{brokers: ["mqtt://h"]}}\nsensors:\n{block}', "README")
    [meter] = config.sensors
    assert isinstance(meter, ModbusSensor)
    requests = plan([r.register() for r in meter.registers], meter.max_registers_per_request)
    assert [(r.address, r.count) for r in requests] == [(0x00, 0x20), (0x46, 6), (0x156, 2)]
