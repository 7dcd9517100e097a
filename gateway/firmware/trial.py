"""The release on trial: the process that runs it judges it, committed or rolled back.

After activation the launcher starts the new slot with the record ``awaiting_health``. That
daemon, finding itself on trial, runs the health gate (``health``) for
``firmware.health_timeout_s``: healthy in time is ``committed``; otherwise the record goes
back to the previous slot as ``rolled_back`` with the reason (the version is not tried
again), ``current`` follows it, and the caller restarts into that slot. Sensors that were
not ok before the update (``Trial.excused``) do not count against the release. The judging
is here, not in the launcher: only the running daemon knows whether it is healthy; the
launcher judges what never gets that far (a release that crashes or cannot start).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from gateway.firmware import health
from gateway.firmware.recorder import Recorder
from gateway.firmware.state import Trial
from gateway.wire import FirmwareState

log = structlog.get_logger(__name__)

# The first reason this process is not healthy, sensors in the set aside; None when it is.
Check = Callable[[frozenset[str]], str | None]


async def judge(trial: Trial, recorder: Recorder, check: Check, timeout_s: float) -> bool:
    """Whether the release on ``trial`` is committed (healthy within ``timeout_s``); if
    not, it is rolled back, and the caller restarts."""
    problem = await health.gate(lambda: check(frozenset(trial.excused)), timeout_s)
    if problem is not None:
        await roll_back(recorder, f"not healthy within {timeout_s:g} s: {problem}")
        return False
    await recorder.enter(FirmwareState.COMMITTED, trial=None, release=None)
    log.info("firmware.committed", version=recorder.record.version, slot=trial.slot)
    return True


async def roll_back(recorder: Recorder, reason: str) -> None:
    """The record back to the slot the trial came from, as ``rolled_back`` with ``reason``,
    and ``current`` with it."""
    record = await recorder.set(lambda current: current.rolled_back(reason))
    await recorder.point(record.active)
    log.error("firmware.rolled_back", version=record.version, reason=reason,
              slot=record.active)
