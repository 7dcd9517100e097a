"""Field diagnostics on SIGUSR1: what pprof is to a Go daemon, with nothing installed.

The report holds the resident set size and the packages imported (most of the memory a
Python process holds is what it imported), every asyncio task with its coroutine stack
and age, every thread with its stack, the open file descriptors by kind, the pool and
queue figures, and, when ``diagnostics.tracemalloc`` is on, the allocation sites that
grew most since start-up.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import traceback
import tracemalloc
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

TRACE_FRAMES = 8
TOP_GROWTH = 25
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size: ``statm``'s resident pages are the counters ``VmRSS`` in
    ``/proc/self/status`` adds up (anonymous, file and shared memory), in pages of the
    system's size, not the peak (``ru_maxrss``)."""
    return int(Path("/proc/self/statm").read_bytes().split()[1]) * PAGE_SIZE


class TaskAges:
    """A task factory that remembers when each task was created."""

    def __init__(self) -> None:
        self._born: weakref.WeakKeyDictionary[asyncio.Task[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_task_factory(self._factory)

    def _factory(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        self._born[task] = time.monotonic()
        return task

    def age(self, task: asyncio.Task[Any]) -> float | None:
        born = self._born.get(task)
        return None if born is None else round(time.monotonic() - born, 3)


def packages() -> list[str]:
    """The top-level packages and modules imported, private ones left out."""
    return sorted({name.partition(".")[0] for name in sys.modules if not name.startswith("_")})


def _frames(frames: list[Any]) -> list[str]:
    return [
        f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in frames[-TRACE_FRAMES:]
    ]


def tasks(ages: TaskAges) -> list[dict[str, Any]]:
    out = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        out.append({
            "name": task.get_name(),
            "coro": getattr(coro, "__qualname__", repr(coro)),
            "age_s": ages.age(task),
            "stack": _frames(task.get_stack(limit=TRACE_FRAMES)),
        })
    return sorted(out, key=lambda t: t["name"])


def threads() -> list[dict[str, Any]]:
    frames = sys._current_frames()
    out = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        stack = traceback.extract_stack(frame)[-TRACE_FRAMES:] if frame else []
        out.append({
            "name": thread.name,
            "daemon": thread.daemon,
            "stack": [f"{s.filename}:{s.lineno} {s.name}" for s in stack],
        })
    return out


def _fd_kind(target: str) -> str:
    if target.startswith(("socket:", "pipe:")):
        return target.split(":", 1)[0]
    if target.startswith("anon_inode:"):
        return target.removeprefix("anon_inode:").strip("[]")
    if target.startswith("/dev/pts") or target.startswith("/dev/tty"):
        return "tty"
    if target.startswith("/dev/"):
        return "device"
    return "file"


def open_fds() -> dict[str, Any]:
    entries: list[tuple[int, str]] = []
    for path in Path("/proc/self/fd").iterdir():
        try:
            entries.append((int(path.name), str(path.readlink())))
        except OSError:
            continue  # closed between listing and reading: the listing's own fd
    entries.sort()
    return {
        "count": len(entries),
        "by_kind": dict(Counter(_fd_kind(target) for _, target in entries)),
        "open": [{"fd": fd, "target": target, "kind": _fd_kind(target)} for fd, target in entries],
    }


class Diagnostics:
    def __init__(self, trace_memory: bool, figures: Callable[[], dict[str, Any]]) -> None:
        self.ages = TaskAges()
        self._figures = figures
        self._started = time.monotonic()
        self._baseline: tracemalloc.Snapshot | None = None
        if trace_memory:
            if not tracemalloc.is_tracing():
                tracemalloc.start(TRACE_FRAMES)
            self._baseline = tracemalloc.take_snapshot()

    def report(self) -> dict[str, Any]:
        return {
            "ts": time.time(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "pid": os.getpid(),
            "rss_bytes": rss_bytes(),
            "packages": packages(),
            "tasks": tasks(self.ages),
            "threads": threads(),
            "fds": open_fds(),
            "figures": self._figures(),
            "memory_growth": self._memory_growth(),
        }

    def _memory_growth(self) -> list[dict[str, Any]] | None:
        if self._baseline is None:
            return None
        stats = tracemalloc.take_snapshot().compare_to(self._baseline, "traceback")
        return [
            {
                "size_diff": stat.size_diff,
                "count_diff": stat.count_diff,
                "trace": [f"{f.filename}:{f.lineno}" for f in stat.traceback],
            }
            for stat in stats[:TOP_GROWTH]
        ]
