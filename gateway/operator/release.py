"""``edge-gateway release``: a release bundle described, signed and published as the retained
firmware manifest of its channel (docs/PROTOCOL.md section 6.1), which ``rollout`` re-signs
step by step.

The manifest is checked with the devices' own parser before it is signed, so what the
operator publishes is exactly what a device accepts as well formed, and a bad ``--url`` or
``--version`` is refused here with the same message a device would report. The salt is
written out even when it is the default (``CHANNEL:VERSION``): the manifest then says by
itself which cohort each percentage draws, for the devices and for ``rollout`` alike.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from gateway import wire
from gateway.config.operator import BrokerAccess
from gateway.firmware.rollout import default_salt
from gateway.operator.mqtt import Session
from gateway.trust.envelope import sign
from gateway.trust.keys import PrivateKey
from gateway.trust.payload import FirmwarePayload, parse_firmware

DEFAULT_TTL_S = 30 * 86400.0
"""A manifest stays retained for devices that were away; a month covers a long outage."""

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Artifact:
    size: int
    sha256: str


def digest(path: Path) -> Artifact:
    """Size and sha256 of the bundle, read in chunks; raises ``OSError``."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            sha.update(chunk)
            size += len(chunk)
    return Artifact(size, sha.hexdigest())


@dataclass(frozen=True)
class Manifest:
    """A release as a manifest says it, less the times, which each signing sets afresh."""

    channel: str
    version: str
    url: str
    sha256: str
    size: int
    percent: float
    salt: str
    halt: bool = False
    ttl_s: float = DEFAULT_TTL_S

    @classmethod
    def of(cls, channel: str, version: str, url: str, artifact: Artifact, percent: float,
           salt: str | None = None, halt: bool = False,
           ttl_s: float = DEFAULT_TTL_S) -> Manifest:
        return cls(channel, version, url, artifact.sha256, artifact.size, percent,
                   salt or default_salt(channel, version), halt, ttl_s)

    @classmethod
    def from_payload(cls, payload: FirmwarePayload) -> Manifest:
        """The release a published manifest describes, with the lifetime it was given."""
        channel, version = payload.channel, str(payload.version)
        return cls(channel, version, payload.url, payload.sha256, payload.size,
                   payload.rollout.percent,
                   payload.rollout.salt or default_salt(channel, version),
                   payload.halt, payload.expires_at - payload.issued_at)

    def at(self, percent: float, halt: bool = False) -> Manifest:
        return replace(self, percent=percent, halt=halt)

    def payload(self, issued_at: float) -> bytes:
        body = {
            "kind": "firmware", "channel": self.channel, "version": self.version,
            "url": self.url, "sha256": self.sha256, "size": self.size,
            "rollout": {"percent": float(self.percent), "salt": self.salt},
            "halt": self.halt, "issued_at": issued_at, "expires_at": issued_at + self.ttl_s,
        }
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()

    def check(self) -> FirmwarePayload:
        """The manifest as a device parses it; ``Rejected`` with the device's reason."""
        return parse_firmware(self.payload(time.time()))

    def signed(self, key: PrivateKey, issued_at: float | None = None) -> bytes:
        return sign(self.payload(time.time() if issued_at is None else issued_at), key)


async def publish(broker: BrokerAccess, prefix: str, manifest: Manifest, key: PrivateKey) -> str:
    """Publish retained at QoS 1, acknowledged by the broker; the topic it went to."""
    topic = wire.manifest_topic(prefix, manifest.channel)
    async with Session(broker) as mqtt:
        await mqtt.publish_retained(topic, manifest.signed(key))
    return topic
