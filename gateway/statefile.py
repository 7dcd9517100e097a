"""Small state files: atomic writes, reads, and a file that cannot be read set aside.

A write goes to a temp file, fsync, rename, fsync of the directory: a power cut on a Pi
leaves either the old file or the new one, never a torn one. A file that cannot be read is
renamed beside itself and kept for a post-mortem, never deleted and never fatal: a device in
a cabinet must come back up. Their owners write them off the event loop, through an
``Offload``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

Offload = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]
"""Runs a blocking call off the event loop: ``asyncio.to_thread`` in the daemon."""


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any:
    """The parsed file, or None when it does not exist yet."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def set_aside(path: Path, label: str = "corrupt", *, companions: Iterable[str] = ()) -> Path:
    """Move ``path`` beside itself as ``NAME.LABEL-SECONDS`` (Unix time) and return that path;
    with it each existing ``NAME+SUFFIX`` of ``companions`` (a database's journal files).
    Blocking; raises ``OSError``."""
    aside = path.with_name(f"{path.name}.{label}-{int(time.time())}")
    path.replace(aside)
    for suffix in companions:
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.replace(aside.with_name(aside.name + suffix))
    return aside
