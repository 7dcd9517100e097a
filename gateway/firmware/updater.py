"""The firmware task on the device: signed manifests in, one persisted state machine, reports
out on the retained ``P/D/firmware/state``. It holds the parts together and owns their
tasks: what a manifest or the record found at start means (``decisions``), one attempt at a
release (``job``), the release on trial (``trial``), and the record's one writer
(``recorder``).

A manifest is decided by ``manifest.decide``. A refused one (bad signature, wrong channel,
expired, older than the running release) is reported ``failed`` with the reason and changes
nothing; a replay (issued before the newest manifest accepted on the channel, which the
record keeps) is ignored without a word; one outside the rollout's percentage is
``not_eligible`` until a later manifest raises it; ``halt`` stops a release that has not
started installing (``idle``, reason ``halted``), and holds until a newer manifest. An
eligible release goes ``downloading`` -> ``verifying`` -> ``installing`` into the slot
that is not running -> ``awaiting_health``: the record names the new slot active,
``current`` is switched, and the daemon is asked to restart (``Host.restart``: it stops and
starts the launcher again in the same process). The new release's daemon finds itself on
trial and runs the health gate: healthy within ``health_timeout_s`` is ``committed``;
otherwise the record goes back to the previous slot as ``rolled_back`` with the reason and
the daemon restarts again. A release that crashes or cannot import never gets that far: the
launcher counts its starts and rolls it back (``launcher``). A version refused or rolled
back is not tried again until a newer one comes; one that failed for a transient reason
(``failure``; out of space among them) is tried again after a backoff, at once for a newer
manifest or after a restart, and the task goes on answering manifests meanwhile.

Every state is written before it is acted on and reported after, so a restart at any point
resumes (a download from the bytes on disk, an install from scratch) or rolls back; the
record is published again at every start, so a report lost with the process is sent by the
next one, and nothing is ever undone because a report did not go out.

While a release installs or is on trial, newer manifests wait their turn (the latest one is
kept). The work is one task at a time, owned by ``run``'s TaskGroup. What the daemon
provides (reports, health, restart) comes through ``Host``, the install through
``job.Install``: so a test can run many of these devices in one process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.firmware import decisions, manifest, trial
from gateway.firmware.failure import Backoff, Failure
from gateway.firmware.job import Install, Job
from gateway.firmware.launcher import RESTART_EXIT as RESTART_EXIT  # what Host.restart exits
from gateway.firmware.recorder import Recorder
from gateway.firmware.settings import Running as Running
from gateway.firmware.settings import Settings as Settings
from gateway.firmware.state import Record, Release, Seen, Trial
from gateway.logthrottle import LogThrottle
from gateway.statefile import Offload
from gateway.trust.keys import Keyring
from gateway.wire import FirmwareState

log = structlog.get_logger(__name__)

# A manifest is a few hundred bytes (a URL of up to 2 KiB at most): bigger is refused unread.
MANIFEST_MAX_BYTES = 8192
INBOX_SIZE = 16
# After a transient failure: a minute, doubling to an hour (the loop's monotonic clock).
RETRY = Backoff(60.0, 3600.0)


class Message(Protocol):
    """A manifest as the broker delivered it (None: larger than the inbox keeps)."""

    @property
    def topic(self) -> str:
        """The topic it came on."""

    @property
    def payload(self) -> bytes | None:
        """Its bytes; None when it was larger than the inbox keeps."""


class Host(Protocol):
    """What the daemon does for the updater."""

    def report(self, topic: str, payload: bytes) -> None:
        """Publish retained (QoS 1), again after a reconnect until acknowledged."""

    def health(self, excused: frozenset[str]) -> str | None:
        """The first reason this process is not healthy (sensors in ``excused`` were not ok
        before the update and do not count), or None."""

    def unwell(self) -> frozenset[str]:
        """The sensors that are not ok right now."""

    def restart(self) -> None:
        """Stop cleanly and exit with ``RESTART_EXIT``."""


@dataclass
class _Retry:
    """A release that failed for a transient reason, tried again by ``timer``; the same
    manifest delivered again meanwhile (a reconnect) waits for it."""

    release: Release
    seen: Seen | None
    failures: int
    timer: asyncio.Task[None] | None = None


async def _to_thread(fn: Callable[[], None]) -> None:
    await asyncio.to_thread(fn)


class Updater:
    """The firmware task of one device: ``run`` it with the manifests it receives."""

    def __init__(
        self,
        state_dir: Path,
        settings: Settings,
        keyring: Keyring,
        running: Running,
        host: Host,
        installer: Install,
        *,
        offload: Offload = _to_thread,
        clock: Callable[[], float] = time.time,
        # Tests only: the task stops for good on entering this state, so a test can look at
        # what a kill there leaves.
        hold: str | None = None,
        backoff: Backoff = RETRY,
    ) -> None:
        self.settings = settings
        self._keyring = keyring
        self.running = running
        self._host = host
        self._clock = clock
        self._backoff = backoff
        self._retry: _Retry | None = None
        self._recorder = Recorder(state_dir, Record(active=running.slot, ts=clock()),
                                  self._publish, offload, clock, hold)
        self._job = Job(state_dir, self._recorder, installer, running, lambda: self.settings,
                        host.unwell, offload)
        self._group: asyncio.TaskGroup | None = None
        self._work: asyncio.Task[None] | None = None
        self._work_release: Release | None = None
        self._pending: Message | None = None
        # Set once a restart was asked for: nothing more happens in this process.
        self._restarting = False
        self._handling = asyncio.Lock()
        # A refused manifest can come at any rate from anyone on the broker: one line a
        # minute per reason.
        self._refusals = LogThrottle()

    @property
    def record(self) -> Record:
        """The firmware record as this process knows it."""
        return self._recorder.record

    # -- the task ------------------------------------------------------------------------

    async def run(self, receive: Callable[[], Awaitable[Message]]) -> None:
        """``start``, then every manifest ``receive`` gives, until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await self.start()
                while True:
                    await self.handle(await receive())
        finally:
            self._job.close()

    async def start(self) -> None:
        """The record as the last process left it: reported again, and acted on (a trial
        to judge, work to resume)."""
        await self._recorder.load()
        self._recorder.publish()
        match decisions.on_start(self.record, self.settings, self.running):
            case decisions.Judge(on_trial):
                self._spawn(self._on_trial(on_trial), "firmware-trial")
            case decisions.RollBack(reason):
                await trial.roll_back(self._recorder, reason)
            case decisions.Enter(to, reason):
                await self._recorder.enter(to, reason=reason, release=None)
            case decisions.Resume(release):
                self._start_work(release)

    async def configured(self, settings: Settings, keyring: Keyring) -> None:
        """New settings (SIGHUP, remote config): a new channel stops work on the old
        channel's release that has not started installing."""
        async with self._handling:
            old, self.settings, self._keyring = self.settings, settings, keyring
            if settings.state_topic != old.state_topic:
                self._recorder.publish()
            if settings.channel != old.channel:
                self._pending = None
                if (self._work or self._retry) is not None and not self._busy():
                    await self._stop_work()
                    await self._recorder.enter(FirmwareState.IDLE, release=None,
                                               reason=f"now following {settings.channel}")

    async def handle(self, message: Message) -> None:
        """Decides one manifest and acts on it."""
        if message.topic != self.settings.manifest_topic or self._restarting:
            return  # an old channel's, delivered before the switch; or this process is done
        async with self._handling:
            await self._decide_or_log(message)

    # -- manifests -----------------------------------------------------------------------

    def _busy(self) -> bool:
        return decisions.busy(self.record, self._work is not None)

    async def _decide_or_log(self, message: Message) -> None:
        """A manifest whose decision cannot be recorded (a full or failing disk) is not
        acted on; the task goes on with the next."""
        try:
            await self._decide(message)
        except OSError as exc:
            log.error("firmware.state_not_written", error=str(exc))

    async def _decide(self, message: Message) -> None:
        decision = manifest.decide(message.payload, self._keyring,
                                   decisions.device(self.record, self.settings, self.running),
                                   self._clock(), MANIFEST_MAX_BYTES)
        if decision is None:
            return
        if isinstance(decision, manifest.Refuse):
            self._refused(decision.reason, decision.version)
            return
        if decision.seen != decisions.seen(self.record, self.settings.channel):
            # Kept in memory when the disk is full: the manifest is answered all the same.
            channel, mark = self.settings.channel, decision.seen
            await self._recorder.keep(lambda record: record.saw(channel, mark), quiet=True)
        retry = self._retry
        work = decisions.Work(self._work_release) if retry is None else decisions.Work(
            self._work_release, retry.release, retry.seen)
        match decisions.on_manifest(decision, self.record, work, self._work is not None,
                                    self.running):
            case decisions.Wait():
                self._pending = message
            case decisions.Halt(version):
                await self._stop_work()
                await self._job.clear()
                await self._recorder.enter(FirmwareState.IDLE, version=version, reason="halted",
                                           release=None)
                log.info("firmware.halted", version=version)
            case decisions.NotEligible(version, enter):
                await self._stop_work()
                if enter:
                    await self._recorder.enter(FirmwareState.NOT_ELIGIBLE, version=version,
                                               release=None)
            case decisions.Refuse(reason, version):
                await self._stop_work()
                self._refused(reason, version)
            case decisions.Start(release):
                await self._stop_work()
                self._start_work(release)

    def _refused(self, reason: str, version: str | None) -> None:
        """Reported, not recorded: a refused manifest changes nothing."""
        self._recorder.publish(Record(FirmwareState.FAILED, version=version, reason=reason,
                                      ts=self._clock()))
        if (extra := self._refusals.admit(reason)) is not None:
            log.warning("firmware.refused", version=version, reason=reason, **extra)

    async def _decide_pending(self) -> None:
        """A manifest that waited for the install or trial to end."""
        async with self._handling:
            message, self._pending = self._pending, None
            if message is not None and not self._restarting:
                await self._decide_or_log(message)

    # -- the work ------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._group is not None, "run() owns the updater's tasks"
        return self._group.create_task(coro, name=name)

    def _start_work(self, release: Release) -> None:
        self._work_release = release
        self._work = self._spawn(self._attempt(release), "firmware-update")

    async def _stop_work(self) -> None:
        """Ends the work under way, and the wait for a retry."""
        retry, self._retry = self._retry, None
        for task in (self._work, retry.timer if retry is not None else None):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])

    async def _attempt(self, release: Release) -> None:
        try:
            await self._job.attempt(release)
        except Failure as failure:
            await self._failed(release, failure)
        else:
            self._restart()
        finally:
            self._work, self._work_release = None, None
        if self._pending is not None:
            self._spawn(self._decide_pending(), "firmware-pending")

    async def _failed(self, release: Release, failure: Failure) -> None:
        """Reported ``failed``; refused for good, or tried again after the backoff."""
        version, reason = release.version, failure.reason
        if failure.permanent:
            await self._say_failed(version, reason, refuse=True)
            log.error("firmware.failed", version=version, reason=reason, permanent=True)
            return
        retry = self._retry
        failures = retry.failures + 1 if retry is not None and retry.release == release else 1
        self._retry = retry = _Retry(release, decisions.seen(self.record, self.settings.channel),
                                     failures)
        await self._say_failed(version, reason, refuse=False)
        delay = self._backoff.delay(failures)
        log.error("firmware.failed", version=version, reason=reason, permanent=False,
                  retry_in_s=delay)
        retry.timer = self._spawn(self._retry_later(retry, delay), "firmware-retry")

    async def _say_failed(self, version: str, reason: str, refuse: bool) -> None:
        """``failed`` recorded (``refuse``: the version for good) and reported; reported all
        the same when the record cannot be written (the record on disk resumes the release
        at the next start, which fails the same way or goes on)."""
        await self._recorder.keep(lambda record: record.to(
            FirmwareState.FAILED, ts=self._clock(), version=version, reason=reason, release=None,
            refused=version if refuse else record.refused))

    async def _retry_later(self, retry: _Retry, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._handling:
            if self._retry is retry and not self._restarting:
                retry.timer = None  # running now: nothing to cancel but the job
                self._start_work(retry.release)

    # -- the trial -----------------------------------------------------------------------

    async def _on_trial(self, on_trial: Trial) -> None:
        """This process is the release on trial: committed, or back and restarted."""
        if not await trial.judge(on_trial, self._recorder, self._host.health,
                                 self.settings.health_timeout_s):
            self._restart()
            return
        if self._pending is not None:
            self._spawn(self._decide_pending(), "firmware-pending")

    def _restart(self) -> None:
        self._restarting = True
        self._pending = None
        self._host.restart()

    def _publish(self, record: Record) -> None:
        self._host.report(self.settings.state_topic, record.report())
