"""A token bucket that paces what leaves the queue."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Up to ``rate`` acquisitions a second, with a small burst."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        # A tenth of a second's worth: enough to absorb scheduling jitter, too little for
        # a burst that a per-second broker cap would count against us.
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self.burst
        self._stamp = time.monotonic()

    async def acquire(self) -> None:
        """Wait until a token is free, and take it."""
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self.rate)
