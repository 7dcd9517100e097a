"""At most one log line per reason per interval, with the count of those left unlogged.

Something that fails on every reading of a fast sensor, or junk sent at any rate by anyone
on the broker, would otherwise flood the journal and wear the SD card. The interval is
measured on the monotonic clock, which NTP cannot step; a clock that goes back anyway (a
test's, another process's) ends the interval at once rather than silencing a reason until
it has caught up again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

INTERVAL_S = 60.0


class LogThrottle:
    """Decides, occurrence by occurrence, which are logged: the first of a reason, then the
    first once ``interval_s`` has passed since the last one logged."""

    def __init__(self, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def admit(self, reason: str) -> dict[str, int] | None:
        """None when this occurrence of ``reason`` is to be left unlogged (it is counted);
        otherwise the extra fields of its log line: ``unlogged_since``, the count of those
        left unlogged since the last line, when there were any."""
        now = self._clock()
        last = self._logged_at.get(reason)
        if last is not None and 0.0 <= now - last < self._interval_s:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return None
        self._logged_at[reason] = now
        unlogged = self._unlogged.pop(reason, 0)
        return {"unlogged_since": unlogged} if unlogged else {}
