"""The firmware state machine's one persisted record, ``state_dir/firmware/state.json``.

Every step of an update is a state written here (atomically) before anything acts on it, so
a ``kill -9`` or a power cut at any step leaves a record the next start can resume from or
roll back with. The record also remembers, per channel, the newest manifest accepted (its
``issued_at``, version and whether it halted the release), so a manifest issued before it,
replayed by anyone who can publish on the broker, is ignored after a restart too. The record
is also the report: the retained ``P/D/firmware/state`` (docs/PROTOCOL.md section 3.6) is
its public part, published again at every start until the broker has it. ``active`` is the
slot ``state_dir/current`` must point at (None: the base install); the launcher makes the
link follow it, so the link never disagrees with the record for long.

Both sides of an update read this file: the stable launcher of the base install and the
daemon of whichever release runs, older or newer. So it is plain JSON read tolerantly
(unknown members are ignored), its state words are the report's (``wire.FirmwareState``,
written as the plain strings they are), and this module imports only the standard library
besides ``gateway.statefile`` and ``gateway.wire``, which import nothing else.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.statefile import write_atomic
from gateway.wire import FirmwareState

# Work under way that a restart picks up again from ``release``.
RESUMABLE = frozenset({FirmwareState.DOWNLOADING, FirmwareState.VERIFYING,
                       FirmwareState.INSTALLING})
SLOT_NAMES = ("a", "b")
_WORDS = frozenset(FirmwareState)


@dataclass(frozen=True)
class Release:
    """What the device needs of an accepted manifest to fetch and install it."""

    version: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Seen:
    """The newest manifest accepted on a channel: one issued earlier is a replay."""

    issued_at: float
    version: str
    halted: bool = False


@dataclass(frozen=True)
class Trial:
    """A release on trial in ``slot``; ``previous`` is the slot to go back to."""

    slot: str
    previous: str | None
    boots: int
    max_boots: int
    # Sensors that were not ok before the update: the trial is not blamed for them.
    excused: tuple[str, ...] = ()


@dataclass(frozen=True)
class Record:
    """The firmware record: the update's state, the active slot, the release at work or
    on trial, and what is refused or was accepted per channel."""

    state: FirmwareState = FirmwareState.IDLE
    # The release this state is about (the running one once committed).
    version: str | None = None
    reason: str | None = None
    progress: float | None = None
    ts: float = 0.0
    active: str | None = None
    release: Release | None = None
    trial: Trial | None = None
    # The highest version refused or rolled back: not tried again until a newer one comes.
    refused: str | None = None
    # Per channel, the newest manifest accepted (absent from records of older releases).
    seen: dict[str, Seen] = field(default_factory=dict)

    def to(self, state: FirmwareState, **changes: Any) -> Record:
        """The next state: what the caller does not give is cleared (reason, progress) or
        kept (version, active, release, trial, refused, seen)."""
        changes.setdefault("reason", None)
        changes.setdefault("progress", None)
        return replace(self, state=state, ts=changes.pop("ts", time.time()), **changes)

    def rolled_back(self, reason: str) -> Record:
        """Back to the slot the trial came from; its version is not tried again."""
        assert self.trial is not None
        return self.to(FirmwareState.ROLLED_BACK, reason=reason, active=self.trial.previous,
                       trial=None, release=None, refused=self.version)

    def saw(self, channel: str, seen: Seen) -> Record:
        """The same record with ``seen`` as the channel's newest manifest."""
        return replace(self, seen={**self.seen, channel: seen})

    def report(self) -> bytes:
        """The public part, as ``P/D/firmware/state`` carries it."""
        body = {"version": self.version, "state": self.state, "reason": self.reason,
                "progress": self.progress, "ts": self.ts}
        return json.dumps(body, separators=(",", ":")).encode()

    def encode(self) -> bytes:
        """The whole record, as ``state.json`` holds it."""
        return json.dumps({"format": 1, **asdict(self)}, indent=1).encode()


def _slot(value: object) -> str | None:
    if value is None or value in SLOT_NAMES:
        return value
    raise ValueError(f"not a slot: {value!r}")


def _required_slot(value: object) -> str:
    slot = _slot(value)
    if slot is None:
        raise ValueError("a trial needs a slot")
    return slot


def _str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"not a string: {value!r}")


def _seen(raw: object) -> dict[str, Seen]:
    if not isinstance(raw, dict):
        raise TypeError(f"not a map of channels: {raw!r}")
    return {str(channel): Seen(float(entry["issued_at"]), str(entry["version"]),
                               bool(entry.get("halted", False)))
            for channel, entry in raw.items()}


def decode(data: bytes) -> Record:
    """The record ``data`` holds; ValueError for anything but a record this code can act
    on."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"unreadable firmware state: {exc}") from None
    word = raw.get("state") if isinstance(raw, dict) else None
    if not isinstance(word, str) or word not in _WORDS:
        raise ValueError("unreadable firmware state: not a firmware state record")
    try:
        release = raw.get("release")
        trial = raw.get("trial")
        progress = raw.get("progress")
        return Record(
            state=FirmwareState(word),
            version=_str(raw.get("version")),
            reason=_str(raw.get("reason")),
            progress=None if progress is None else float(progress),
            ts=float(raw.get("ts", 0.0)),
            active=_slot(raw.get("active")),
            release=None if release is None else Release(
                str(release["version"]), str(release["url"]), str(release["sha256"]),
                int(release["size"])),
            trial=None if trial is None else Trial(
                _required_slot(trial["slot"]), _slot(trial.get("previous")), int(trial["boots"]),
                int(trial["max_boots"]), tuple(str(n) for n in trial.get("excused", ()))),
            refused=_str(raw.get("refused")),
            seen=_seen(raw.get("seen", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"unreadable firmware state: {exc}") from None


def path_in(state_dir: Path) -> Path:
    """Where the record lives."""
    return state_dir / "firmware" / "state.json"


def load(state_dir: Path) -> Record | None:
    """The record, None when there is none yet; ValueError when it cannot be read."""
    try:
        data = path_in(state_dir).read_bytes()
    except FileNotFoundError:
        return None
    return decode(data)


def save(state_dir: Path, record: Record) -> None:
    """Writes the record, atomically."""
    write_atomic(path_in(state_dir), record.encode())
