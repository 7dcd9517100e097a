"""One attempt at one release: make room, fetch, verify, install, activate.

The bundle goes to ``state_dir/firmware/download/``, which holds this release's bundle or
nothing. The attempt starts only when the rest of the download, what it unpacks to
(``space``) and ``firmware.reserve_bytes`` are free (the slot it replaces counts as free);
then it downloads (resuming from the bytes on disk, with the download's limits), verifies
size and sha256, installs into the slot that is not running and activates it: the record
names the new slot active on trial, ``current`` is switched, and the caller restarts. A
record already ``installing`` with an intact bundle installs again without fetching.

Whatever goes wrong ends the attempt as one ``Failure``: the steps' own (``download``,
``bundle``, ``install``, ``space``), or an OSError of the state directory (a full disk is
``space.NoSpace``, anything else transient). What the attempt made goes first: the bundle
once installed or when the disk filled, the half-made slot. Whether the version is refused
or tried again is the task's decision (``updater``). The download and the hashing run in a
thread of the job's own, one at a time; a cancelled attempt stops its download at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import structlog

from gateway.firmware import slots, space
from gateway.firmware.download import Download, DownloadError, sha256_of
from gateway.firmware.failure import Failure
from gateway.firmware.recorder import Recorder, settle
from gateway.firmware.settings import Running, Settings
from gateway.firmware.state import Release, Trial
from gateway.statefile import Offload
from gateway.wire import FirmwareState

log = structlog.get_logger(__name__)


class Install(Protocol):
    """What installs a verified bundle into a slot (``install.Installer``)."""

    async def install(self, release: Release, archive: Path, slot: str) -> None:
        """The release in ``slot``, ready to run, or a ``Failure``."""

    async def discard(self, slot: str) -> None:
        """Frees what a failed install left in ``slot``."""


class Job:
    """Attempts at releases for one state directory, one at a time."""

    def __init__(self, state_dir: Path, recorder: Recorder, installer: Install,
                 running: Running, settings: Callable[[], Settings],
                 unwell: Callable[[], frozenset[str]], offload: Offload) -> None:
        self._dir = state_dir
        self._recorder = recorder
        self._installer = installer
        self._running = running
        self._settings = settings
        self._unwell = unwell
        self._offload = offload
        # The download and the hashing: long, blocking, one at a time.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="firmware")

    def close(self) -> None:
        """Lets the download thread go (idle: every attempt waited for it)."""
        self._io.shutdown(wait=False)

    async def clear(self) -> None:
        """Removes any bundle, partial or whole."""
        await self._offload(lambda: _keep_only(self._downloads(), None))

    async def attempt(self, release: Release) -> None:
        """``release`` installed and activated on trial (the caller restarts into it), or a
        ``Failure`` once what the attempt made is removed."""
        archive = self._downloads() / f"{release.sha256}.tar.gz"
        slot = slots.other(self._running.slot)
        installing = False
        try:
            await self._offload(lambda: _keep_only(archive.parent, archive))
            await self._make_room(release, archive, slot)
            if self._recorder.record.state != FirmwareState.INSTALLING or not await self._intact(
                    archive, release):
                await self._fetch(release, archive)
            await self._recorder.enter(FirmwareState.INSTALLING, version=release.version,
                                       release=release)
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
            raise failure from None

    def _downloads(self) -> Path:
        return self._dir / "firmware" / "download"

    async def _make_room(self, release: Release, archive: Path, slot: str) -> None:
        """``space.NoSpace`` unless the rest of the download, what the bundle unpacks to
        and the reserve are free; what the slot to install into holds is freed first."""
        reserve = self._settings().reserve_bytes

        def check() -> None:
            have = archive.stat().st_size if archive.exists() else 0
            need = max(release.size - have, 0) + space.UNPACKED_FACTOR * release.size + reserve
            space.require(self._dir, need,
                          reclaimable=space.tree_bytes(slots.slot_dir(self._dir, slot)))

        await self._offload(check)

    async def _fetch(self, release: Release, archive: Path) -> None:
        """``verifying`` passed with the bundle in ``archive``, or ``Failure``."""
        download = Download(release.url, archive, release.size,
                            limits=self._settings().limits)
        if download.received < release.size:
            await self._recorder.enter(FirmwareState.DOWNLOADING, version=release.version,
                                       release=release,
                                       progress=_fraction(download.received, release.size))
            if download.received:
                log.info("firmware.resuming", version=release.version, have=download.received)
            await self._download(download, release)
        await self._recorder.enter(FirmwareState.VERIFYING, version=release.version,
                                   release=release)
        if not await self._intact(archive, release):
            await self._offload(lambda: archive.unlink(missing_ok=True))
            raise Failure("sha256 mismatch", permanent=True)

    async def _download(self, download: Download, release: Release) -> None:
        future = asyncio.get_running_loop().run_in_executor(self._io, download.run)
        try:
            while True:
                done, _ = await asyncio.wait([future],
                                             timeout=self._settings().progress_interval_s)
                if done:
                    break
                self._recorder.publish(replace(self._recorder.record, ts=self._recorder.now(),
                                               progress=_fraction(download.received,
                                                                  release.size)))
            future.result()
        except DownloadError as exc:
            if exc.permanent:
                await self._offload(lambda: download.path.unlink(missing_ok=True))
            raise
        finally:
            if not future.done():  # cancelled: the thread stops at once
                download.stop()
                await settle(future)
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
        trial = Trial(slot, self._running.slot, 0, self._settings().max_trial_boots,
                      tuple(sorted(self._unwell())))
        await self._recorder.enter(FirmwareState.AWAITING_HEALTH, version=release.version,
                                   release=None, active=slot, trial=trial)
        await self._recorder.point(slot)
        log.info("firmware.activated", version=release.version, slot=slot,
                 previous=self._running.slot)


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
