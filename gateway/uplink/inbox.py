"""A bounded mailbox for messages the broker sends us, owned by the task that consumes it.

gmqtt calls us back on the event loop for every inbound PUBLISH; nothing is handled in that
callback but a size check and a put here. Anyone who can publish on the broker can fill
these topics, so the box holds at most ``capacity`` messages and keeps no payload above
``max_bytes`` (the consumer learns only its size, to report it): a flood costs a counter,
not memory, and the newest messages are the ones dropped. What we subscribe to is retained
on the broker (a config update, a firmware manifest): a message dropped in a burst is asked
for again once the consumer has caught up, by subscribing its topic anew (``resync``, set by
the routes), which makes the broker send the retained message again; so a flood delays an
update, and cannot make the device miss it. Both bounds follow the config (``limit``); what
the box holds when they shrink stays, and its consumer judges it by the new bounds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
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
        # The topics of messages dropped since the last resync.
        self._lost: set[str] = set()
        self.resync: Callable[[set[str]], None] | None = None

    def limit(self, capacity: int, max_bytes: int) -> None:
        """New bounds, for the messages offered from now on."""
        self._capacity = capacity
        self._max_bytes = max_bytes

    def offer(self, topic: str, payload: bytes) -> None:
        """From the MQTT callback: never blocks, never raises."""
        if len(self._items) >= self._capacity:
            self.dropped += 1
            self._lost.add(topic)
            return
        kept = payload if len(payload) <= self._max_bytes else None
        self._items.append(Inbound(topic, kept, len(payload)))
        self._ready.set()

    async def get(self) -> Inbound:
        """The oldest message, waiting for one if there is none; once the box has drained
        after dropping some, their topics are handed to ``resync``."""
        while not self._items:
            if self._lost and self.resync is not None:
                lost, self._lost = self._lost, set()
                self.resync(lost)
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)
