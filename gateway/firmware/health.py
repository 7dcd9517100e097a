"""The health gate a release on trial must pass before it is committed.

What healthy means belongs to the daemon, which knows the uplink and the sensors (uplink
connected, every sensor ok or no worse than before the update, config valid); it hands a
check that names the first problem, or None. The gate asks it every ``poll_s`` until it
passes or ``timeout_s`` runs out, and says what was wrong last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_S = 0.5

Check = Callable[[], str | None]


async def gate(check: Check, timeout_s: float, poll_s: float = POLL_S) -> str | None:
    """None once ``check`` passes within ``timeout_s``; else its last problem."""
    deadline = time.monotonic() + timeout_s
    while (problem := check()) is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            return problem
        await asyncio.sleep(min(poll_s, left))
    return None
