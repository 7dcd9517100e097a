"""Home Assistant's MQTT discovery messages for a configuration, built without side effects.

Home Assistant creates an entity for each retained JSON message under
``PREFIX/COMPONENT/NODE/OBJECT/config`` (ids ``[a-zA-Z0-9_-]``) and deletes it when that
topic gets an empty message. Here each sensor quantity becomes one ``sensor`` entity reading the
sensor's own telemetry (its ``value_template`` takes the newest value of the quantity in a
message, since a batched message carries several readings and a ``range`` stage may have
dropped the quantity from the last one), and each sensor one diagnostic entity reading its
health from the heartbeat, and each alarm one ``binary_sensor`` (device class
``problem``) reading the alarm's retained document. All of them are unavailable while the
device's retained status says ``offline``, as its last will does, and belong to one Home
Assistant device, the gateway. Which quantities a sensor has comes from
``gateway.config.quantities``; their units and Home Assistant device classes from the
table below, and for a Modbus device's registers from each register's ``unit``, which also
names the device class when it is one Home Assistant knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway import wire
from gateway.config.models import Config, ModbusSensor, Sensor, home_assistant_id
from gateway.config.quantities import ANOMALY_SCORE, ANOMALY_STATE, AXES, ZONE, quantities
from gateway.pipeline.severity import ZONES
from gateway.sampling.health import State

COMPONENT = "sensor"
ALARM_COMPONENT = "binary_sensor"
HEALTH = "health"
MODEL = "edge-gateway"
MANUFACTURER = "edge-gateway project"


@dataclass(frozen=True)
class Kind:
    """How Home Assistant shows a numeric quantity."""

    label: str
    unit: str | None
    precision: int
    # Home Assistant's sensor device class: its icon, unit conversion and long-term charts.
    device_class: str | None = None
    # A meter's energy only grows; Home Assistant's energy dashboard takes only that.
    state_class: str = "measurement"


def _per_axis(pattern: str, label: str, unit: str, precision: int) -> dict[str, Kind]:
    return {pattern.format(axis): Kind(f"{label} {axis.upper()}", unit, precision)
            for axis in AXES}


KINDS: dict[str, Kind] = {
    "temperature_c": Kind("temperature", "°C", 1, "temperature"),
    "humidity_rh": Kind("humidity", "%", 1, "humidity"),
    "pressure_hpa": Kind("pressure", "hPa", 1, "pressure"),
    # Vibration has no device class in Home Assistant: the unit alone.
    **_per_axis("accel_{}_g", "acceleration", "g", 3),
    **_per_axis("accel_rms_g_{}", "acceleration RMS", "g", 3),
    "accel_peak_g": Kind("acceleration peak", "g", 3),
    "crest_factor": Kind("crest factor", None, 2),
    "dominant_hz": Kind("dominant frequency", "Hz", 1),
    "velocity_rms_mm_s": Kind("velocity RMS", "mm/s", 2),
    **_per_axis("velocity_{}_mm_s", "velocity", "mm/s", 2),
    **_per_axis("displacement_{}_um", "displacement", "µm", 0),
    **_per_axis("frequency_{}_hz", "frequency", "Hz", 1),
    ANOMALY_SCORE: Kind("anomaly score", None, 1),
}

# Units of a register that say what it measures, with Home Assistant's device class.
UNIT_CLASSES: dict[str, str] = {
    **dict.fromkeys(("V", "mV", "kV"), "voltage"),
    **dict.fromkeys(("A", "mA"), "current"),
    **dict.fromkeys(("W", "kW"), "power"),
    "VA": "apparent_power",
    "var": "reactive_power",
    **dict.fromkeys(("Wh", "kWh", "MWh"), "energy"),
    **dict.fromkeys(("Hz", "kHz"), "frequency"),
    **dict.fromkeys(("°C", "°F", "K"), "temperature"),
    **dict.fromkeys(("Pa", "hPa", "kPa", "bar", "mbar", "psi"), "pressure"),
}
REGISTER_PRECISION = 2


def kind_of(sensor: Sensor, quantity: str) -> Kind:
    """How Home Assistant shows ``quantity`` of ``sensor``: a known quantity by the table,
    a Modbus register by its name and ``unit`` (the table's when it gives none). What a
    stage adds to a register map's readings (a vibration stage's severity) is in the table."""
    if isinstance(sensor, ModbusSensor):
        register = next((r for r in sensor.registers if r.name == quantity), None)
        if register is not None and (register.unit is not None or quantity not in KINDS):
            device_class = UNIT_CLASSES.get(register.unit or "")
            return Kind(quantity.replace("_", " "), register.unit, REGISTER_PRECISION,
                        device_class,
                        "total_increasing" if device_class == "energy" else "measurement")
    return KINDS[quantity]


LABELS = {ZONE: ("vibration zone", ZONES),
          ANOMALY_STATE: ("anomaly state", tuple(wire.AnomalyState))}
"""The quantities that are words: Home Assistant enums with these names and states."""

HEALTH_STATES = tuple(state.value for state in State)


def newest(quantity: str) -> str:
    """A template for the newest value of ``quantity`` in a telemetry message, or an empty
    string (which Home Assistant ignores) when no reading of the message carries it."""
    return (f"{{{{ value_json.readings | selectattr('{quantity}', 'defined') "
            f"| map(attribute='{quantity}') | list | last | default('') }}}}")


def health_of(sensor: str) -> str:
    """A template for a sensor's health state in a heartbeat."""
    return f"{{{{ value_json.sensors['{sensor}'].state }}}}"


AVAILABILITY_TEMPLATE = "{{ value_json.state }}"


def node_id(config: Config) -> str:
    return home_assistant_id(config.device_id)


def topic(config: Config, object_id: str, component: str = COMPONENT) -> str:
    return wire.ha_discovery_topic(config.home_assistant.discovery_prefix, component,
                                   node_id(config), object_id)


def birth_topic(config: Config) -> str:
    """Where Home Assistant says ``online`` when it (re)starts."""
    return wire.ha_status_topic(config.home_assistant.discovery_prefix)


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def messages(config: Config, version: str) -> dict[str, bytes]:
    """Every discovery message of ``config``, by topic; none when discovery is off."""
    if not config.home_assistant.enabled:
        return {}
    common: dict[str, Any] = {
        "availability": [{
            "topic": wire.status_topic(*_device(config)),
            "value_template": AVAILABILITY_TEMPLATE,
            "payload_available": wire.Presence.ONLINE,
            "payload_not_available": wire.Presence.OFFLINE,
        }],
        "device": {
            "identifiers": [config.device_id],
            "name": config.device_id,
            "manufacturer": MANUFACTURER,
            "model": MODEL,
            "sw_version": version,
        },
        "origin": {"name": MODEL, "sw_version": version},
    }
    out: dict[str, bytes] = {}
    for sensor in config.sensors:
        for object_id, entity in _entities(config, sensor):
            unique_id = f"{node_id(config)}_{object_id}"
            out[topic(config, object_id)] = _encode({**entity, "unique_id": unique_id,
                                                     **common})
        for object_id, entity in _alarms(config, sensor):
            unique_id = f"{node_id(config)}_{object_id}"
            out[topic(config, object_id, ALARM_COMPONENT)] = _encode(
                {**entity, "unique_id": unique_id, **common})
    return out


def _device(config: Config) -> tuple[str, str]:
    """The topic prefix and device id, whose topics the entities read."""
    return config.mqtt.topic_prefix, config.device_id


def _alarms(config: Config, sensor: Sensor) -> list[tuple[str, dict[str, Any]]]:
    """One problem sensor per alarm: on while its document says ``active``."""
    sensor_id = home_assistant_id(sensor.name)
    return [(f"{sensor_id}_alarm_{home_assistant_id(alarm.name)}", {
        "name": f"{sensor.name} {alarm.name}",
        "state_topic": wire.alarm_topic(*_device(config), sensor.name, alarm.name),
        "value_template": "{{ value_json.state }}",
        "payload_on": wire.AlarmState.ACTIVE,
        "payload_off": wire.AlarmState.CLEARED,
        "device_class": "problem",
        "qos": 1,
    }) for alarm in sensor.alarms]


def _entities(config: Config, sensor: Sensor) -> list[tuple[str, dict[str, Any]]]:
    sensor_id = home_assistant_id(sensor.name)
    state_topic = wire.telemetry_topic(*_device(config), sensor.name)
    entities = []
    for quantity in quantities(sensor):
        entity: dict[str, Any] = {
            "state_topic": state_topic,
            "value_template": newest(quantity),
            "qos": config.mqtt.qos,
        }
        if quantity in LABELS:
            label, options = LABELS[quantity]
            entity.update(name=f"{sensor.name} {label}", device_class="enum",
                          options=list(options))
        else:
            kind = kind_of(sensor, quantity)
            entity.update(name=f"{sensor.name} {kind.label}", state_class=kind.state_class,
                          suggested_display_precision=kind.precision)
            if kind.unit is not None:
                entity["unit_of_measurement"] = kind.unit
            if kind.device_class is not None:
                entity["device_class"] = kind.device_class
        entities.append((f"{sensor_id}_{quantity}", entity))
    entities.append((f"{sensor_id}_{HEALTH}", {
        "name": f"{sensor.name} {HEALTH}",
        "state_topic": wire.heartbeat_topic(*_device(config)),
        "value_template": health_of(sensor.name),
        "device_class": "enum",
        "options": list(HEALTH_STATES),
        "entity_category": "diagnostic",
    }))
    return entities
