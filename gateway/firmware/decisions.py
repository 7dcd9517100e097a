"""What the firmware task does with a manifest, and with the record it finds at start: pure
functions of what the device knows (the record, the settings, what runs, the work under
way), so each rule is tested without a download, an installer or a clock.

``manifest.decide`` judges the manifest itself (signature, channel, expiry, rollout,
replays). Here its verdict meets the device's situation: nothing new starts while a release
installs or is on trial (the manifest waits its turn), a release already at work or waiting
for its retry is not started twice by the same manifest, and a halt stops only the release
it names. ``on_start`` does the same for the record a previous process left: a trial to
judge or to roll back, work to resume or to drop.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from gateway.firmware import manifest, state
from gateway.firmware.settings import Running, Settings
from gateway.firmware.state import Record, Release, Seen, Trial
from gateway.wire import FirmwareState

LAUNCHER_NEEDED = "the daemon was not started by `edge-gateway launch` (the unit's ExecStart)"


def seen(record: Record, channel: str) -> Seen | None:
    """The newest manifest accepted on ``channel``."""
    return record.seen.get(channel)


def device(record: Record, settings: Settings, running: Running) -> manifest.Device:
    """This device as ``manifest.decide`` sees it."""
    refused = record.refused
    return manifest.Device(settings.device_id, settings.channel, Version(running.version),
                           Version(refused) if refused else None,
                           seen(record, settings.channel))


def halted(record: Record, channel: str, version: str) -> bool:
    """Whether the channel's newest manifest halted ``version``."""
    last = seen(record, channel)
    return last is not None and last.halted and last.version == version


def newer(record: Record, settings: Settings, running: Running, version: str) -> bool:
    """Whether ``version`` is newer than the running one and than any refused."""
    this = device(record, settings, running)
    try:
        candidate = Version(version)
    except InvalidVersion:
        return False
    return candidate > this.running and (this.refused is None or candidate > this.refused)


def busy(record: Record, working: bool) -> bool:
    """Installing (``working``: the job of this process) or on trial: the release finishes,
    commits or rolls back before anything else starts."""
    return record.state == FirmwareState.AWAITING_HEALTH or (
        working and record.state == FirmwareState.INSTALLING)


# -- at start --------------------------------------------------------------------------


@dataclass(frozen=True)
class Judge:
    """This process runs the release on trial: judge it."""

    trial: Trial


@dataclass(frozen=True)
class RollBack:
    """The release on trial did not run: back to the previous slot, no restart."""

    reason: str


@dataclass(frozen=True)
class Enter:
    """The record goes to ``state`` (with ``reason``), the release dropped."""

    state: FirmwareState
    reason: str | None = None


@dataclass(frozen=True)
class Resume:
    """The work on ``release`` goes on where it stopped."""

    release: Release


def on_start(record: Record, settings: Settings,
             running: Running) -> Judge | RollBack | Enter | Resume | None:
    """What to do with the record as the last process left it; None: nothing."""
    if record.state == FirmwareState.AWAITING_HEALTH and record.trial is not None:
        if running.launched and record.active == running.slot:
            return Judge(record.trial)
        return RollBack(f"the new slot did not run: {LAUNCHER_NEEDED}")
    if record.state in state.RESUMABLE and record.release is not None:
        version = record.release.version
        if not running.launched:
            return Enter(FirmwareState.FAILED, f"cannot activate: {LAUNCHER_NEEDED}")
        if halted(record, settings.channel, version):
            return Enter(FirmwareState.IDLE, "halted")
        if newer(record, settings, running, version):
            return Resume(record.release)
        return Enter(FirmwareState.IDLE)
    return None


# -- a manifest ------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """What is under way: the job's release, and the release waiting for its retry with
    the manifest it came with."""

    job: Release | None = None
    retry: Release | None = None
    retry_seen: Seen | None = None


@dataclass(frozen=True)
class Wait:
    """A release installs or is on trial: the manifest is decided again after it."""


@dataclass(frozen=True)
class Halt:
    """The work on ``version`` stops, its bundle goes, the record turns ``idle``."""

    version: str


@dataclass(frozen=True)
class NotEligible:
    """The work under way stops; the record turns ``not_eligible`` unless it says so."""

    version: str
    enter: bool


@dataclass(frozen=True)
class Refuse:
    """The work under way stops, and the release is refused (reported, not recorded)."""

    reason: str
    version: str


@dataclass(frozen=True)
class Start:
    """The work under way stops, and the work on ``release`` starts."""

    release: Release


Action = Wait | Halt | NotEligible | Refuse | Start


def on_manifest(decision: manifest.Act | manifest.NotEligible | manifest.Halt | manifest.Known,
                record: Record, work: Work, working: bool, running: Running) -> Action | None:
    """What a manifest ``manifest.decide`` did not refuse does here; None: nothing."""
    if isinstance(decision, manifest.Known):
        return None
    if busy(record, working):
        return Wait()
    if isinstance(decision, manifest.Halt):
        at_work = work.job or work.retry
        return Halt(decision.version) if at_work and at_work.version == decision.version \
            else None
    if isinstance(decision, manifest.NotEligible):
        return NotEligible(decision.version, (record.state, record.version)
                           != (FirmwareState.NOT_ELIGIBLE, decision.version))
    release = decision.release
    if work.job == release or (work.retry == release and work.retry_seen == decision.seen):
        return None  # at work on it, or the same manifest again: it waits for its retry
    if not running.launched:
        return Refuse(f"cannot activate: {LAUNCHER_NEEDED}", release.version)
    return Start(release)
