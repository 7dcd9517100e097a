"""systemd's notification protocol: READY, WATCHDOG, STATUS and STOPPING.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op, so the daemon does
not need to know how it was started.
"""

from __future__ import annotations

import os

from systemd.daemon import notify as sd_notify


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_s = _watchdog_interval()

    def _send(self, message: str) -> None:
        if self.enabled:
            sd_notify(message)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")


def _watchdog_interval() -> float | None:
    """Seconds between pings: half of ``WatchdogSec``, if systemd set one for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
