"""Home Assistant discovery messages built from a configuration, and the settings that
shape them: ids Home Assistant accepts and that never collide, templates that leave a
value alone when a message does not carry it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.cli import main
from gateway.config.file import parse
from gateway.config.quantities import (
    ANOMALY,
    DRIVER_QUANTITIES,
    VELOCITY_SEVERITY,
    WINDOW_FEATURES,
)
from gateway.service import discovery

JINJA = ImmutableSandboxedEnvironment()

BASE = """\
device_id: site.pi-1
mqtt:
  brokers: ["mqtt://127.0.0.1:1883"]
sensors:
  - name: a.b
    driver: sht3x
    bus: sim
    interval_s: 1
"""


def test_off_by_default_and_then_nothing_is_published() -> None:
    config = parse(BASE, "gw.yaml")
    assert config.home_assistant.enabled is False
    assert config.home_assistant.discovery_prefix == "homeassistant"
    assert discovery.messages(config, "1.0") == {}


def test_dots_in_names_become_underscores_in_ids_not_in_topics_of_our_own() -> None:
    config = parse(BASE + "home_assistant: {enabled: true}\n", "gw.yaml")
    messages = discovery.messages(config, "1.0")
    prefix = "homeassistant/sensor/site_pi-1/a_b"
    assert set(messages) == {f"{prefix}_{q}/config" for q in ("temperature_c", "humidity_rh",
                                                              "health")}
    entity = json.loads(messages[f"{prefix}_temperature_c/config"])
    assert entity["unique_id"] == "site_pi-1_a_b_temperature_c"
    assert entity["state_topic"] == "gw/site.pi-1/telemetry/a.b"
    assert entity["device"]["identifiers"] == ["site.pi-1"]
    health = json.loads(messages[f"{prefix}_health/config"])
    heartbeat = {"sensors": {"a.b": {"state": "degraded"}, "a_b": {"state": "ok"}}}
    assert JINJA.from_string(health["value_template"]).render(value_json=heartbeat) == "degraded"


def test_one_problem_binary_sensor_per_alarm_and_the_anomaly_entities() -> None:
    config = parse(BASE + """\
    alarms:
      - {name: over.heat, quantity: temperature_c, above: 40}
  - name: pump
    driver: adxl345
    bus: sim
    rate_hz: 400
    interval_s: 0.05
    pipeline: [{stage: vibration, machine_class: II}, {stage: anomaly}]
    alarms: [{name: drift, quantity: anomaly_score, above: 5, severity: critical}]
home_assistant: {enabled: true}
""", "gw.yaml")
    messages = discovery.messages(config, "1.0")
    alarm = json.loads(messages["homeassistant/binary_sensor/site_pi-1/a_b_alarm_over_heat/config"])
    assert {k: alarm[k] for k in ("name", "state_topic", "device_class", "payload_on",
                                  "payload_off", "unique_id")} == {
        "name": "a.b over.heat", "state_topic": "gw/site.pi-1/alarm/a.b/over.heat",
        "device_class": "problem", "payload_on": "active", "payload_off": "cleared",
        "unique_id": "site_pi-1_a_b_alarm_over_heat"}
    assert alarm["availability"][0]["topic"] == "gw/site.pi-1/status"
    document = {"sensor": "a.b", "alarm": "over.heat", "state": "active"}
    assert JINJA.from_string(alarm["value_template"]).render(value_json=document) == "active"
    assert "homeassistant/binary_sensor/site_pi-1/pump_alarm_drift/config" in messages
    state = json.loads(messages["homeassistant/sensor/site_pi-1/pump_anomaly_state/config"])
    assert (state["device_class"], state["options"]) == ("enum", ["learning", "ok"])
    score = json.loads(messages["homeassistant/sensor/site_pi-1/pump_anomaly_score/config"])
    assert score["name"] == "pump anomaly score"


def test_a_value_missing_from_a_message_renders_empty_which_home_assistant_ignores() -> None:
    template = JINJA.from_string(discovery.newest("pressure_hpa"))
    batch = {"readings": [{"ts": 1, "pressure_hpa": 1001.5}, {"ts": 2, "pressure_hpa": 1002.5},
                          {"ts": 3, "temperature_c": 20.0}]}
    assert template.render(value_json=batch) == "1002.5"
    assert template.render(value_json={"readings": [{"ts": 1, "temperature_c": 20.0}]}) == ""
    assert template.render(value_json={"readings": []}) == ""


def test_every_entity_id_is_distinct_whatever_the_sensor_names() -> None:
    """Object ids join a sensor's id and a quantity with ``_``: they are distinct as long as
    no quantity (or ``health``) ends in ``_`` and another one, and every quantity has a kind."""
    names = {q for qs in DRIVER_QUANTITIES.values() for q in qs}
    names |= {*WINDOW_FEATURES, *VELOCITY_SEVERITY, *ANOMALY}
    assert names - set(discovery.LABELS) <= set(discovery.KINDS)
    names.add(discovery.HEALTH)
    for a, b in itertools.permutations(names, 2):
        assert not a.endswith(f"_{b}"), (a, b)


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("home_assistant: {enabled: true, discovery_prefix: 'ha/#'}\n", 9,
         "home_assistant.discovery_prefix: expected topic levels of letters, "
         "digits, '_', '.' or '-', separated by '/', such as homeassistant"),
        ("home_assistant: {enabled: true, discovery_prefix: 'ha//x'}\n", 9,
         "home_assistant.discovery_prefix: expected topic levels"),
        ("home_assistant: {enabled: true, colour: blue}\n", 9,
         "home_assistant.colour: unknown key"),
        ("  - {name: a_b, driver: sht3x, bus: sim, address: 0x45, interval_s: 1}\n"
         "home_assistant: {enabled: true}\n", 9,
         "sensors.1.name: 'a_b' and 'a.b' are the same sensor to Home Assistant ('a_b'): "
         "rename one"),
    ],
)
def test_settings_home_assistant_would_not_take_are_errors(
    tmp_path: Path, extra: str, line: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE + extra)
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[0].startswith(f"{path}:{line}: {message}")


def test_names_alike_to_home_assistant_are_fine_while_discovery_is_off(tmp_path: Path) -> None:
    text = BASE + "  - {name: a_b, driver: sht3x, bus: sim, address: 0x45, interval_s: 1}\n"
    parse(text, "gw.yaml")
    parse(text + "home_assistant: {discovery_prefix: ha/disc}\n", "gw.yaml")


METER = """\
device_id: pi
home_assistant: {enabled: true}
mqtt:
  brokers: ["mqtt://127.0.0.1:1883"]
sensors:
  - name: meter
    driver: modbus
    host: 192.0.2.10
    interval_s: 1
    registers:
      - {name: voltage_v, table: input, address: 0, type: float32, unit: V}
      - {name: import_kwh, table: input, address: 0x48, type: float32, unit: kWh}
      - {name: power_factor, table: input, address: 0x1E, type: float32}
      - {name: temperature_c, table: holding, address: 0, type: int16, scale: 0.1}
      - {name: speed_rpm, table: holding, address: 1, type: uint16, unit: rpm}
  - name: probe
    driver: ds18b20
    interval_s: 1
"""


def test_a_register_map_and_a_probe_are_discovered_with_their_units() -> None:
    messages = discovery.messages(parse(METER, "gw.yaml"), "1.0")

    def entity(object_id: str) -> tuple[object, ...]:
        found = json.loads(messages[f"homeassistant/sensor/pi/{object_id}/config"])
        return (found["name"], found.get("unit_of_measurement"), found.get("device_class"),
                found["state_class"])

    assert len(messages) == 5 + 1 + 2
    assert entity("meter_voltage_v") == ("meter voltage v", "V", "voltage", "measurement")
    # A meter's energy only grows: Home Assistant's energy dashboard takes it so.
    assert entity("meter_import_kwh") == ("meter import kwh", "kWh", "energy",
                                          "total_increasing")
    assert entity("meter_power_factor") == ("meter power factor", None, None, "measurement")
    # A known quantity without a unit is shown as the other drivers' is.
    assert entity("meter_temperature_c") == ("meter temperature", "°C", "temperature",
                                             "measurement")
    assert entity("meter_speed_rpm") == ("meter speed rpm", "rpm", None, "measurement")
    assert entity("probe_temperature_c") == ("probe temperature", "°C", "temperature",
                                             "measurement")
