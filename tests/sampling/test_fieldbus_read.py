"""``edge-gateway read`` of the generic Modbus driver (RTU on a pty and TCP, emulated from
the register map) and of DS18B20 probes on a fake 1-Wire tree: the configuration through
the daemon's drivers and pipelines to telemetry. pymodbus is loaded for a TCP sensor only."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from helpers import write_config

from drivers.sim.ds18b20 import DS18B20Sim, W1Tree
from drivers.sim.faults import Faults
from drivers.sim.signal import Climate

ROOT = Path(__file__).parents[2]

# Register i of the emulated map follows the climate's temperature, humidity and pressure
# in turn (drivers.sim.modbus_map); its values lie within these bounds.
PLAUSIBLE = [(19.0, 25.0), (35.0, 55.0), (1010.0, 1017.0)]
REGISTERS: list[dict[str, Any]] = [
    {"name": "temperature_c", "table": "input", "address": 0, "type": "float32", "unit": "°C"},
    {"name": "humidity_rh", "table": "input", "address": 4, "type": "float32",
     "word_order": "little"},
    # Stored as (value - 1100) / 0.1: a negative int16.
    {"name": "pressure_hpa", "table": "holding", "address": 10, "type": "int16",
     "scale": 0.1, "offset": 1100.0},
]


def config(tmp_path: Path, sensors: list[dict[str, Any]]) -> Path:
    return write_config(tmp_path / "gw.yaml", {
        "device_id": "dev-1", "state_dir": str(tmp_path / "state"),
        "mqtt": {"brokers": ["mqtt://127.0.0.1:1"]}, "sensors": sensors,
    })


def read(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "read", "-c", str(path), "--json",
                           *args], capture_output=True, text=True, check=False, timeout=60)


def readings(stdout: str) -> dict[str, list[dict[str, float]]]:
    found: dict[str, list[dict[str, float]]] = {}
    for line in stdout.splitlines():
        message = json.loads(line)
        found.setdefault(message["sensor"], []).extend(message["readings"])
    return found


def test_a_register_map_is_read_over_rtu_and_tcp(tmp_path: Path) -> None:
    sensors = [{"name": f"meter-{key}", "driver": "modbus", key: "sim", "unit": 7,
                "interval_s": 0.05, "registers": REGISTERS} for key in ("port", "host")]
    result = read(config(tmp_path, sensors), "--count", "2")
    assert result.returncode == 0, result.stderr
    found = readings(result.stdout)
    assert set(found) == {"meter-port", "meter-host"}
    for sensor_readings in found.values():
        assert len(sensor_readings) == 2
        for reading in sensor_readings:
            del reading["ts"]
            assert list(reading) == ["pressure_hpa", "temperature_c", "humidity_rh"]
            for register, (low, high) in zip(REGISTERS, PLAUSIBLE, strict=True):
                assert low < reading[register["name"]] < high
            # An int16 holds tenths below the offset.
            assert round(reading["pressure_hpa"] * 10) == reading["pressure_hpa"] * 10


def still(probe_id: str, celsius: float, faults: Faults | None = None) -> DS18B20Sim:
    return DS18B20Sim(probe_id, Climate(celsius, noise=0.0), clock=lambda: 0.0,
                      faults=faults or Faults())


def test_ds18b20_probes_are_read_from_a_1_wire_tree(tmp_path: Path) -> None:
    bus = W1Tree(tmp_path / "bus")
    for probe in (still("28-000000000001", 21.5), still("28-000000000002", -10.125),
                  still("28-000000000003", 20.0, Faults(corrupt_crc_rate=1.0)),
                  still("28-000000000004", 20.0, Faults(nack_rate=1.0))):
        bus.attach(probe)
    alone = W1Tree(tmp_path / "alone")
    alone.attach(still("28-0316a2794cff", 23.125))
    sensors = [{"name": name, "driver": "ds18b20", "id": probe_id, "w1_root": str(root),
                "interval_s": 0.05}
               for name, probe_id, root in (("a", "28-000000000001", bus.root),
                                            ("b", "28-000000000002", bus.root),
                                            ("crc", "28-000000000003", bus.root),
                                            ("reset", "28-000000000004", bus.root),
                                            ("auto", "auto", alone.root),
                                            ("many", "auto", bus.root))]
    result = read(config(tmp_path, sensors))
    assert result.returncode == 1
    assert {name: [r["temperature_c"] for r in found]
            for name, found in readings(result.stdout).items()} == {
        "a": [21.5], "b": [-10.125], "auto": [23.125]}
    assert sorted(result.stderr.splitlines()) == [
        "crc: DS18B20 28-000000000003: scratchpad CRC mismatch "
        "(41 01 4b 46 7f ff 0c 10 bc : crc=bc NO)",
        f"many: id auto: 4 DS18B20 probes under {bus.root} (28-000000000001, "
        "28-000000000002, 28-000000000003, 28-000000000004); name one as id",
        "reset: DS18B20 28-000000000004: 85.000 C, the power-on value: the probe was reset",
    ]


def test_an_emulated_probe_is_read(tmp_path: Path) -> None:
    sensors = [{"name": "probe", "driver": "ds18b20", "w1_root": "sim", "interval_s": 0.05}]
    result = read(config(tmp_path, sensors), "--count", "2")
    assert result.returncode == 0, result.stderr
    assert [19.0 < r["temperature_c"] < 25.0 for r in readings(result.stdout)["probe"]] == [
        True, True]


PROBE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from gateway.config import file
    from gateway.sampling.sensors import SerialPorts, open_sensor
    from gateway.sampling.simbench import SimBench

    bench = SimBench()
    for sensor in file.load(Path(sys.argv[1])).sensors:
        opened = open_sensor(sensor, SerialPorts(), bench)
        opened.read()
        opened.close()
    bench.close()
    print("pymodbus" in sys.modules)
""")


def test_pymodbus_is_imported_only_for_a_tcp_sensor(tmp_path: Path) -> None:
    loaded = {}
    for key in ("port", "host"):
        path = config(tmp_path, [{"name": "meter", "driver": "modbus", key: "sim",
                                  "interval_s": 1, "registers": REGISTERS}])
        result = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True,
                                text=True, check=True, cwd=ROOT, timeout=60)
        loaded[key] = result.stdout.split()
    assert loaded == {"port": ["False"], "host": ["True"]}


def test_sensors_on_one_rtu_line_take_turns(tmp_path: Path) -> None:
    """Two devices on one line, read side by side from two threads: their
    exchanges never interleave, so every read gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    from drivers.register_map import Register
    from drivers.sim.modbus_map import ModbusMapSim
    from gateway.config.models import Config
    from gateway.sampling.sensors import SerialPorts, open_sensor
    from gateway.sampling.simbench import SimBench

    device = ModbusMapSim([Register(r["name"], r["table"], r["address"], r["type"],
                                    r.get("word_order", "big"), r.get("scale", 1.0),
                                    r.get("offset", 0.0)) for r in REGISTERS])
    with device.server(unit=1) as server:
        config = Config.model_validate({
            "device_id": "d", "mqtt": {"brokers": ["mqtt://h"]},
            "sensors": [{"name": "map", "driver": "modbus", "port": server.port, "unit": 1,
                         "interval_s": 1, "registers": REGISTERS},
                        {"name": "other", "driver": "modbus", "port": server.port, "unit": 1,
                         "interval_s": 1, "registers": REGISTERS[:1]}]})
        ports, bench = SerialPorts(), SimBench()
        opened = [open_sensor(sensor, ports, bench) for sensor in config.sensors]
        try:
            with ThreadPoolExecutor(2) as pool:
                results = [pool.submit(lambda s=s: [s.read() for _ in range(20)])
                           for s in opened]
                readings = [future.result() for future in results]
        finally:
            for sensor in opened:
                sensor.close()
    assert [len(r) for r in readings] == [20, 20]
    assert {tuple(reading) for reading in readings[1]} == {("temperature_c",)}
