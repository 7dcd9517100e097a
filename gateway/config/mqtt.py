"""The uplink's settings: brokers and protocol, TLS and credentials, and the queue.

A broker is written as a URL (``mqtt://host:port``, ``mqtts://`` for TLS) and read into a
``BrokerUrl``, which the operator's commands take too. Rules that span fields are
``MqttConfig.problems``, with locations inside the ``mqtt`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, PlainSerializer, PlainValidator

from gateway.config.fields import HOUR_S, FilePath, Interval, Problem, Timeout, TopicName
from gateway.config.section import Section


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
    initial_s: Interval = 1.0
    max_s: Interval = 60.0


class TlsConfig(Section):
    """For ``mqtts://`` brokers: the CA to trust and, for mutual TLS, our certificate."""

    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    verify_hostname: bool = True


class MqttConfig(Section):
    brokers: list[Broker] = Field(min_length=1)
    # auto: MQTT 5, or 3.1.1 with a broker that refuses 5.
    protocol: Protocol = "auto"
    topic_prefix: TopicName = "gw"
    client_id: TopicName | None = None
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(30, ge=1, le=3600)
    connect_timeout_s: Timeout = 10.0
    backoff: Backoff = Backoff()
    tls: TlsConfig = TlsConfig()
    username: str | None = None
    password_file: FilePath | None = None
    # Messages per second leaving the queue; cloud brokers throttle or disconnect a
    # client above their cap (AWS IoT Core: 100/s). None: as fast as acks allow.
    max_publish_rate: float | None = Field(None, gt=0)
    # Unacknowledged QoS 1 messages at once; the broker's receive maximum caps it too.
    max_in_flight: int = Field(100, ge=1, le=65535)
    session_expiry_s: int | None = Field(None, ge=0, le=0xFFFFFFFF)
    message_expiry_s: int | None = Field(None, ge=1, le=0xFFFFFFFF)
    # On SIGTERM, how long the uplink may keep draining the queue before it goes offline.
    shutdown_flush_s: float = Field(5.0, ge=0, le=HOUR_S)

    def problems(self) -> list[Problem]:
        """Rules that span its fields, located inside the section."""
        found: list[Problem] = []
        if (self.tls.cert_file is None) != (self.tls.key_file is None):
            found.append((("tls",), "cert_file and key_file go together"))
        if self.password_file is not None and self.username is None:
            found.append((("password_file",), "needs mqtt.username"))
        if self.backoff.max_s < self.backoff.initial_s:
            found.append((("backoff", "max_s"), "must be at least initial_s"))
        return found


class QueueConfig(Section):
    memory_max_messages: int = Field(10_000, ge=2)
    memory_max_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # 0 keeps the queue in memory only; above 0, state_dir/queue.db takes the overflow.
    disk_max_bytes: int = Field(0, ge=0)
    # With the disk tier on, a message unsent for this long is written to disk, so a
    # broker outage followed by a crash or power cut loses at most this much.
    spill_after_s: Interval = 2.0
    drop_policy: Literal["oldest", "newest"] = "oldest"
