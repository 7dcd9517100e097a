"""The wire's vocabulary: every topic and every state word that crosses the broker, spelled
once for the device that publishes them and the operator's commands that read them.

A device and an operator tool built from different releases must still agree on each
spelling, so both take it from here, and docs/PROTOCOL.md (section 2 for the topics,
section 3 for the documents) is its description. The state word sets are closed there:
adding a word is an incompatible change. This module imports only the standard library,
so any room may use it, the firmware launcher's included.

``P`` is the topic prefix and ``D`` the device id; an operator subscribing to the whole
fleet passes ``ANY_DEVICE`` as the device.
"""

from __future__ import annotations

from enum import StrEnum

ANY_DEVICE = "+"
"""The MQTT single-level wildcard in a device's place: every device under a prefix."""

STATUS = "status"
HEARTBEAT = "heartbeat"
CONFIG_SET = "config/set"
CONFIG_STATE = "config/state"
FIRMWARE_STATE = "firmware/state"
"""What follows ``P/D/`` in the topics of section 2 that end there."""


class Presence(StrEnum):
    """The ``state`` of the status document (section 3.3)."""

    ONLINE = "online"
    OFFLINE = "offline"


class ConfigStatus(StrEnum):
    """The ``status`` of the config state document (section 3.5)."""

    APPLIED = "applied"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"


class FirmwareState(StrEnum):
    """The ``state`` of the firmware state document (section 3.6)."""

    IDLE = "idle"
    NOT_ELIGIBLE = "not_eligible"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    AWAITING_HEALTH = "awaiting_health"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class AlarmState(StrEnum):
    """The ``state`` of the alarm document (section 3.8)."""

    ACTIVE = "active"
    CLEARED = "cleared"


class AnomalyState(StrEnum):
    """The ``anomaly_state`` of a telemetry reading (section 3.1)."""

    LEARNING = "learning"
    OK = "ok"


def device_topic(prefix: str, device: str, kind: str) -> str:
    """``P/D/KIND``: ``kind`` is one of the names above."""
    return f"{prefix}/{device}/{kind}"


def telemetry_topic(prefix: str, device: str, sensor: str) -> str:
    """``P/D/telemetry/SENSOR``."""
    return f"{prefix}/{device}/telemetry/{sensor}"


def status_topic(prefix: str, device: str) -> str:
    """``P/D/status``, retained; also the last will."""
    return device_topic(prefix, device, STATUS)


def heartbeat_topic(prefix: str, device: str) -> str:
    """``P/D/heartbeat``."""
    return device_topic(prefix, device, HEARTBEAT)


def config_set_topic(prefix: str, device: str) -> str:
    """``P/D/config/set``: the signed config updates for one device."""
    return device_topic(prefix, device, CONFIG_SET)


def group_config_set_topic(prefix: str, group: str) -> str:
    """``P/group/G/config/set``: the signed config updates for the devices of a group."""
    return f"{prefix}/group/{group}/{CONFIG_SET}"


def config_state_topic(prefix: str, device: str) -> str:
    """``P/D/config/state``: the device's word on the latest config update, retained."""
    return device_topic(prefix, device, CONFIG_STATE)


def manifest_topic(prefix: str, channel: str) -> str:
    """``P/firmware/CHANNEL/manifest``: the signed firmware manifest of a channel."""
    return f"{prefix}/firmware/{channel}/manifest"


def firmware_state_topic(prefix: str, device: str) -> str:
    """``P/D/firmware/state``: the device's firmware record's public part, retained."""
    return device_topic(prefix, device, FIRMWARE_STATE)


def alarm_topic(prefix: str, device: str, sensor: str, alarm: str) -> str:
    """``P/D/alarm/SENSOR/NAME``: one alarm's document, retained."""
    return f"{prefix}/{device}/alarm/{sensor}/{alarm}"


def device_and_kind(topic: str, prefix: str) -> tuple[str, str] | None:
    """``(D, KIND)`` of a topic ``P/D/KIND`` under ``prefix``; None for any other topic."""
    head, sep, rest = topic.partition("/")
    device, sep2, kind = rest.partition("/")
    if head != prefix or not sep or not sep2 or not device or not kind:
        return None
    return device, kind


def ha_discovery_topic(discovery_prefix: str, component: str, node: str, object_id: str) -> str:
    """``H/COMPONENT/NODE/OBJECT/config``: a Home Assistant discovery message (section 3.7)."""
    return f"{discovery_prefix}/{component}/{node}/{object_id}/config"


def ha_status_topic(discovery_prefix: str) -> str:
    """``H/status``: where Home Assistant announces itself when it (re)starts."""
    return f"{discovery_prefix}/status"
