"""Which firmware manifests this device acts on: the bytes that arrived, against what runs.

The order keeps a flood cheap and a retained manifest quiet: the size (the inbox kept no
payload above its bound), the signature (``gateway.trust``: nothing is parsed before it
verifies), the payload, the channel; then a manifest of the running version, or of one
refused or rolled back before (a retained manifest comes again at every reconnect, after
its expiry too), is ignored without a word; then expiry, a version older than the running
one, ``halt``, and last SPEC section 5's eligibility (``rollout``; the salt defaults to
``CHANNEL:VERSION`` with the version as PEP 440 normalises it).

Only decisions here, no I/O: the updater acts on them, and a fleet of stand-in devices can
decide exactly as a device does.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import Version

from gateway.firmware.rollout import default_salt, eligible
from gateway.firmware.state import Release
from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring
from gateway.trust.payload import parse_firmware
from gateway.trust.rejection import Rejected


@dataclass(frozen=True)
class Device:
    device_id: str
    channel: str
    running: Version
    # The highest version refused or rolled back (not tried again until a newer one).
    refused: Version | None = None


@dataclass(frozen=True)
class Act:
    release: Release


@dataclass(frozen=True)
class NotEligible:
    version: str


@dataclass(frozen=True)
class Halt:
    version: str


@dataclass(frozen=True)
class Refuse:
    """Reported ``failed`` with the reason; changes nothing."""

    reason: str
    version: str | None = None


Decision = Act | NotEligible | Halt | Refuse | None
"""None: nothing to do and nothing to say (the running or a refused release again)."""


def decide(payload: bytes | None, keyring: Keyring, device: Device, now: float,
           max_bytes: int) -> Decision:
    """What to do with the bytes of a manifest (None: larger than the inbox keeps)."""
    if payload is None:
        return Refuse("too large")
    try:
        manifest = parse_firmware(verify(payload, keyring, max_bytes).payload)
    except Rejected as exc:
        return Refuse(exc.reason)
    version = manifest.version
    named = str(version)
    if manifest.channel != device.channel:
        return Refuse(f"wrong channel: {manifest.channel} (this device follows "
                      f"{device.channel})", named)
    if version == device.running:
        return None
    if device.refused is not None and device.running < version <= device.refused:
        return None
    try:
        manifest.check_expiry(now)
    except Rejected as exc:
        return Refuse(exc.reason, named)
    if version < device.running:
        return Refuse(f"not newer than the running {device.running}", named)
    if manifest.halt:
        return Halt(named)
    salt = manifest.rollout.salt or default_salt(manifest.channel, named)
    if not eligible(manifest.rollout.percent, salt, device.device_id):
        return NotEligible(named)
    return Act(Release(named, manifest.url, manifest.sha256, manifest.size))
