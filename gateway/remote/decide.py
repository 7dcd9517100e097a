"""Which config envelopes this device acts on: the bytes that arrived, against what it trusts
and has applied. Only the decision here, no I/O: the reconfigurer acts on it.

The order is the firmware manifest's (``gateway.firmware.manifest``), cheapest first and
quiet for a retained envelope: the topic's address, the size (the inbox kept no payload
above its bound), the envelope and its signature (``gateway.trust``: nothing is parsed
before it verifies), the payload and whom it addresses; then the version stored (applied,
or set aside for the run: ``effective.settle``), or the one rolled back, is ignored without
a word (a retained envelope comes again at every reconnect, after its expiry too); then
expiry, a version older than the stored one, and last the keys a remote layer may not set.
Validating the config the layer leads to needs the device's files (trusted key files), so
it is the reconfigurer's, after ``Accept``.

A refusal carries the ``kid`` of the key that signed it once the signature verified. Only
the answer to a push to this device goes to the retained ``config/state`` (``reported``):
junk anyone on the broker can send is only counted, and so is a signed envelope anyone can
copy from the broker, where they are retained: one for another device or group, a document
of another kind (a firmware manifest), one older than the version stored in its scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from gateway import wire
from gateway.config.models import Config
from gateway.remote.layers import (
    DEVICE,
    Applied,
    Layer,
    group_of,
    group_scope,
    local_only,
    refused_keys,
)
from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring
from gateway.trust.payload import ConfigPayload, parse_config
from gateway.trust.rejection import Rejected


class Reason(Enum):
    """Why an envelope was refused; ``value`` is the reason's text on ``config/state``."""

    NOT_ADDRESSED = "not addressed"
    TOO_LARGE = "too large"
    NOT_JSON = "not json"
    MALFORMED_ENVELOPE = "malformed envelope"
    UNSUPPORTED_ALG = "unsupported alg"
    UNKNOWN_KEY = "unknown key"
    BAD_SIGNATURE = "bad signature"
    WRONG_KIND = "wrong kind"
    MALFORMED_PAYLOAD = "malformed payload"
    EXPIRED = "expired"
    STALE_VERSION = "stale version"
    INVALID_CONFIG = "invalid config"

    @classmethod
    def of(cls, rejected: Rejected) -> tuple[Reason, str | None]:
        """A trust rejection (``malformed payload: FIELD: message``) as reason and detail."""
        head, _, detail = rejected.reason.partition(": ")
        return cls(head), detail or None


class Message(Protocol):
    """What a decision reads of an arrived message."""

    @property
    def topic(self) -> str:
        """The topic it arrived on."""

    @property
    def payload(self) -> bytes | None:
        """Its bytes; None when it was too large to keep."""


@dataclass(frozen=True)
class TrustState:
    """What a decision reads of the device: whom it trusts, who it is, what it applied."""

    keyring: Keyring
    device_id: str
    groups: tuple[str, ...]
    # Each config topic the device takes updates from, and its scope.
    topics: Mapping[str, str]
    # The layers stored, those set aside for the run included: their envelopes are done.
    applied: Applied
    max_bytes: int

    @classmethod
    def of(cls, config: Config, keyring: Keyring, applied: Applied) -> TrustState:
        """The trust state of a running config, its keyring and its applied layers."""
        return cls(keyring, config.device_id, tuple(config.groups), config_topics(config),
                   applied, config.remote_config.max_envelope_bytes)


@dataclass(frozen=True)
class Ignore:
    """The applied version again, or the one rolled back: nothing to do or say."""


@dataclass(frozen=True)
class Refuse:
    """An envelope refused, for ``reason``; the word of someone trusted only when
    ``verified``."""

    reason: Reason
    detail: str | None = None
    scope: str | None = None
    version: int | None = None
    # The key that signed the envelope, once its signature verified; None for junk.
    kid: str | None = None

    @property
    def verified(self) -> bool:
        """Whether a trusted key signed the envelope: only then is it reported."""
        return self.kid is not None

    def __str__(self) -> str:
        return self.reason.value if self.detail is None else f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class Accept:
    """An envelope to apply: its layer, and the key that signed it."""

    layer: Layer
    kid: str


Decision = Ignore | Refuse | Accept


def reported(refusal: Refuse, stored: Applied) -> bool:
    """Whether ``refusal`` answers a push made to this device (retained on ``config/state``)
    rather than being junk or a replay (only counted): signed by a trusted key, addressed
    here, of the config kind, and newer than what its scope stores."""
    if not refusal.verified or refusal.reason in (Reason.NOT_ADDRESSED, Reason.WRONG_KIND):
        return False
    return (refusal.version is None or refusal.scope is None
            or refusal.version > stored.version(refusal.scope))


def config_topics(config: Config) -> dict[str, str]:
    """The topics this device takes config from, and the scope of each."""
    prefix = config.mqtt.topic_prefix
    topics = {wire.config_set_topic(prefix, config.device_id): DEVICE}
    for group in config.groups:
        topics[wire.group_config_set_topic(prefix, group)] = group_scope(group)
    return topics


def _addressed(scope: str, payload: ConfigPayload, trust: TrustState) -> bool:
    if scope == DEVICE:
        return payload.device == trust.device_id and payload.group is None
    group = group_of(scope)
    return payload.group == group and payload.device is None and group in trust.groups


def decide(message: Message, trust: TrustState, now: float) -> Decision:
    """What to do with ``message``, by the acceptance rules in order (docs/PROTOCOL.md
    section 5.3); ``now`` is the wall clock, for expiry."""
    scope = trust.topics.get(message.topic)
    if scope is None:
        return Refuse(Reason.NOT_ADDRESSED)
    if message.payload is None:
        return Refuse(Reason.TOO_LARGE, scope=scope)
    try:
        verified = verify(message.payload, trust.keyring, trust.max_bytes)
    except Rejected as exc:
        return Refuse(*Reason.of(exc), scope=scope)
    kid = verified.kid
    try:
        payload = parse_config(verified.payload)
    except Rejected as exc:
        return Refuse(*Reason.of(exc), scope=scope, kid=kid)
    version = payload.version
    if not _addressed(scope, payload, trust):
        return Refuse(Reason.NOT_ADDRESSED, scope=scope, version=version, kid=kid)
    applied = trust.applied.version(scope)
    if version == applied or version == trust.applied.failed.get(scope):
        return Ignore()
    try:
        payload.check_expiry(now)
    except Rejected:
        return Refuse(Reason.EXPIRED, scope=scope, version=version, kid=kid)
    if version < applied:
        return Refuse(Reason.STALE_VERSION, scope=scope, version=version, kid=kid)
    refused = refused_keys(scope, payload.config) + local_only(payload.config)
    if refused:
        return Refuse(Reason.INVALID_CONFIG, f"{refused[0]}: cannot be set remotely", scope,
                      version, kid)
    return Accept(Layer(scope, version, payload.config), kid)
