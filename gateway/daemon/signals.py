"""Process signals, and the daemon's own requests to stop, as events the main coroutine
waits for one at a time.

SIGTERM/SIGINT stop, SIGHUP reloads the file, SIGUSR1 writes a diagnostics report; a
firmware update asks for the same stop as SIGTERM with another exit status (75, which the
unit answers with a restart through the launcher).
"""

from __future__ import annotations

import asyncio
import os
import signal
from enum import Enum

# Set to 1 by tests only: SIGUSR2 then blocks the event loop, as a wedged daemon would.
DEBUG_HOOKS = "EDGE_GATEWAY_DEBUG_HOOKS"


class Event(Enum):
    STOP = "stop"
    RELOAD = "reload"
    DIAGNOSE = "diagnose"
    WEDGE = "wedge"
    RESTART = "restart"


class Signals:
    def __init__(self) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._installed: list[int] = []
        self.exit_code = 0

    def __enter__(self) -> Signals:
        handlers = [
            (signal.SIGTERM, Event.STOP),
            (signal.SIGINT, Event.STOP),
            (signal.SIGHUP, Event.RELOAD),
            (signal.SIGUSR1, Event.DIAGNOSE),
        ]
        if os.environ.get(DEBUG_HOOKS) == "1":
            handlers.append((signal.SIGUSR2, Event.WEDGE))
        for signum, event in handlers:
            self._loop.add_signal_handler(signum, self._events.put_nowait, event)
            self._installed.append(signum)
        return self

    def __exit__(self, *_: object) -> None:
        for signum in self._installed:
            self._loop.remove_signal_handler(signum)

    async def next(self) -> Event:
        return await self._events.get()

    def restart(self, exit_code: int) -> None:
        """Stop as SIGTERM does, then exit with ``exit_code``."""
        self.exit_code = exit_code
        self._events.put_nowait(Event.RESTART)
