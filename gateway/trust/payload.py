"""The payloads a verified envelope carries (docs/PROTOCOL.md sections 5.1 and 6.1), as
typed, immutable models.

Only bytes that ``envelope.verify`` returned come here. The caller names the kind it expects
(the topic decides it), so a firmware manifest sent to a config topic is ``wrong kind`` and
never a config. Reasons: ``not json``, ``wrong kind``, ``malformed payload: FIELD: message``
(the first problem found; unknown members are errors, as in the device file) and, from
``check_expiry``, ``expired``.

Expiry is a separate step because the order of the rules belongs to the caller: a retained
envelope that was applied comes back at every reconnect, after its expiry too, and must be
recognised as the one already applied rather than reported as expired. Addressing and
version sequences need the device's state and are not decided here either.

Timestamps are Unix seconds, as every ``ts`` the device publishes (docs/PROTOCOL.md
section 1.2).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)

from gateway.trust import strictjson
from gateway.trust.rejection import Rejected

MAX_DEPTH = 32
"""Nesting a payload may have; a device file nests a few levels, a hostile one thousands."""

Timestamp = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64)]


def _version(value: object) -> Version:
    if not isinstance(value, str):
        raise ValueError("expected a PEP 440 version string")  # noqa: TRY004
    try:
        return Version(value)
    except InvalidVersion:
        raise ValueError(f"not a PEP 440 version: {value[:64]!r}") from None


Pep440 = Annotated[Version, PlainValidator(_version), PlainSerializer(str)]


def _http_url(value: object) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise ValueError("expected an http:// or https:// URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, PlainValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Signed(_Model):
    """What every payload carries: when it was issued and until when it may be acted on."""

    issued_at: Timestamp
    expires_at: Timestamp

    @model_validator(mode="after")
    def _expires_after_issue(self) -> Signed:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self

    def check_expiry(self, now: float) -> None:
        """Raises ``Rejected("expired")`` from ``expires_at`` on."""
        if now >= self.expires_at:
            raise Rejected("expired")


class ConfigPayload(Signed):
    """Top-level keys of the device file to replace, for one device or one group."""

    kind: Literal["config"]
    device: Name | None = None
    group: Name | None = None
    version: int = Field(ge=1, le=2**63 - 1)
    config: dict[str, Any]

    @model_validator(mode="after")
    def _one_address(self) -> ConfigPayload:
        if (self.device is None) == (self.group is None):
            raise ValueError("needs exactly one of device and group")
        return self

    @property
    def scope(self) -> str:
        """``device`` or ``group:G``, as the state topic names it."""
        return "device" if self.group is None else f"group:{self.group}"


class Rollout(_Model):
    """Who may install a release: the share of the channel's devices, and the salt that
    draws them."""

    percent: float = Field(ge=0, le=100, allow_inf_nan=False)
    salt: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class FirmwarePayload(Signed):
    """A release on a channel: where its bundle is, what it hashes to, who may install it."""

    kind: Literal["firmware"]
    channel: Name
    version: Pep440
    url: HttpUrl
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: int = Field(ge=1, le=2**63 - 1)
    rollout: Rollout
    halt: bool = False


Payload = TypeVar("Payload", ConfigPayload, FirmwarePayload)

_PLAIN_MESSAGES = {"extra_forbidden": "unknown key", "missing": "required key is missing"}


def _malformed(error: Any) -> Rejected:
    field = ".".join(strictjson.field_name(part) for part in error["loc"]) or "(top level)"
    message = _PLAIN_MESSAGES.get(error["type"]) or str(error["msg"])
    return Rejected(f"malformed payload: {field}: {message.removeprefix('Value error, ')}")


def _parse(data: bytes, model: type[Payload], kind: str) -> Payload:
    try:
        document = strictjson.loads(data, MAX_DEPTH)
    except strictjson.NotJson:
        raise Rejected("not json") from None
    except strictjson.Refused as exc:
        raise Rejected(f"malformed payload: {exc}") from None
    if not isinstance(document, dict):
        raise Rejected("malformed payload: (top level): expected an object")
    if "kind" not in document:
        raise Rejected("malformed payload: kind: required key is missing")
    if document["kind"] != kind:
        raise Rejected("wrong kind")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise _malformed(exc.errors()[0]) from None


def parse_config(data: bytes) -> ConfigPayload:
    """The config payload in verified bytes; ``Rejected`` with the device's reason."""
    return _parse(data, ConfigPayload, "config")


def parse_firmware(data: bytes) -> FirmwarePayload:
    """The firmware manifest in verified bytes; ``Rejected`` with the device's reason."""
    return _parse(data, FirmwarePayload, "firmware")
