"""The process ``bench/memory.py`` measures: ``edge-gateway run`` with marks.

    python bench/memory_probe.py CONFIG MINUTES [--trace]

It does what ``edge-gateway run -c CONFIG`` does, in the same order, under a stand-in
systemd (``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` as the unit sets them), and prints one
JSON line per mark on stdout: VmRSS after importing the command line, then the daemon,
after the configuration is loaded, once the sensors are open (READY=1), once the uplink
is connected, and after half and all of MINUTES of sampling. With ``--trace``,
tracemalloc runs from the sensors' opening on and the last mark names the allocation
sites that grew between the last two marks; its own memory makes that run's RSS figures
useless, so the bench runs it beside a clean one. The top imports only what the
interpreter has loaded before running a script, so the probe costs next to nothing of
what it measures.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path
    from tracemalloc import Snapshot

    from gateway.config.file import Document

TRACE_FRAMES = 6
# Dependencies only some features need: which of them a configuration loaded.
HEAVY = ("numpy", "sqlite3", "minimalmodbus", "serial", "smbus2", "ssl")
TOP_SITES = 5
CONNECT_TIMEOUT_S = 30.0


def vm_rss() -> int:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def mark(name: str, **extra: object) -> None:
    import json

    print(json.dumps({"mark": name, "rss": vm_rss(), **extra}), flush=True)


def main(path_arg: str, minutes: float, trace: bool) -> int:
    # What the `edge-gateway` script and then `run` import, before anything else.
    from gateway import cli  # noqa: F401

    mark("cli")
    from gateway import daemon

    mark("imports")
    from pathlib import Path

    path = Path(path_arg)
    document = daemon.configfile.load_document(path)
    config = document.config
    daemon.logsetup.configure(config.logging.level, config.logging.format)
    mark("config")
    import asyncio

    return asyncio.run(_run(daemon, path, document, minutes * 60.0, trace))


async def _run(daemon: Any, path: Path, document: Document, seconds: float, trace: bool) -> int:
    import asyncio
    import signal
    import socket
    import threading
    import tracemalloc

    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(f"\0edge-gateway-memory-{os.getpid()}")
    systemd.setblocking(False)

    def receive() -> None:
        # Drained at once, as systemd does: sd_notify blocks on a full socket.
        while True:
            try:
                data = systemd.recv(4096)
            except BlockingIOError:
                return
            if b"READY=1" in data.split(b"\n"):
                ready.set()

    loop.add_reader(systemd.fileno(), receive)
    os.environ["NOTIFY_SOCKET"] = f"@edge-gateway-memory-{os.getpid()}"
    os.environ["WATCHDOG_USEC"] = "30000000"
    os.environ["WATCHDOG_PID"] = str(os.getpid())
    gateway = await daemon.compose(path, document)
    running = asyncio.create_task(gateway.run())
    try:
        await asyncio.wait_for(ready.wait(), CONNECT_TIMEOUT_S)
        opened = loop.time()
        if trace:
            tracemalloc.start(TRACE_FRAMES)
        mark("open")
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            while not gateway.figures()["uplink"]["connected"]:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.1)
        mark("connected")
        await asyncio.sleep(opened + seconds / 2 - loop.time())
        half = tracemalloc.take_snapshot() if trace else None
        mark("half")
        await asyncio.sleep(opened + seconds - loop.time())
        end = tracemalloc.take_snapshot() if trace else None
        figures = gateway.figures()
        sites = _growth(end, half) if end is not None and half is not None else None
        mark(
            "steady",
            connected=figures["uplink"]["connected"],
            reconnects=figures["uplink"]["reconnects"],
            messages=sum(p["messages"] for p in figures["pipelines"].values()),
            queue=figures["queue"]["depth"],
            threads=threading.active_count(),
            tasks=len(asyncio.all_tasks()),
            modules=len(sys.modules),
            heavy=[name for name in HEAVY if name in sys.modules],
            tracemalloc_bytes=tracemalloc.get_tracemalloc_memory() if trace else None,
            growth=sites,
        )
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        code: int = await running
        loop.remove_reader(systemd.fileno())
        systemd.close()
    return code


def _growth(now: Snapshot, before: Snapshot) -> list[dict[str, Any]]:
    """The allocation sites that grew most: the line that allocated, and the nearest line
    of the gateway's own code that led there."""

    import sysconfig
    from pathlib import Path

    roots = [str(Path(__file__).resolve().parents[1]), *sysconfig.get_paths().values()]

    def short(filename: str) -> str:
        root = max((r for r in roots if filename.startswith(r + "/")), key=len, default="")
        return filename[len(root) + 1:] if root else filename

    sites = []
    stats = now.compare_to(before, "traceback")
    for stat in sorted(stats, key=lambda s: -s.size_diff)[:TOP_SITES]:
        frames = [f"{short(f.filename)}:{f.lineno}" for f in stat.traceback]
        ours = next((f for f in reversed(frames) if f.startswith(("gateway/", "drivers/"))), "")
        sites.append({"bytes": stat.size_diff, "blocks": stat.count_diff,
                      "at": frames[-1], "from": ours})
    return sites


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), "--trace" in sys.argv[3:]))
