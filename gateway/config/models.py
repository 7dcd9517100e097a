"""The device configuration: pydantic models of SPEC section 3.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. Loading from YAML, with line numbers for errors, is in ``configfile``.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, PlainSerializer, PlainValidator

from gateway.config.section import Section
from gateway.config.stages import Stages, Vibration

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""Names that appear in topics: no MQTT wildcards, separators or whitespace."""

TopicName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(value: object) -> BrokerUrl:
    if isinstance(value, BrokerUrl):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a URL such as mqtt://host:1883")  # noqa: TRY004
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"scheme must be mqtt:// or mqtts://, not {value!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}") from exc
    if not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"expected mqtt://host:port, got {value!r}")
    tls = parts.scheme == "mqtts"
    return BrokerUrl(parts.hostname, port or (8883 if tls else 1883), tls)


Broker = Annotated[BrokerUrl, PlainValidator(parse_broker_url), PlainSerializer(str)]

ProtocolName = Literal["auto", "5", "3.1.1"]
_PROTOCOLS: dict[str | int, ProtocolName] = {"auto": "auto", "5": "5", 5: "5", "3.1.1": "3.1.1"}


def check_protocol(value: object) -> ProtocolName:
    # YAML reads `protocol: 5` as a number and `protocol: 3.1.1` as a string.
    if isinstance(value, str | int) and not isinstance(value, bool) and value in _PROTOCOLS:
        return _PROTOCOLS[value]
    raise ValueError("must be auto, 5 or 3.1.1")


Protocol = Annotated[ProtocolName, PlainValidator(check_protocol)]


class Backoff(Section):
    initial_s: float = Field(1.0, gt=0)
    max_s: float = Field(60.0, gt=0)


class TlsConfig(Section):
    """For ``mqtts://`` brokers: the CA to trust and, for mutual TLS, our certificate."""

    ca_file: Annotated[Path, Field(strict=False)] | None = None
    cert_file: Annotated[Path, Field(strict=False)] | None = None
    key_file: Annotated[Path, Field(strict=False)] | None = None
    verify_hostname: bool = True


class MqttConfig(Section):
    brokers: list[Broker] = Field(min_length=1)
    # auto: MQTT 5, or 3.1.1 with a broker that refuses 5.
    protocol: Protocol = "auto"
    topic_prefix: TopicName = "gw"
    client_id: TopicName | None = None
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(30, ge=1, le=3600)
    connect_timeout_s: float = Field(10.0, gt=0)
    backoff: Backoff = Backoff()
    tls: TlsConfig = TlsConfig()
    username: str | None = None
    password_file: Annotated[Path, Field(strict=False)] | None = None
    # Messages per second leaving the queue; cloud brokers throttle or disconnect a
    # client above their cap (AWS IoT Core: 100/s). None: as fast as acks allow.
    max_publish_rate: float | None = Field(None, gt=0)
    # Unacknowledged QoS 1 messages at once; the broker's receive maximum caps it too.
    max_in_flight: int = Field(100, ge=1, le=65535)
    session_expiry_s: int | None = Field(None, ge=0, le=0xFFFFFFFF)
    message_expiry_s: int | None = Field(None, ge=1, le=0xFFFFFFFF)
    # On SIGTERM, how long the uplink may keep draining the queue before it goes offline.
    shutdown_flush_s: float = Field(5.0, ge=0)


class QueueConfig(Section):
    memory_max_messages: int = Field(10_000, ge=2)
    memory_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # 0 keeps the queue in memory only; above 0, state_dir/queue.db takes the overflow.
    disk_max_bytes: int = Field(0, ge=0)
    # With the disk tier on, a message unsent for this long is written to disk, so a
    # broker outage followed by a crash or power cut loses at most this much.
    spill_after_s: float = Field(2.0, gt=0)
    drop_policy: Literal["oldest", "newest"] = "oldest"


class SimFaults(Section):
    """Fault injection for emulated sensors (``bus: sim`` / ``port: sim`` only)."""

    nack_rate: float = Field(0.0, ge=0, le=1)
    corrupt_crc_rate: float = Field(0.0, ge=0, le=1)
    no_answer_rate: float = Field(0.0, ge=0, le=1)
    unplugged: bool = False
    stuck: bool = False
    seed: int = 0


I2C_BUS_PATTERN = re.compile(r"^/dev/i2c-\d+$")


def check_i2c_bus(value: object) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (value == "sim" or I2C_BUS_PATTERN.match(value)):
        return value
    raise ValueError("bus must be a bus number, a /dev/i2c-N path, or sim")


I2CBusName = Annotated[int | str, PlainValidator(check_i2c_bus)]


class VibrationTone(Section):
    axis: Literal["x", "y", "z"]
    freq_hz: float = Field(gt=0)
    amplitude_g: float = Field(ge=0)


class SimConfig(SimFaults):
    """An emulated chip: its faults and, for the ADXL345, what shakes it."""

    tones: list[VibrationTone] | None = None


class HealthConfig(Section):
    """When a sensor counts as degraded or failed, and how a failed one is retried."""

    degrade_after_errors: int = Field(3, ge=1)
    fail_after_errors: int = Field(10, ge=1)
    # No good reading for this many intervals degrades the sensor.
    stale_after_intervals: float = Field(3.0, gt=1)
    retry_max_s: float = Field(300.0, gt=0)


class SensorBase(Section):
    name: TopicName
    interval_s: float = Field(gt=0)
    pipeline: Stages = []
    health: HealthConfig = HealthConfig()
    sim: SimConfig | None = None

    @property
    @abstractmethod
    def simulated(self) -> bool:
        """Whether the sensor is an emulator (``bus: sim`` / ``port: sim``)."""


class I2CSensor(SensorBase):
    bus: I2CBusName
    address: int

    @property
    def simulated(self) -> bool:
        return self.bus == "sim"


class SHT3xSensor(I2CSensor):
    driver: Literal["sht3x"]
    address: Literal[0x44, 0x45] = 0x44
    repeatability: Literal["high", "medium", "low"] = "high"


Oversampling = Literal[1, 2, 4, 8, 16]


class BME280Sensor(I2CSensor):
    driver: Literal["bme280"]
    address: Literal[0x76, 0x77] = 0x76
    temperature_oversampling: Oversampling = 1
    pressure_oversampling: Oversampling = 1
    humidity_oversampling: Oversampling = 1
    iir_filter: Literal[0, 2, 4, 8, 16] = 0


class ADXL345Sensor(I2CSensor):
    driver: Literal["adxl345"]
    address: Literal[0x53, 0x1D] = 0x53
    rate_hz: Literal[100, 200, 400, 800, 1600, 3200] = 100
    range_g: Literal[2, 4, 8, 16] = 16


# pyserial's URL handlers (serial.urlhandler.protocol_NAME) that need no extra package,
# named here so that validating a file does not import pyserial.
SERIAL_URL_SCHEMES = ("socket", "rfc2217", "loop", "spy", "alt", "hwgrep")
_NETWORK_SCHEMES = ("socket", "rfc2217")
PORT_FORMS = (
    "sim, an absolute path such as /dev/ttyUSB0, or a pyserial URL "
    "(socket://HOST:PORT, rfc2217://HOST:PORT, loop://)"
)


def _has_host_and_port(url: str) -> bool:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return bool(parts.hostname) and port is not None and parts.path in ("", "/")


def check_serial_port(value: object) -> str:
    """A device path anywhere (udev links, socat ptys, containers) or a pyserial URL, which
    reaches an RS-485 line through a TCP serial server; or ``sim``."""
    if isinstance(value, str):
        if value == "sim" or (value.startswith("/") and "\0" not in value):
            return value
        scheme, separator, rest = value.partition("://")
        scheme = scheme.lower()
        if separator and scheme in _NETWORK_SCHEMES:
            if _has_host_and_port(value):
                return value
            raise ValueError(f"expected {scheme}://HOST:PORT, not {value!r}")
        if separator and scheme in SERIAL_URL_SCHEMES and (rest or scheme == "loop"):
            return value
    raise ValueError(f"port must be {PORT_FORMS}, not {value!r}")


SerialPortName = Annotated[str, PlainValidator(check_serial_port)]


class SerialSensor(SensorBase):
    port: SerialPortName
    unit: int
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    timeout_s: float = Field(0.5, gt=0, le=10)

    @property
    def simulated(self) -> bool:
        return self.port == "sim"


class XYMD02Sensor(SerialSensor):
    driver: Literal["xymd02"]
    unit: int = Field(1, ge=1, le=247)


class WTVB01Sensor(SerialSensor):
    driver: Literal["wtvb01"]
    unit: int = Field(0x50, ge=1, le=247)


Sensor = Annotated[
    SHT3xSensor | BME280Sensor | ADXL345Sensor | XYMD02Sensor | WTVB01Sensor,
    Field(discriminator="driver"),
]


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


class HeartbeatConfig(Section):
    interval_s: float = Field(60.0, ge=1)


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
    apply_timeout_s: float = Field(30.0, gt=0, le=3600)
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
    health_timeout_s: float = Field(120.0, gt=0, le=3600)
    # Starts of a new release that may fail before the launcher goes back to the previous slot.
    max_trial_boots: int = Field(3, ge=1, le=100)
    # argv of the command that installs a release bundle into a slot's venv; None is
    # VENV/bin/pip install --no-index --find-links BUNDLE edge-gateway==VERSION.
    installer: InstallerArgv | None = None
    install_timeout_s: float = Field(900.0, gt=0, le=24 * 3600)
    # Download progress goes to the state topic at most this often.
    progress_interval_s: float = Field(5.0, gt=0, le=3600)
    # A download must average this rate over the bundle (plus a minute), and no byte
    # coming for stall_timeout_s is a cut (retried).
    min_rate_bytes_s: float = Field(2048.0, gt=0)
    stall_timeout_s: float = Field(30.0, gt=0, le=3600)
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
    state_dir: Annotated[Path, Field(strict=False)] = Path("/var/lib/edge-gateway")


def semantic_errors(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules that span fields, as (location, message) pairs like pydantic's own."""
    errors: list[tuple[tuple[str | int, ...], str]] = []
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
        if sensor.sim is not None and not sensor.simulated:
            where = "port" if isinstance(sensor, SerialSensor) else "bus"
            errors.append((("sensors", index, "sim"), f"emulator settings need {where}: sim"))
        if sensor.health.fail_after_errors < sensor.health.degrade_after_errors:
            errors.append((("sensors", index, "health", "fail_after_errors"),
                           "must be at least degrade_after_errors"))
        vibration = next((s for s in sensor.pipeline if isinstance(s, Vibration)), None)
        if vibration is not None and isinstance(sensor, ADXL345Sensor):
            samples = vibration.window_s * sensor.rate_hz
            if samples < 16:
                errors.append((("sensors", index, "pipeline", 0, "window_s"),
                               f"{samples:g} samples per window at {sensor.rate_hz} Hz; "
                               "at least 16 are needed"))
            if sensor.interval_s * sensor.rate_hz > 25:
                errors.append((("sensors", index, "interval_s"),
                               f"the FIFO holds 32 samples, {32 / sensor.rate_hz:g} s at "
                               f"{sensor.rate_hz} Hz: drain it at least every "
                               f"{25 / sensor.rate_hz:g} s"))
        if sensor.sim and sensor.sim.tones is not None and not isinstance(sensor, ADXL345Sensor):
            errors.append((("sensors", index, "sim", "tones"), "only an adxl345 has tones"))
    tls = config.mqtt.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        errors.append((("mqtt", "tls"), "cert_file and key_file go together"))
    if config.mqtt.password_file is not None and config.mqtt.username is None:
        errors.append((("mqtt", "password_file"), "needs mqtt.username"))
    if config.mqtt.backoff.max_s < config.mqtt.backoff.initial_s:
        errors.append((("mqtt", "backoff", "max_s"), "must be at least initial_s"))
    return errors
