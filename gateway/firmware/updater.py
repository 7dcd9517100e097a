"""The firmware task on the device: signed manifests in, one persisted state machine, reports
out on the retained ``P/D/firmware/state``.

A manifest is decided by ``manifest.decide``. A refused one (bad signature, wrong channel,
expired, older than the running release) is reported ``failed`` with the reason and changes
nothing; a replay (issued before the newest manifest accepted on the channel, which the
record keeps) is ignored without a word; one outside the rollout's percentage is
``not_eligible`` until a later manifest raises it; ``halt`` stops a release that has not
started installing (``idle``, reason ``halted``), and holds until a newer manifest. An
eligible release goes ``downloading`` -> ``verifying`` -> ``installing`` into the slot
that is not running -> ``awaiting_health``: the record names the new slot active,
``current`` is switched, and the daemon is asked to restart (exit status 75, which
the unit restarts through the stable launcher). The new release's daemon finds itself on
trial and runs the health gate: healthy within ``health_timeout_s`` is ``committed``;
otherwise the record goes back to the previous slot as ``rolled_back`` with the reason and
the daemon restarts again. A release that crashes or cannot import never gets that far: the
launcher counts its starts and rolls it back (``launcher``). A version refused or rolled
back is not tried again until a newer one comes; one that failed for a transient reason
(``failure``) is tried again after a backoff, at once for a newer manifest or after a
restart.

A release starts only when it fits: its download, what it unpacks to (``space``) and
``firmware.reserve_bytes`` must be free on the state directory's filesystem (the slot it
replaces counts as free). Running out of space anyway, at any step, is ``failed`` with a
reason that starts ``not enough space``: the partial bundle and the half-made slot are
removed, the version is not refused, and the task goes on answering manifests; when even
the record cannot be written, the report still goes out.

Every state is written (``state``) before it is acted on and reported after, so a restart at
any point resumes (a download from the bytes on disk, an install from scratch) or rolls
back; the record is published again at every start, so a report lost with the process is
sent by the next one, and nothing is ever undone because a report did not go out.

While a release installs or is on trial, newer manifests wait their turn (the latest one is
kept). The work is one task at a time, owned by ``run``'s TaskGroup; the download runs in a
thread of this task's own, installs in subprocesses. What the daemon provides (reports,
health, restart) comes through ``Host``, the install through ``Install``: so a test can run
many of these devices in one process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import structlog
from packaging.version import InvalidVersion, Version

from gateway.config.models import Config
from gateway.firmware import health, manifest, slots, space, state
from gateway.firmware.download import Download, DownloadError, Limits, sha256_of
from gateway.firmware.failure import Backoff, Failure
from gateway.firmware.launcher import RESTART_EXIT as RESTART_EXIT  # what Host.restart exits
from gateway.firmware.state import Record, Release, Seen, Trial
from gateway.trust.keys import Keyring

log = structlog.get_logger(__name__)

# A manifest is a few hundred bytes (a URL of up to 2 KiB at most): bigger is refused unread.
MANIFEST_MAX_BYTES = 8192
INBOX_SIZE = 16
# Set (with EDGE_GATEWAY_DEBUG_HOOKS=1) by tests only: the task stops for good on entering
# this state, so a test can kill the process there.
HOLD_ENV = "EDGE_GATEWAY_FIRMWARE_HOLD"
LAUNCHER_NEEDED = "the daemon was not started by `edge-gateway launch` (the unit's ExecStart)"
LOG_INTERVAL_S = 60.0
# After a transient failure: a minute, doubling to an hour (the loop's monotonic clock).
RETRY = Backoff(60.0, 3600.0)

Offload = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]


def manifest_topic(prefix: str, channel: str) -> str:
    return f"{prefix}/firmware/{channel}/manifest"


def state_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}/firmware/state"


@dataclass(frozen=True)
class Settings:
    device_id: str
    topic_prefix: str
    channel: str
    health_timeout_s: float
    max_trial_boots: int
    progress_interval_s: float
    limits: Limits
    reserve_bytes: int

    @classmethod
    def of(cls, config: Config) -> Settings:
        firmware = config.firmware
        return cls(config.device_id, config.mqtt.topic_prefix, firmware.channel,
                   firmware.health_timeout_s, firmware.max_trial_boots,
                   firmware.progress_interval_s,
                   Limits(firmware.min_rate_bytes_s, firmware.stall_timeout_s),
                   firmware.reserve_bytes)

    @property
    def manifest_topic(self) -> str:
        return manifest_topic(self.topic_prefix, self.channel)

    @property
    def state_topic(self) -> str:
        return state_topic(self.topic_prefix, self.device_id)


@dataclass(frozen=True)
class Running:
    """What this process runs: its version, its slot (None: the base install), and whether
    the launcher started it (only then can a release be activated)."""

    version: str
    slot: str | None
    launched: bool


class Message(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes | None: ...


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


class Install(Protocol):
    async def install(self, release: Release, archive: Path, slot: str) -> None: ...
    async def discard(self, slot: str) -> None: ...


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
        hold: str | None = None,
        backoff: Backoff = RETRY,
    ) -> None:
        self._dir = state_dir
        self.settings = settings
        self._keyring = keyring
        self.running = running
        self._host = host
        self._installer = installer
        self._offload = offload
        self._clock = clock
        self._hold = hold
        self._backoff = backoff
        self._retry: _Retry | None = None
        self.record = Record(active=running.slot, ts=clock())
        self._group: asyncio.TaskGroup | None = None
        self._job: asyncio.Task[None] | None = None
        self._job_release: Release | None = None
        self._pending: Message | None = None
        # Set once a restart was asked for: nothing more happens in this process.
        self._restarting = False
        self._handling = asyncio.Lock()
        self._writing = asyncio.Lock()
        # The download and the hashing: long, blocking, one at a time.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="firmware")
        self._logged_at: dict[str, float] = {}

    # -- the task ------------------------------------------------------------------------

    async def run(self, receive: Callable[[], Awaitable[Message]]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await self.start()
                while True:
                    await self.handle(await receive())
        finally:
            self._io.shutdown(wait=False)  # idle: every job waited for its thread

    async def start(self) -> None:
        """The record as the last process left it: reported again, and acted on (a trial
        to judge, work to resume)."""
        try:
            record = await asyncio.to_thread(state.load, self._dir)
        except ValueError as exc:
            aside = await asyncio.to_thread(state.set_aside, self._dir)
            log.error("firmware.state_unreadable", error=str(exc), moved_to=str(aside))
            record = None
        if record is not None:
            self.record = record
        self._publish(self.record)
        record = self.record
        if record.state == state.AWAITING_HEALTH and record.trial is not None:
            if self.running.launched and record.active == self.running.slot:
                self._spawn(self._on_trial(record.trial), "firmware-trial")
            else:
                await self._roll_back(f"the new slot did not run: {LAUNCHER_NEEDED}",
                                      restart=False)
        elif record.state in state.RESUMABLE and record.release is not None:
            release = record.release
            if not self.running.launched:
                await self._enter(state.FAILED, reason=f"cannot activate: {LAUNCHER_NEEDED}",
                                  release=None)
            elif self._halted(release.version):
                await self._enter(state.IDLE, reason="halted", release=None)
            elif self._newer(release.version):
                self._start_job(release)
            else:
                await self._enter(state.IDLE, release=None)

    async def configured(self, settings: Settings, keyring: Keyring) -> None:
        """New settings (SIGHUP, remote config): a new channel stops work on the old
        channel's release that has not started installing."""
        async with self._handling:
            old, self.settings, self._keyring = self.settings, settings, keyring
            if settings.state_topic != old.state_topic:
                self._publish(self.record)
            if settings.channel != old.channel:
                self._pending = None
                if (self._job or self._retry) is not None and not self._busy():
                    await self._stop_job()
                    await self._enter(state.IDLE, reason=f"now following {settings.channel}",
                                      release=None)

    async def handle(self, message: Message) -> None:
        if message.topic != self.settings.manifest_topic or self._restarting:
            return  # an old channel's, delivered before the switch; or this process is done
        async with self._handling:
            await self._decide_or_log(message)

    # -- decisions -----------------------------------------------------------------------

    def _device(self) -> manifest.Device:
        refused = self.record.refused
        return manifest.Device(self.settings.device_id, self.settings.channel,
                               Version(self.running.version),
                               Version(refused) if refused else None, self._seen())

    def _seen(self) -> Seen | None:
        return self.record.seen.get(self.settings.channel)

    def _halted(self, version: str) -> bool:
        seen = self._seen()
        return seen is not None and seen.halted and seen.version == version

    def _newer(self, version: str) -> bool:
        device = self._device()
        try:
            candidate = Version(version)
        except InvalidVersion:
            return False
        return candidate > device.running and (device.refused is None
                                               or candidate > device.refused)

    def _busy(self) -> bool:
        """Installing or on trial: the release finishes, commits or rolls back first."""
        return self.record.state == state.AWAITING_HEALTH or (
            self._job is not None and self.record.state == state.INSTALLING)

    async def _decide_or_log(self, message: Message) -> None:
        """A manifest whose decision cannot be recorded (a full or failing disk) is not
        acted on; the task goes on with the next."""
        try:
            await self._decide(message)
        except OSError as exc:
            log.error("firmware.state_not_written", error=str(exc))

    async def _decide(self, message: Message) -> None:
        decision = manifest.decide(message.payload, self._keyring, self._device(),
                                   self._clock(), MANIFEST_MAX_BYTES)
        if decision is None:
            return
        if isinstance(decision, manifest.Refuse):
            self._refused(decision.reason, decision.version)
            return
        if decision.seen != self._seen():
            await self._mark(decision.seen)
        if isinstance(decision, manifest.Known):
            return
        if self._busy():
            self._pending = message
            return
        if isinstance(decision, manifest.Halt):
            working = self._job_release or (self._retry and self._retry.release)
            if working and working.version == decision.version:
                await self._stop_job()
                await self._offload(lambda: _keep_only(self._downloads(), None))
                await self._enter(state.IDLE, version=decision.version, reason="halted",
                                  release=None)
                log.info("firmware.halted", version=decision.version)
        elif isinstance(decision, manifest.NotEligible):
            await self._stop_job()
            if (self.record.state, self.record.version) != (state.NOT_ELIGIBLE,
                                                            decision.version):
                await self._enter(state.NOT_ELIGIBLE, version=decision.version, release=None)
        else:
            release = decision.release
            retry = self._retry
            if self._job_release == release or (retry is not None and retry.release == release
                                                and retry.seen == decision.seen):
                return  # at work on it, or the same manifest again: it waits for its retry
            await self._stop_job()
            if not self.running.launched:
                self._refused(f"cannot activate: {LAUNCHER_NEEDED}", release.version)
                return
            self._start_job(release)

    async def _mark(self, seen: Seen) -> None:
        """The channel's newest manifest, recorded. When the record cannot be written (a
        full disk) the mark is kept in memory, written with the next record that is, and the
        manifest answered all the same: a full disk is reported, not a reason to go silent."""
        channel = self.settings.channel

        def change(record: Record) -> Record:
            return record.saw(channel, seen)

        try:
            await self._set(change, quiet=True)
        except OSError as exc:
            self.record = change(self.record)
            log.error("firmware.state_not_written", error=str(exc))

    def _refused(self, reason: str, version: str | None) -> None:
        """Reported, not recorded: a refused manifest changes nothing."""
        now = self._clock()
        self._publish(Record(state.FAILED, version=version, reason=reason, ts=now))
        last = self._logged_at.get(reason)
        if last is None or now - last >= LOG_INTERVAL_S:
            self._logged_at[reason] = now
            log.warning("firmware.refused", version=version, reason=reason)

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

    def _start_job(self, release: Release) -> None:
        self._job_release = release
        self._job = self._spawn(self._work(release), "firmware-update")

    async def _stop_job(self) -> None:
        """Ends the work under way, and the wait for a retry."""
        retry, self._retry = self._retry, None
        for task in (self._job, retry.timer if retry is not None else None):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])

    def _downloads(self) -> Path:
        return self._dir / "firmware" / "download"

    def _archive(self, release: Release) -> Path:
        return self._downloads() / f"{release.sha256}.tar.gz"

    async def _work(self, release: Release) -> None:
        archive = self._archive(release)
        slot = slots.other(self.running.slot)
        installing = False
        try:
            await self._offload(lambda: _keep_only(archive.parent, archive))
            await self._make_room(release, archive, slot)
            if self.record.state != state.INSTALLING or not await self._intact(archive,
                                                                                release):
                await self._fetch(release, archive)
            await self._enter(state.INSTALLING, version=release.version, release=release)
            installing = True
            try:
                await self._installer.install(release, archive, slot)
            finally:
                await self._offload(lambda: archive.unlink(missing_ok=True))
            await self._activate(release, slot)
        except (Failure, OSError) as exc:
            failure = _failure_of(exc, self._dir)
            if isinstance(failure, space.NoSpace):
                # Worth another try once there is room; what the update made goes now.
                await self._offload(lambda: archive.unlink(missing_ok=True))
            if installing:
                await self._installer.discard(slot)
            await self._failed(release, failure)
        finally:
            self._job, self._job_release = None, None
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
        self._retry = retry = _Retry(release, self._seen(), failures)
        await self._say_failed(version, reason, refuse=False)
        delay = self._backoff.delay(failures)
        log.error("firmware.failed", version=version, reason=reason, permanent=False,
                  retry_in_s=delay)
        retry.timer = self._spawn(self._retry_later(retry, delay), "firmware-retry")

    async def _retry_later(self, retry: _Retry, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._handling:
            if self._retry is retry and not self._restarting:
                retry.timer = None  # running now: nothing to cancel but the job
                self._start_job(retry.release)

    async def _say_failed(self, version: str, reason: str, refuse: bool) -> None:
        """``failed`` recorded (``refuse``: the version for good) and reported; reported all
        the same when the record cannot be written."""
        def change(record: Record) -> Record:
            return record.to(state.FAILED, ts=self._clock(), version=version, reason=reason,
                             release=None, refused=version if refuse else record.refused)

        try:
            await self._set(change)
        except OSError as exc:
            # The record on disk resumes the release at the next start, which fails the
            # same way or goes on.
            self.record = change(self.record)
            self._publish(self.record)
            log.error("firmware.state_not_written", state=state.FAILED, error=str(exc))

    async def _make_room(self, release: Release, archive: Path, slot: str) -> None:
        """``space.NoSpace`` unless the rest of the download, what the bundle unpacks to
        and the reserve are free; what the slot to install into holds is freed first."""
        def check() -> None:
            have = archive.stat().st_size if archive.exists() else 0
            need = (max(release.size - have, 0) + space.UNPACKED_FACTOR * release.size
                    + self.settings.reserve_bytes)
            space.require(self._dir, need,
                          reclaimable=space.tree_bytes(slots.slot_dir(self._dir, slot)))

        await self._offload(check)

    async def _fetch(self, release: Release, archive: Path) -> None:
        """``verifying`` passed with the bundle in ``archive``, or ``Failure``."""
        download = Download(release.url, archive, release.size, limits=self.settings.limits)
        if download.received < release.size:
            await self._enter(state.DOWNLOADING, version=release.version, release=release,
                              progress=_fraction(download.received, release.size))
            if download.received:
                log.info("firmware.resuming", version=release.version, have=download.received)
            await self._download(download, release)
        await self._enter(state.VERIFYING, version=release.version, release=release)
        if not await self._intact(archive, release):
            await self._offload(lambda: archive.unlink(missing_ok=True))
            raise Failure("sha256 mismatch", permanent=True)

    async def _download(self, download: Download, release: Release) -> None:
        future = asyncio.get_running_loop().run_in_executor(self._io, download.run)
        try:
            while True:
                done, _ = await asyncio.wait([future], timeout=self.settings.progress_interval_s)
                if done:
                    break
                self._publish(replace(self.record, ts=self._clock(),
                                      progress=_fraction(download.received, release.size)))
            future.result()
        except DownloadError as exc:
            if exc.permanent:
                await self._offload(lambda: download.path.unlink(missing_ok=True))
            raise
        finally:
            if not future.done():  # cancelled: the thread stops at once
                download.stop()
                await _settle(future)
                future.exception()  # retrieved: the download's outcome no longer matters
        log.info("firmware.downloaded", version=release.version, requests=download.requests,
                 ranged=download.ranged)

    async def _intact(self, archive: Path, release: Release) -> bool:
        loop = asyncio.get_running_loop()

        def check() -> bool:
            try:
                size = archive.stat().st_size
            except FileNotFoundError:
                return False
            return size == release.size and sha256_of(archive) == release.sha256

        return await loop.run_in_executor(self._io, check)

    async def _activate(self, release: Release, slot: str) -> None:
        """The new slot becomes active on trial; the launcher starts it after the restart."""
        trial = Trial(slot, self.running.slot, 0, self.settings.max_trial_boots,
                      tuple(sorted(self._host.unwell())))
        await self._enter(state.AWAITING_HEALTH, version=release.version, release=None,
                          active=slot, trial=trial)
        await self._point(slot)
        log.info("firmware.activated", version=release.version, slot=slot,
                 previous=self.running.slot)
        self._restart()

    async def _on_trial(self, trial: Trial) -> None:
        """This process is the release on trial: healthy in time, or back."""
        timeout = self.settings.health_timeout_s
        problem = await health.gate(lambda: self._host.health(frozenset(trial.excused)),
                                    timeout)
        if problem is not None:
            await self._roll_back(f"not healthy within {timeout:g} s: {problem}", restart=True)
            return
        await self._enter(state.COMMITTED, trial=None, release=None)
        log.info("firmware.committed", version=self.record.version, slot=trial.slot)
        if self._pending is not None:
            self._spawn(self._decide_pending(), "firmware-pending")

    async def _roll_back(self, reason: str, restart: bool) -> None:
        record = await self._set(lambda current: current.rolled_back(reason))
        await self._point(record.active)
        log.error("firmware.rolled_back", version=record.version, reason=reason,
                  slot=record.active)
        if restart:
            self._restart()

    async def _point(self, slot: str | None) -> None:
        """``current`` to the slot the record made active. Not switching it is no reason to
        stop: the launcher makes the link follow the record at the next start."""
        try:
            await self._offload(lambda: slots.point(self._dir, slot))
        except OSError as exc:
            log.warning("firmware.link_not_switched", slot=slot, error=str(exc))

    def _restart(self) -> None:
        self._restarting = True
        self._pending = None
        self._host.restart()

    # -- the record ----------------------------------------------------------------------

    async def _enter(self, to: str, **changes: Any) -> None:
        await self._set(lambda record: record.to(to, ts=self._clock(), **changes))

    async def _set(self, change: Callable[[Record], Record], *, quiet: bool = False) -> Record:
        """Written first, then reported (``quiet``: not, nor logged; the public part did not
        change): what was reported is always on disk. The change applies to the record as
        the last write left it, and a write is waited for even when the task is cancelled
        meanwhile, so writes land in order and none is lost."""
        async with self._writing:
            previous = self.record
            self.record = record = change(previous)
            write = asyncio.ensure_future(self._offload(lambda: state.save(self._dir, record)))
            try:
                await _settle(write)
            finally:
                if write.exception() is not None:
                    self.record = previous  # not on disk: not the record
            write.result()
        if quiet:
            return record
        self._publish(record)
        log.info("firmware.state", state=record.state, version=record.version,
                 reason=record.reason)
        if record.state == self._hold:
            log.warning("firmware.held", state=record.state)
            await asyncio.Event().wait()
        return record

    def _publish(self, record: Record) -> None:
        self._host.report(self.settings.state_topic, record.report())


def _failure_of(exc: Failure | OSError, state_dir: Path) -> Failure:
    """What went wrong as a ``Failure``: an OSError (the state directory full, read-only or
    failing) is worth another try, and a full disk says so as ``space.NoSpace`` does."""
    if isinstance(exc, Failure):
        return exc
    if space.is_full(exc):
        return space.filled(state_dir, "updating")
    return Failure(f"{type(exc).__name__}: {exc}", permanent=False)


def _fraction(have: int, size: int) -> float:
    return round(have / size, 3)


def _keep_only(folder: Path, archive: Path | None) -> None:
    """The download directory holds this release's bundle (partial or whole), or nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path != archive:
            path.unlink()


async def _settle(future: asyncio.Future[None]) -> None:
    """Waits for work in a thread to end, even when cancelled meanwhile; the cancellation is
    passed on once it has."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
