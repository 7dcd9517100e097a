"""The device configuration: ``Config``, the pydantic model of the whole file (README,
Configuration), and the rules that span its sections.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. The sections live by subject: shared field types in ``fields``, the uplink's in
``mqtt``, sensors in ``sensors``, pipeline stages in ``stages``; the rest, small, is here.
What other rooms import of them is re-exported, so ``gateway.config.models`` stays the one
name to import from. Loading from YAML, with line numbers for errors, is in ``file``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PlainValidator

from gateway.config import alarms, quantities
from gateway.config.fields import (
    DAY_S,
    NAME_PATTERN,
    FilePath,
    Interval,
    Problem,
    Timeout,
    TopicName,
)
from gateway.config.mqtt import BrokerUrl, MqttConfig, QueueConfig, parse_broker_url
from gateway.config.section import Section
from gateway.config.sensors import (
    SERIAL_URL_SCHEMES,
    ADXL345Sensor,
    BME280Sensor,
    DS18B20Sensor,
    I2CSensor,
    ModbusSensor,
    Sensor,
    SensorBase,
    SerialSensor,
    SHT3xSensor,
    SimConfig,
    WTVB01Sensor,
    XYMD02Sensor,
)

__all__ = [
    "NAME_PATTERN",
    "PUBLIC_KEY_PATTERN",
    "SERIAL_URL_SCHEMES",
    "ADXL345Sensor",
    "BME280Sensor",
    "BrokerUrl",
    "Config",
    "DS18B20Sensor",
    "I2CSensor",
    "ModbusSensor",
    "MqttConfig",
    "QueueConfig",
    "RemoteConfigConfig",
    "SHT3xSensor",
    "Sensor",
    "SensorBase",
    "SerialSensor",
    "SimConfig",
    "TopicName",
    "WTVB01Sensor",
    "XYMD02Sensor",
    "home_assistant_id",
    "is_key_file",
    "parse_broker_url",
    "semantic_errors",
]


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


class HeartbeatConfig(Section):
    interval_s: Interval = Field(60.0, ge=1)


class DiagnosticsConfig(Section):
    # Trace allocations from start-up so a SIGUSR1 report shows what grew; it costs
    # memory and CPU, so it is for hunting a leak, not for every day.
    tracemalloc: bool = False


PUBLIC_KEY_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
"""A public key written out: the raw 32-byte Ed25519 key in hex (``gateway.trust.keys``)."""


def check_trusted_key(value: object) -> str:
    """A public key in hex, or the path of a file holding one (checked when the file loads)."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError("expected a public key (64 hex characters) or a key file's path")
    text = value.strip()
    if PUBLIC_KEY_PATTERN.fullmatch(text):
        return text
    if all(char in "0123456789abcdefABCDEF" for char in text):
        raise ValueError(f"a public key is 64 hex characters, this one has {len(text)}")
    if text.endswith(".key"):
        raise ValueError("a .key file is a private key: list its .pub file here")
    return text


TrustedKey = Annotated[str, PlainValidator(check_trusted_key)]


def is_key_file(entry: str) -> bool:
    return not PUBLIC_KEY_PATTERN.fullmatch(entry)


class RemoteConfigConfig(Section):
    # Empty: no envelope can verify, so remote configuration is off.
    trusted_keys: list[TrustedKey] = []
    max_envelope_bytes: int = Field(65536, ge=1024, le=1024 * 1024)
    apply_timeout_s: Timeout = 30.0
    # Inbound envelopes waiting to be verified; when full, the newest are dropped and counted.
    inbox_size: int = Field(32, ge=1, le=1024)


INSTALLER_PLACEHOLDERS = frozenset({"bundle", "venv", "version"})


def check_installer(value: object) -> list[str]:
    """An argv template: strings whose ``{...}`` are only the known placeholders."""
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError("expected a non-empty list of strings (the installer's argv)")
    for arg in value:
        names = set(re.findall(r"\{([^{}]*)\}", arg))
        unknown = sorted(names - INSTALLER_PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} in {arg!r} "
                             "(known: {bundle}, {venv}, {version})")
    return list(value)


InstallerArgv = Annotated[list[str], PlainValidator(check_installer)]


class FirmwareConfig(Section):
    # The release channel followed: P/firmware/CHANNEL/manifest. Firmware updates are off
    # while remote_config.trusted_keys is empty: no manifest could be verified.
    channel: TopicName = "stable"
    # A new release must be healthy (uplink connected, every sensor ok or as it was before
    # the update, config valid) this long after it starts, or the previous slot comes back.
    health_timeout_s: Timeout = 120.0
    # Starts of a new release that may fail before the launcher goes back to the previous slot.
    max_trial_boots: int = Field(3, ge=1, le=100)
    # argv of the command that installs a release bundle into a slot's venv; None is
    # VENV/bin/pip install --no-index --find-links BUNDLE edge-gateway==VERSION.
    installer: InstallerArgv | None = None
    install_timeout_s: float = Field(900.0, gt=0, le=DAY_S)
    # Download progress goes to the state topic at most this often.
    progress_interval_s: Timeout = 5.0
    # A download must average this rate over the bundle (plus a minute), and no byte
    # coming for stall_timeout_s is a cut (retried).
    min_rate_bytes_s: float = Field(2048.0, gt=0)
    stall_timeout_s: Timeout = 30.0
    # Left free on the state directory's filesystem beside an update's needs (the queue,
    # the record); an update that does not fit is refused.
    reserve_bytes: int = Field(64 << 20, ge=0)
    # A bundle that unpacks to more, or has a sparse member, is refused.
    max_unpacked_bytes: int = Field(512 << 20, gt=0)


DISCOVERY_PREFIX = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def check_discovery_prefix(value: str) -> str:
    """A topic to publish under: no wildcards, no empty levels."""
    if not DISCOVERY_PREFIX.fullmatch(value):
        raise ValueError("expected topic levels of letters, digits, '_', '.' or '-', "
                         "separated by '/', such as homeassistant")
    return value


def home_assistant_id(name: str) -> str:
    """A device or sensor name as Home Assistant takes it in a discovery topic, whose ids
    are ``[a-zA-Z0-9_-]``: names may also hold dots."""
    return name.replace(".", "_")


class HomeAssistantConfig(Section):
    """MQTT discovery: every sensor quantity appears in Home Assistant by itself."""

    enabled: bool = False
    # Home Assistant's own default; its MQTT integration options can change it.
    discovery_prefix: Annotated[str, Field(max_length=128),
                                AfterValidator(check_discovery_prefix)] = "homeassistant"


class Config(Section):
    device_id: TopicName
    groups: list[TopicName] = []
    mqtt: MqttConfig
    queue: QueueConfig = QueueConfig()
    sensors: list[Sensor] = []
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    remote_config: RemoteConfigConfig = RemoteConfigConfig()
    firmware: FirmwareConfig = FirmwareConfig()
    home_assistant: HomeAssistantConfig = HomeAssistantConfig()
    logging: LoggingConfig = LoggingConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    state_dir: FilePath = Path("/var/lib/edge-gateway")


def semantic_errors(config: Config) -> list[Problem]:
    """Rules that span fields, as (location, message) pairs like pydantic's own: those
    across sensors here, then each section's own."""
    errors: list[Problem] = []
    seen: set[str] = set()
    # Home Assistant's ids by the sensor names they come from.
    discovery_ids: dict[str, str] = {}
    for index, sensor in enumerate(config.sensors):
        if sensor.name in seen:
            errors.append((("sensors", index, "name"), f"duplicate sensor name {sensor.name!r}"))
        seen.add(sensor.name)
        discovery_id = home_assistant_id(sensor.name)
        other = discovery_ids.setdefault(discovery_id, sensor.name)
        if config.home_assistant.enabled and other != sensor.name:
            errors.append((("sensors", index, "name"),
                           f"{sensor.name!r} and {other!r} are the same sensor to Home "
                           f"Assistant ({discovery_id!r}): rename one"))
        errors += [(("sensors", index, *loc), message) for loc, message in sensor.problems()]
        produced = quantities.quantities(sensor)
        errors += [(("sensors", index, *loc), message)
                   for loc, message in alarms.problems(sensor.alarms, produced,
                                                       quantities.LABELS)]
    errors += [(("mqtt", *loc), message) for loc, message in config.mqtt.problems()]
    return errors
