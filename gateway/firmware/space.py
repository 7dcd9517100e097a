"""Disk space for an update: what it needs, what there is, and running out of it.

An update writes to ``state_dir`` (the bundle, the unpacked wheels, a venv), the same
filesystem the telemetry queue, the sequence numbers and the firmware record live on. So it
starts only when its whole need, plus a reserve those keep, is free; and running out anyway
(another writer, an estimate too low) is one recognisable failure, ``NoSpace``, whatever step
hit it: the caller removes what the update made and goes on. It is never permanent: the same
release may fit once space is freed.

The estimate of what the bundle becomes is ``UNPACKED_FACTOR`` times its size: the wheels
unpacked (gzip does not shrink zip files: about once the bundle) and the venv pip installs
them into (numpy's wheel unpacks to four times its size, and ``python -m venv`` adds pip):
a 22.7 MB bundle makes a slot of about 123 MB, 5.4 times, so seven times leaves a margin.
A multiple of the size rather than ``max_unpacked_bytes``: that is a bound against bombs,
far above what a real bundle needs, and would refuse updates on small cards.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from gateway.firmware.failure import Failure

MIB = 1 << 20
UNPACKED_FACTOR = 7
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class NoSpace(Failure):
    """Out of space for an update; worth another try once space is freed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, permanent=False)


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on ``path``'s filesystem (the nearest existing
    directory's, for a path not made yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def tree_bytes(path: Path) -> int:
    """The space the files under ``path`` take (links not followed); 0 when it is not
    there."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += Path(root, name).lstat().st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def _mib(size: int, up: bool) -> int:
    return -(-size // MIB) if up else size // MIB


def require(path: Path, need: int, reclaimable: int = 0) -> None:
    """``NoSpace`` unless ``need`` bytes are free on ``path``'s filesystem (counting
    ``reclaimable`` bytes the update removes before it writes them)."""
    have = free_bytes(path) + reclaimable
    if have < need:
        raise NoSpace(f"not enough space: need {_mib(need, up=True)} MiB, "
                      f"have {_mib(have, up=False)} MiB")


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full (or the quota used up)."""
    return isinstance(exc, OSError) and exc.errno in _FULL


def filled(path: Path, step: str) -> NoSpace:
    """The failure of a step that ran out of space on ``path``'s filesystem."""
    try:
        have = f"{_mib(free_bytes(path), up=False)} MiB"
    except OSError:
        have = "nothing"
    return NoSpace(f"not enough space: the disk filled while {step}, have {have}")
