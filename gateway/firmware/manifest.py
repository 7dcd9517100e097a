"""Which firmware manifests this device acts on: the bytes that arrived, against what runs.

The rules are docs/PROTOCOL.md section 6.3's, in its order, which keeps a flood cheap and a
retained manifest quiet: the size (the inbox kept no payload above its bound), the signature
(``gateway.trust``: nothing is parsed before it verifies), the payload, the channel; then a
replay, a manifest issued before the newest one this device accepted on the channel (or with
it, while that one's ``halt`` stands: a halt holds until a newer manifest lifts it), is
ignored without a word, as anyone with publish rights could send one again during its
lifetime; then a manifest of the running version, or of one refused or rolled back before (a
retained manifest comes again at every reconnect, after its expiry too), changes nothing but
the newest manifest accepted; then expiry, a version older than the running one, ``halt``
(section 6.5), and last the rollout's eligibility (section 6.4, ``rollout``; the salt
defaults to ``CHANNEL:VERSION`` with the version as PEP 440 normalises it). Every decision
but a refusal or a replay carries the manifest as ``Seen``, for the updater to remember.

Only decisions here, no I/O: the updater acts on them, and a fleet of stand-in devices can
decide exactly as a device does.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import Version

from gateway.firmware.rollout import default_salt, eligible
from gateway.firmware.state import Release, Seen
from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring
from gateway.trust.payload import parse_firmware
from gateway.trust.rejection import Rejected


@dataclass(frozen=True)
class Device:
    """What a manifest is decided against: this device and what it runs, refused and
    accepted."""

    device_id: str
    channel: str
    running: Version
    # The highest version refused or rolled back (not tried again until a newer one).
    refused: Version | None = None
    # The newest manifest accepted on ``channel``: one issued before it is a replay.
    seen: Seen | None = None


@dataclass(frozen=True)
class Act:
    """The release is for this device: fetch and install it."""

    release: Release
    seen: Seen


@dataclass(frozen=True)
class NotEligible:
    """The release is outside this device's rollout percentage."""

    version: str
    seen: Seen


@dataclass(frozen=True)
class Halt:
    """The release is halted: stop it where it has not started installing."""

    version: str
    seen: Seen


@dataclass(frozen=True)
class Known:
    """The running release, or one refused before: nothing to do or say, but the manifest is
    the channel's newest word all the same."""

    seen: Seen


@dataclass(frozen=True)
class Refuse:
    """Reported ``failed`` with the reason; changes nothing."""

    reason: str
    version: str | None = None


Decision = Act | NotEligible | Halt | Known | Refuse | None
"""None: a replay, ignored without a word."""


def _replayed(issued_at: float, halt: bool, last: Seen | None) -> bool:
    """Issued before the newest manifest accepted, or with it while its halt stands."""
    if last is None:
        return False
    return issued_at < last.issued_at or (issued_at == last.issued_at and last.halted
                                          and not halt)


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
    if _replayed(manifest.issued_at, manifest.halt, device.seen):
        return None
    seen = Seen(manifest.issued_at, named, manifest.halt)
    if version == device.running or (device.refused is not None
                                      and device.running < version <= device.refused):
        return Known(seen)
    try:
        manifest.check_expiry(now)
    except Rejected as exc:
        return Refuse(exc.reason, named)
    if version < device.running:
        return Refuse(f"not newer than the running {device.running}", named)
    if manifest.halt:
        return Halt(named, seen)
    salt = manifest.rollout.salt or default_salt(manifest.channel, named)
    if not eligible(manifest.rollout.percent, salt, device.device_id):
        return NotEligible(named, seen)
    return Act(Release(named, manifest.url, manifest.sha256, manifest.size), seen)
