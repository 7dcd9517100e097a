"""Reading a small file that the configuration names, without being made to wait.

A key file's path could name a FIFO (opening one for reading waits for a writer, for
ever), a terminal or another device (a read waits for input, or never ends), or a
directory. Such a path is refused with what it is before it is opened; the open itself
does not wait (``O_NONBLOCK``) and is checked again, so a file swapped in between cannot
block either. A leaf of the standard library only: ``config`` and ``trust``, which import
nothing else of the gateway, and the uplink's credentials all read through it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(OSError):
    """The path names something other than a regular file; ``strerror`` says what."""


def _refuse_unless_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    raise NotRegularFile(errno.EINVAL, f"{kind}, not a regular file", str(path))


def require_regular(path: Path) -> None:
    """For a file a library opens by its path (a TLS certificate): raises ``OSError``
    (``NotRegularFile`` for a FIFO, device, socket or directory)."""
    _refuse_unless_regular(path, path.stat().st_mode)


def read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file at ``path``. Raises ``OSError``
    (``NotRegularFile`` for a FIFO, device, socket or directory)."""
    require_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        _refuse_unless_regular(path, os.fstat(fd).st_mode)
        return file.read(limit)
