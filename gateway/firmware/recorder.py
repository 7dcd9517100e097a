"""The firmware record's one writer: every change written to ``state.json`` before it is
acted on and reported after, so what was reported is always on disk.

The task, the job and the trial all change the record (a state entered, the anti-replay
mark, a rollback). Each change is a function applied to the record as the last write left
it, under one lock, and a write is waited for even when its caller is cancelled meanwhile:
writes land in order and none is lost. A write that fails leaves the previous record in
place, since what is not on disk is not the record; only where going silent would be worse
than a record ahead of the disk (a failure that must be reported, the anti-replay mark on a
full disk) does ``keep`` hold the change in memory, to be written with the next record that
is. The launcher's link ``current`` follows the record's active slot (``point``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gateway import statefile
from gateway.firmware import slots, state
from gateway.firmware.state import Record
from gateway.statefile import Offload
from gateway.wire import FirmwareState

log = structlog.get_logger(__name__)

Change = Callable[[Record], Record]


class Recorder:
    """The firmware record of one state directory: loaded, changed, written, reported."""

    def __init__(self, state_dir: Path, record: Record, publish: Callable[[Record], None],
                 offload: Offload, clock: Callable[[], float], hold: str | None) -> None:
        self.record = record
        self._dir = state_dir
        self._publish = publish
        self._offload = offload
        self._clock = clock
        self._hold = hold
        self._writing = asyncio.Lock()

    async def load(self) -> None:
        """The record as the last process left it, if there is one; an unreadable one is
        set aside."""
        try:
            record = await asyncio.to_thread(state.load, self._dir)
        except ValueError as exc:
            aside = await asyncio.to_thread(statefile.set_aside, state.path_in(self._dir),
                                            "unreadable")
            log.error("firmware.state_unreadable", error=str(exc), moved_to=str(aside))
            record = None
        if record is not None:
            self.record = record

    def now(self) -> float:
        """The time records are stamped with."""
        return self._clock()

    def publish(self, record: Record | None = None) -> None:
        """Reports ``record`` (the record by default) without writing it."""
        self._publish(self.record if record is None else record)

    async def enter(self, to: FirmwareState, **changes: Any) -> Record:
        """The record in state ``to`` (``Record.to``), written and reported."""
        return await self.set(lambda record: record.to(to, ts=self.now(), **changes))

    async def set(self, change: Change, *, quiet: bool = False) -> Record:
        """The record ``change`` makes, written, then reported (``quiet``: not, nor logged;
        the public part did not change). An OSError when it cannot be written, the previous
        record kept."""
        async with self._writing:
            previous = self.record
            self.record = record = change(previous)
            write = asyncio.ensure_future(self._offload(lambda: state.save(self._dir, record)))
            try:
                await settle(write)
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

    async def keep(self, change: Change, *, quiet: bool = False) -> None:
        """As ``set``; when the record cannot be written, the change is made all the same in
        memory (and reported unless ``quiet``), and written with the next record that is."""
        try:
            await self.set(change, quiet=quiet)
        except OSError as exc:
            self.record = change(self.record)
            if not quiet:
                self._publish(self.record)
            log.error("firmware.state_not_written", state=self.record.state, error=str(exc))

    async def point(self, slot: str | None) -> None:
        """``current`` to the slot the record made active. Not switching it is no reason to
        stop: the launcher makes the link follow the record at the next start."""
        try:
            await self._offload(lambda: slots.point(self._dir, slot))
        except OSError as exc:
            log.warning("firmware.link_not_switched", slot=slot, error=str(exc))


async def settle(future: asyncio.Future[Any]) -> None:
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
