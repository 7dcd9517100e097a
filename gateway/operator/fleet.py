"""What the broker tells an operator about the devices: one record per device, built from the
retained ``P/D/status``, ``P/D/config/state`` and ``P/D/firmware/state`` (there at once on
subscription) and the live ``P/D/heartbeat`` (within a heartbeat interval).

A device's channel and running release come from its heartbeat (``firmware.channel``,
``firmware.version``); the retained online status gives the running version at once, and its
channel too when it carries one (a member docs/PROTOCOL.md section 3.3 does not define, read
if a device sends it). Devices publish these payloads, but anyone who can publish on the
broker can send anything: each payload is read leniently (unknown members ignored) and one
that does not fit is dropped, never fatal.

Online means the retained status says so, or the device has spoken live since its last
offline status: a heartbeat proves it is there whatever an old retained message says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway import wire
from gateway.operator.mqtt import Received

TERMINAL_STATES = frozenset({wire.FirmwareState.COMMITTED, wire.FirmwareState.FAILED,
                             wire.FirmwareState.ROLLED_BACK})


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StatusMessage(_Lenient):
    state: str
    ts: float | None = None
    version: str | None = None
    reason: str | None = None
    groups: list[str] = []
    channel: str | None = None


class QueueInfo(_Lenient):
    depth: int | None = None


class FirmwareInfo(_Lenient):
    version: str | None = None
    slot: str | None = None
    channel: str | None = None


class HeartbeatMessage(_Lenient):
    ts: float | None = None
    queue: QueueInfo | None = None
    config_version: dict[str, int] = {}
    firmware: FirmwareInfo | None = None


class ConfigState(_Lenient):
    scope: str | None = None
    version: int | None = None
    status: str
    reason: str | None = None
    ts: float | None = None


class FirmwareState(_Lenient):
    version: str | None = None
    state: str
    reason: str | None = None
    progress: float | None = None
    ts: float | None = None

    def about(self, version: Version) -> bool:
        return same_version(self.version, version)


Message = TypeVar("Message", StatusMessage, HeartbeatMessage, ConfigState, FirmwareState)


def _read(model: type[Message], payload: bytes) -> Message | None:
    try:
        return model.model_validate_json(payload)
    except ValidationError:
        return None


def parse_version(text: str | None) -> Version | None:
    if text is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def same_version(text: str | None, version: Version) -> bool:
    return parse_version(text) == version


@dataclass
class Device:
    id: str
    status: StatusMessage | None = None
    heartbeat: HeartbeatMessage | None = None
    heartbeat_at: float | None = None  # our clock (time.time()) when it arrived
    config_state: ConfigState | None = None
    firmware: FirmwareState | None = None
    live_since_status: bool = False

    @property
    def online(self) -> bool | None:
        """None: nothing says either way (no status, nothing live)."""
        if self.live_since_status:
            return True
        return None if self.status is None else self.status.state == wire.Presence.ONLINE

    @property
    def running(self) -> str | None:
        """The release it runs: the heartbeat's, else the online status's."""
        beat = self.heartbeat.firmware if self.heartbeat else None
        if beat is not None and beat.version is not None:
            return beat.version
        if self.status is not None and self.status.state == wire.Presence.ONLINE:
            return self.status.version
        return None

    @property
    def channel(self) -> str | None:
        beat = self.heartbeat.firmware if self.heartbeat else None
        if beat is not None and beat.channel is not None:
            return beat.channel
        return self.status.channel if self.status is not None else None

    @property
    def slot(self) -> str | None:
        beat = self.heartbeat.firmware if self.heartbeat else None
        return beat.slot if beat is not None else None


@dataclass
class Fleet:
    """Every device seen under ``prefix``, updated message by message."""

    prefix: str
    devices: dict[str, Device] = field(default_factory=dict)

    def topics(self) -> tuple[str, ...]:
        return tuple(wire.device_topic(self.prefix, wire.ANY_DEVICE, kind) for kind in
                     (wire.STATUS, wire.HEARTBEAT, wire.CONFIG_STATE, wire.FIRMWARE_STATE))

    def take(self, message: Received, now: float) -> Device | None:
        """Note what ``message`` says; the device it changed, or None."""
        found = wire.device_and_kind(message.topic, self.prefix)
        if found is None:
            return None
        name, kind = found
        device = self.devices.get(name) or Device(name)
        if kind == wire.STATUS:
            status = _read(StatusMessage, message.payload)
            if status is None:
                return None
            device.status = status
            device.live_since_status = False
        elif kind == wire.HEARTBEAT:
            beat = _read(HeartbeatMessage, message.payload)
            if beat is None:
                return None
            device.heartbeat, device.heartbeat_at = beat, now
        elif kind == wire.CONFIG_STATE:
            config = _read(ConfigState, message.payload)
            if config is None:
                return None
            device.config_state = config
        elif kind == wire.FIRMWARE_STATE:
            firmware = _read(FirmwareState, message.payload)
            if firmware is None:
                return None
            device.firmware = firmware
        else:
            return None
        if not message.retained and kind != wire.STATUS:
            device.live_since_status = True
        self.devices[device.id] = device
        return device
