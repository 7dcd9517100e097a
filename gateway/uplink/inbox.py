"""A bounded mailbox for messages the broker sends us, owned by the task that consumes it.

gmqtt calls us back on the event loop for every inbound PUBLISH; nothing is handled in that
callback but a size check and a put here. Anyone who can publish on the broker can fill
these topics, so the box holds at most ``capacity`` messages and keeps no payload above
``max_bytes`` (the consumer learns only its size, to report it): a flood costs a counter,
not memory, and the newest messages are the ones dropped. Both bounds follow the config
(``limit``); what the box holds when they shrink stays, and its consumer judges it by the new
bounds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message that arrived on a subscribed topic, as the inbox keeps it."""

    topic: str
    # None when the message was larger than the inbox's ``max_bytes``; ``size`` says how big.
    payload: bytes | None
    size: int


class Inbox:
    """A bounded mailbox between the MQTT callback and one consumer: a full inbox drops
    (counted), an oversized payload is kept as its size only."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self._items: deque[Inbound] = deque()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._ready = asyncio.Event()
        self.dropped = 0

    def limit(self, capacity: int, max_bytes: int) -> None:
        """New bounds, for the messages offered from now on."""
        self._capacity = capacity
        self._max_bytes = max_bytes

    def offer(self, topic: str, payload: bytes) -> None:
        """From the MQTT callback: never blocks, never raises."""
        if len(self._items) >= self._capacity:
            self.dropped += 1
            return
        kept = payload if len(payload) <= self._max_bytes else None
        self._items.append(Inbound(topic, kept, len(payload)))
        self._ready.set()

    async def get(self) -> Inbound:
        """The oldest message, waiting for one if there is none."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)
