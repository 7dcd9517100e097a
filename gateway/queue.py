"""The bounded queue between the pipeline and the uplink.

The pipeline never waits on it: ``put`` always returns at once, and when the queue is
full the configured policy decides which message is dropped, counted per sensor.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    sensor: str


class MessageQueue:
    def __init__(self, max_messages: int, drop_policy: Literal["oldest", "newest"]) -> None:
        self._items: deque[Message] = deque()
        self._max = max_messages
        self._drop_oldest = drop_policy == "oldest"
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self.dropped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: Message) -> None:
        if len(self._items) >= self._max:
            if not self._drop_oldest:
                self.dropped[message.sensor] += 1
                return
            self.dropped[self._items.popleft().sensor] += 1
        self._items.append(message)
        self._ready.set()

    async def peek(self) -> Message:
        """Wait for the oldest message without removing it: it leaves only once sent."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items[0]

    def remove(self, message: Message) -> None:
        """Remove ``message`` once delivered, unless the drop policy already evicted it."""
        if self._items and self._items[0] is message:
            self._items.popleft()
            if not self._items:
                self._idle.set()

    async def drained(self) -> None:
        while self._items:
            self._idle.clear()
            await self._idle.wait()
