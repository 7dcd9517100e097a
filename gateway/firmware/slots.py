"""The A/B slots: where releases live under ``state_dir`` and which one runs.

``state_dir/slots/a/venv`` and ``state_dir/slots/b/venv`` are the releases installed by
updates; ``state_dir/current`` is a relative symbolic link to one of them, switched
atomically (a new link renamed over the old one). No link means the base install, the venv
systemd/install.sh built, which updates never replace (the unit's ``ProtectSystem=strict``
leaves only the state directory writable, so slots cannot live beside it in /opt). An update
always goes into the slot that is not running.

The launcher tells the daemon it started it through ``EDGE_GATEWAY_SLOT`` (the slot, or
empty for the base install); the running slot itself is read from the interpreter's prefix.
Standard library only: the launcher uses this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from gateway.firmware.state import SLOT_NAMES

SLOT_ENV = "EDGE_GATEWAY_SLOT"
COMMAND = "edge-gateway"


def slot_dir(state_dir: Path, slot: str) -> Path:
    """The directory a slot's release is installed in."""
    return state_dir / "slots" / slot


def venv_of(state_dir: Path, slot: str) -> Path:
    """A slot's venv."""
    return slot_dir(state_dir, slot) / "venv"


def command_of(state_dir: Path, slot: str) -> Path:
    """A slot's ``edge-gateway``."""
    return venv_of(state_dir, slot) / "bin" / COMMAND


def current_link(state_dir: Path) -> Path:
    """The link to the active slot."""
    return state_dir / "current"


def other(slot: str | None) -> str:
    """The slot an update goes into: the one not running (``a`` from the base install)."""
    return "b" if slot == "a" else "a"


def pointed(state_dir: Path) -> str | None:
    """The slot ``current`` points at; None without the link (or with a foreign one)."""
    try:
        target = current_link(state_dir).readlink()
    except OSError:
        return None
    parts = target.parts
    if len(parts) == 2 and parts[0] == "slots" and parts[1] in SLOT_NAMES:
        return parts[1]
    return None


def point(state_dir: Path, slot: str | None) -> None:
    """Switches ``current`` to ``slot`` (None: removes it) atomically, durably."""
    link = current_link(state_dir)
    if slot is None:
        try:
            link.unlink()
        except FileNotFoundError:
            return
    else:
        tmp = state_dir / f".current.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path("slots") / slot)
        tmp.replace(link)
    fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def running_slot(state_dir: Path) -> str | None:
    """The slot whose venv runs this interpreter; None for any other (the base install)."""
    prefix = Path(sys.prefix).resolve()
    for slot in SLOT_NAMES:
        if prefix == venv_of(state_dir, slot).resolve():
            return slot
    return None


def launched(env: Mapping[str, str] = os.environ) -> bool:
    """Whether ``edge-gateway launch`` started this process: only then can an update be
    activated (the launcher starts the new slot and brings back the old one)."""
    return SLOT_ENV in env
