"""The stable launcher: what ``edge-gateway launch -c FILE`` decides before the daemon runs.

The unit starts ``/opt/edge-gateway/venv/bin/edge-gateway launch``, from the base install that
updates never replace, so the decision to give up on a release lives in code the release
cannot break: a release that cannot even import is still rolled back. At every start it
reads the firmware record; a release on trial (``awaiting_health``) gets one more start
counted, and past ``max_trial_boots`` starts the record goes back to the previous slot as
``rolled_back`` ("did not come up N times"). Then ``state_dir/current`` is made to follow
the record and the caller ``execv``s that slot's ``edge-gateway run`` (the PID stays, so
``Type=notify`` and the watchdog hold), or runs its own ``run`` for the base install.

A record that cannot be read or written means the base install: it is the one release known
to be there. Standard library only, so starting costs little and depends on nothing an
update brings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from gateway.firmware import slots, state

Say = Callable[[str], None]


def state_directory(env: Mapping[str, str]) -> Path | None:
    """The state directory systemd made for ``StateDirectory=`` (the first, if several)."""
    value = env.get("STATE_DIRECTORY", "")
    first = value.split(":", 1)[0]
    return Path(first) if first else None


def _runnable(state_dir: Path, slot: str | None) -> bool:
    return slot is None or os.access(slots.command_of(state_dir, slot), os.X_OK)


def _count_boot(record: state.Record, say: Say) -> state.Record:
    trial = record.trial
    assert trial is not None
    if trial.boots >= trial.max_boots:
        reason = f"did not come up {trial.boots} times"
        say(f"{record.version} in slot {trial.slot} {reason}: back to "
            f"{_name(trial.previous)}")
        return record.rolled_back(reason)
    say(f"trial start {trial.boots + 1} of {trial.max_boots} of {record.version} "
        f"in slot {trial.slot}")
    return replace(record, trial=replace(trial, boots=trial.boots + 1))


def _name(slot: str | None) -> str:
    return "the base install" if slot is None else f"slot {slot}"


def prepare(state_dir: Path, say: Say) -> str | None:
    """Counts a trial start or rolls back, points ``current`` at the slot to run and
    returns it (None: the base install)."""
    try:
        record = state.load(state_dir)
    except (OSError, ValueError) as exc:
        say(f"{exc}: running the base install")
        return None
    if record is None:
        if slots.pointed(state_dir) is not None:
            say("no firmware state: running the base install")
            _point(state_dir, None, say)
        return None
    try:
        if record.state == state.AWAITING_HEALTH and record.trial is not None:
            record = _count_boot(record, say)
            if not _runnable(state_dir, record.active):
                say(f"slot {record.active} has no {slots.COMMAND}")
                record = record.rolled_back(f"slot {record.active} has no {slots.COMMAND}")
            state.save(state_dir, record)
    except OSError as exc:
        say(f"cannot write the firmware state ({exc}): running the base install")
        return None
    slot = record.active
    if not _runnable(state_dir, slot):
        say(f"slot {slot} has no {slots.COMMAND}: running the base install")
        slot = None
    _point(state_dir, slot, say)
    return slot


def _point(state_dir: Path, slot: str | None, say: Say) -> None:
    if slots.pointed(state_dir) == slot:
        return
    try:
        slots.point(state_dir, slot)
    except OSError as exc:
        say(f"cannot switch {slots.current_link(state_dir)} to {_name(slot)}: {exc}")


def argv(state_dir: Path, slot: str, config: Path) -> list[str]:
    """The slot's daemon, as the launcher ``execv``s it."""
    return [str(slots.command_of(state_dir, slot)), "run", "-c", str(config)]
