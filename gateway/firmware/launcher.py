"""The stable launcher: what ``edge-gateway launch -c FILE`` decides before the daemon runs.

The unit starts ``/opt/edge-gateway/venv/bin/edge-gateway launch``, from the base install that
updates never replace, so the decision to give up on a release lives in code the release
cannot break: a release that cannot even import is still rolled back. At every start it
reads the firmware record; a release on trial (``awaiting_health``) gets one more start
counted, and past ``max_trial_boots`` starts the record goes back to the previous slot as
``rolled_back`` ("did not come up N times"). Then ``state_dir/current`` is made to follow
the record and the caller ``execv``s that slot's ``edge-gateway run`` (the PID stays, so
``Type=notify`` and the watchdog hold), or runs its own ``run`` for the base install.

A firmware restart (a slot switched: activation or rollback) does not go through systemd:
the daemon stops cleanly, then ``relaunch`` ``execv``s the launcher again as it was started
(``EDGE_GATEWAY_LAUNCH``, set by ``child_env``), in the same process. So it is not delayed
by the unit's ``RestartSec=``, which stays for crashes, and the PID, the unit's state and its
restart count stay as they were. A daemon whose launcher did not say how it was started (an
older base install) exits 75 instead, which the unit restarts after ``RestartSec=``.

A record that cannot be read or written means the base install: it is the one release known
to be there. Standard library only, so starting costs little and depends on nothing an
update brings.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from gateway.firmware import slots, state
from gateway.wire import FirmwareState

Say = Callable[[str], None]
# Exit status asking the unit for a restart through the launcher (RestartForceExitStatus=),
# when the daemon cannot start it again itself.
RESTART_EXIT = 75
# The launcher's own command line, as JSON, for the daemon to start it again.
LAUNCH_ENV = "EDGE_GATEWAY_LAUNCH"


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
        if record.state == FirmwareState.AWAITING_HEALTH and record.trial is not None:
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


def child_env(env: Mapping[str, str], slot: str | None) -> dict[str, str]:
    """The daemon's environment: the slot it runs (``slots.SLOT_ENV``, empty for the base
    install) and how to start this launcher again."""
    again = [sys.executable, *sys.orig_argv[1:]]
    return {**env, slots.SLOT_ENV: slot or "", LAUNCH_ENV: json.dumps(again)}


def relaunch(env: Mapping[str, str], say: Say) -> None:
    """Replaces this process with the launcher that started it; returns only when it
    cannot (no launcher said how, or the exec failed)."""
    try:
        command = json.loads(env[LAUNCH_ENV])
    except (KeyError, ValueError):
        return
    if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        say(f"cannot start the launcher again ({command[0]}: {exc}): exiting for systemd")
