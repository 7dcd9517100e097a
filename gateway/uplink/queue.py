"""The bounded queue between the pipeline and the uplink; the single source of truth
for what has not reached the broker yet.

Two tiers: messages enter memory; when memory passes half its bound, or a message has
waited ``spill_after_s`` (the broker is away), the oldest are moved to the SQLite file.
Every message gets an increasing key when queued, and the uplink always takes the
lowest key of either tier, so messages leave in the order they came. A taken message
stays queued, "in flight", until ``ack`` (PUBACK for QoS 1, written for QoS 0);
``rewind`` puts every unacknowledged message back in order when a connection is lost.
When both tiers are full, the drop policy decides, and every drop is counted per sensor.
``put`` never waits; the disk work happens in ``run``, in one worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from gateway.config.models import QueueConfig

if TYPE_CHECKING:
    from gateway.uplink.spill import SpillStore

log = structlog.get_logger(__name__)

T = TypeVar("T")

LOAD_BATCH = 256
SPILL_BATCH = 1000
# Acked disk rows are deleted in batches: a crash before the delete only resends them.
DELETE_BATCH = 200


@dataclass(slots=True)
class Message:
    """One encoded message on its way to the broker, as it waits in either tier."""

    topic: str
    payload: bytes
    qos: int
    sensor: str
    # A state document (an alarm's) the broker keeps for late subscribers.
    retain: bool = False
    key: int = 0
    queued_at: float = 0.0
    on_disk: bool = False
    # Its disk row was evicted while in flight: an ack still delivers it, a rewind loses it.
    evicted: bool = False

    @property
    def size(self) -> int:
        """What it counts against the memory bound, in bytes."""
        return len(self.topic) + len(self.payload)


@dataclass
class QueueStats:
    """The queue's figures for the heartbeat and the diagnostics report."""

    depth: int
    bytes: int
    in_flight: int
    dropped: int
    spilled: int
    dropped_by_sensor: dict[str, int] = field(default_factory=dict)


class MessageQueue:
    """The bounded two-tier queue of messages the broker has not yet acknowledged."""

    def __init__(self, config: QueueConfig, state_dir: Path | None = None) -> None:
        self._config = config
        self._memory: deque[Message] = deque()
        self._memory_bytes = 0
        self._in_flight: dict[int, Message] = {}
        self._disk_buffer: deque[Message] = deque()
        self._loaded_upto = 0
        self._deletes: list[int] = []
        self._key = 0
        self._store: SpillStore | None = None
        if config.disk_max_bytes and state_dir is not None:
            # SQLite only for a disk tier: a memory-only queue spares its imports (1 MiB).
            from gateway.uplink.spill import SpillStore

            self._store = SpillStore(state_dir / "queue.db", config.disk_max_bytes)
        self._disk_count = 0
        self._disk_bytes = 0
        self._disk_last_key = 0
        self._io: ThreadPoolExecutor | None = None
        # Held while rows move between the tiers, so a message is never taken twice
        # nor sent ahead of an older one that is on its way to disk.
        self._moving = asyncio.Lock()
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._acked = asyncio.Event()
        self.dropped: Counter[str] = Counter()
        self.spilled = 0

    async def open(self) -> None:
        """Open the disk tier, if any, and take up what an earlier run left in it."""
        if self._store is None:
            return
        self._io = ThreadPoolExecutor(1, thread_name_prefix="queue-disk")
        await self._disk(self._store.open)
        self._sync_disk_figures()
        self._key = self._store.last_key
        if self._disk_count:
            log.info("queue.recovered", messages=self._disk_count, bytes=self._disk_bytes)
            self._ready.set()

    async def close(self) -> None:
        """Keep what was not delivered: on disk when spilling is on, else count it lost."""
        self.rewind()
        try:
            if self._store is not None:
                async with self._moving:
                    await self._flush_deletes()
                    while self._memory and await self._spill(len(self._memory), evict=False):
                        pass
                await self._disk(self._store.close)
            if self._memory:
                log.warning("queue.lost_at_shutdown", messages=len(self._memory))
        finally:
            if self._io is not None:
                self._io.shutdown(wait=True)
                self._io = None

    async def run(self) -> None:
        """Move old messages to disk and delete acknowledged ones, until cancelled."""
        if self._store is None:
            return
        tick = max(0.05, self._config.spill_after_s / 2)
        while True:
            self._changed.clear()
            try:
                async with asyncio.timeout(tick):
                    await self._changed.wait()
            except TimeoutError:
                pass
            async with self._moving:
                if len(self._deletes) >= DELETE_BATCH or not self._changed.is_set():
                    await self._flush_deletes()
                count = self._spill_candidates()
                if count:
                    await self._spill(count, evict=self._config.drop_policy == "oldest")

    def resize(self, config: QueueConfig) -> None:
        """New bounds and policy, live. Nothing queued is dropped by the change itself:
        over a smaller memory bound, the disk tier takes the excess on its next turn, or
        without one the drop policy applies from the next message on. Whether there is a
        disk tier at all is fixed for the process (the owner refuses that change)."""
        self._config = config
        if self._store is not None:
            self._store.max_bytes = config.disk_max_bytes
            self._changed.set()

    def put(self, message: Message) -> None:
        """Queue ``message`` now, or drop by the policy when both tiers are full."""
        if self._memory_full() and not self._make_room(message):
            return
        self._key += 1
        message.key = self._key
        message.queued_at = time.monotonic()
        self._memory.append(message)
        self._memory_bytes += message.size
        self._ready.set()
        if self._store is not None and len(self._memory) * 2 >= self._config.memory_max_messages:
            self._changed.set()

    def _memory_full(self) -> bool:
        bounds = self._config
        return (len(self._memory) >= bounds.memory_max_messages
                or self._memory_bytes >= bounds.memory_max_bytes)

    def _make_room(self, incoming: Message) -> bool:
        """Apply the drop policy to a full memory tier; False drops ``incoming``."""
        if self._config.drop_policy == "newest" or not self._memory:
            self.dropped[incoming.sensor] += 1
            return False
        while self._memory and self._memory_full():
            oldest = self._memory.popleft()
            self._memory_bytes -= oldest.size
            self.dropped[oldest.sensor] += 1
        return True

    async def take(self) -> Message:
        """The oldest message not in flight; it stays queued until ``ack``."""
        while True:
            # The common case on the hot path: the next message is in memory and no rows
            # are moving, so neither the lock nor the disk is needed.
            if not self._moving.locked() and not self._must_load():
                message = self._take_oldest()
                if message is not None:
                    return message
            async with self._moving:
                # A batch can be all skipped rows (see _load): load until one is left.
                while self._must_load():
                    await self._load()
                message = self._take_oldest()
                if message is not None:
                    return message
                self._ready.clear()
            await self._ready.wait()

    def _must_load(self) -> bool:
        return not self._disk_buffer and self._disk_last_key > self._loaded_upto

    def _take_oldest(self) -> Message | None:
        source = self._oldest_source()
        if source is None:
            return None
        message = source.popleft()
        if not message.on_disk:
            self._memory_bytes -= message.size
        self._in_flight[message.key] = message
        return message

    def _oldest_source(self) -> deque[Message] | None:
        if self._disk_buffer and self._memory:
            older = self._disk_buffer[0].key < self._memory[0].key
            return self._disk_buffer if older else self._memory
        return self._disk_buffer or self._memory or None

    def ack(self, message: Message) -> None:
        """``message`` reached the broker: it leaves the queue (a second ack is ignored)."""
        acked = self._in_flight.pop(message.key, None)
        if acked is None:
            return  # acked twice after a resend
        self._acked.set()
        if acked.evicted:
            return  # delivered after all, and its row is already gone
        if message.on_disk:
            self._deletes.append(message.key)
            if len(self._deletes) >= DELETE_BATCH:
                self._changed.set()

    def rewind(self) -> None:
        """Return every unacknowledged message to the front of its tier, in order."""
        if not self._in_flight:
            return
        for message in sorted(self._in_flight.values(), key=lambda m: m.key, reverse=True):
            if message.evicted:
                # The drop policy took its row: it is not sent again, and now it is lost.
                self.dropped[message.sensor] += 1
            elif message.on_disk:
                self._disk_buffer.appendleft(message)
            else:
                self._memory.appendleft(message)
                self._memory_bytes += message.size
        self._in_flight.clear()
        self._ready.set()

    async def drained(self) -> None:
        """Wait until everything queued has been acknowledged."""
        while self.depth:
            self._acked.clear()
            await self._acked.wait()

    @property
    def depth(self) -> int:
        """How many messages are queued, in flight included."""
        memory_in_flight = sum(1 for m in self._in_flight.values() if not m.on_disk)
        return len(self._memory) + memory_in_flight + self._disk_count - len(self._deletes)

    def stats(self) -> QueueStats:
        """The queue's figures now."""
        in_flight_bytes = sum(m.size for m in self._in_flight.values() if not m.on_disk)
        return QueueStats(
            depth=self.depth,
            bytes=self._memory_bytes + in_flight_bytes + self._disk_bytes,
            in_flight=len(self._in_flight),
            dropped=sum(self.dropped.values()),
            spilled=self.spilled,
            dropped_by_sensor=dict(self.dropped),
        )

    async def _disk(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._io is not None
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _sync_disk_figures(self) -> None:
        assert self._store is not None
        self._disk_count, self._disk_bytes = self._store.count, self._store.bytes
        self._disk_last_key = self._store.last_key

    async def _load(self) -> None:
        assert self._store is not None
        rows = await self._disk(self._store.load, self._loaded_upto, LOAD_BATCH)
        # After a reload (see _spill), rows in flight or acknowledged are not sent again.
        skip = set(self._deletes)
        for row in rows:
            if row.key in self._in_flight or row.key in skip:
                continue
            self._disk_buffer.append(
                Message(row.topic, row.payload, row.qos, row.sensor, row.retain, row.key,
                        on_disk=True)
            )
        # Rows evicted before they were loaded leave nothing to load up to the last key.
        self._loaded_upto = rows[-1].key if rows else self._disk_last_key

    def _spill_candidates(self) -> int:
        """How many of the oldest memory messages should move to disk now."""
        over = len(self._memory) - self._config.memory_max_messages // 2
        stale_before = time.monotonic() - self._config.spill_after_s
        old = 0
        for message in self._memory:
            if message.queued_at > stale_before:
                break
            old += 1
        return min(SPILL_BATCH, max(over, old, 0))

    async def _spill(self, count: int, evict: bool) -> int:
        """Move the ``count`` oldest memory messages to disk (caller holds ``_moving``)."""
        assert self._store is not None
        if evict:
            # Delivered rows make room before an undelivered one is evicted.
            await self._flush_deletes()
        batch = [self._memory[i] for i in range(min(count, len(self._memory)))]
        from gateway.uplink.spill import Row

        rows = [Row(m.key, m.sensor, m.topic, m.qos, m.payload, m.retain) for m in batch]
        stored, evicted = await self._disk(self._store.append, rows, evict)
        self._remove_spilled(batch[:stored])
        self.spilled += stored
        if stored and batch[0].key <= self._loaded_upto:
            # Rewound messages went to disk behind rows already loaded: load again from
            # them, or they would wait for the next restart.
            self._disk_buffer.clear()
            self._loaded_upto = batch[0].key - 1
        if evicted:
            self._forget(evicted)
        self._sync_disk_figures()
        return stored

    def _remove_spilled(self, spilled: list[Message]) -> None:
        """Take the messages now on disk out of memory.

        While they were written, ``rewind`` may have put messages in front of them and
        ``put`` may have dropped some of them: go by identity, not by position.
        """
        at_front = len(self._memory) >= len(spilled) and all(
            self._memory[i] is m for i, m in enumerate(spilled)
        )
        if at_front:
            for message in spilled:
                self._memory.popleft()
                self._memory_bytes -= message.size
            return
        moved = {m.key for m in spilled}
        kept: deque[Message] = deque()
        for message in self._memory:
            if message.key in moved:
                moved.discard(message.key)
                self._memory_bytes -= message.size
            else:
                kept.append(message)
        self._memory = kept
        for message in spilled:
            if message.key in moved:  # dropped from memory meanwhile, yet safe on disk
                self.dropped[message.sensor] -= 1
                if not self.dropped[message.sensor]:
                    del self.dropped[message.sensor]

    def _forget(self, evicted: list[tuple[int, str]]) -> None:
        """Count evicted rows as dropped and drop every copy of them held in memory.

        A row in flight is not dropped yet: the broker may still acknowledge it. It is
        marked, so that its ack does not delete it again and a rewind counts it lost.
        """
        keys = set()
        delivered = set(self._deletes)  # acknowledged while the rows were written
        for key, sensor in evicted:
            keys.add(key)
            if key in delivered:
                continue
            in_flight = self._in_flight.get(key)
            if in_flight is not None:
                in_flight.evicted = True
            else:
                self.dropped[sensor] += 1
        if delivered & keys:
            self._deletes = [k for k in self._deletes if k not in keys]
        self._disk_buffer = deque(m for m in self._disk_buffer if m.key not in keys)

    async def _flush_deletes(self) -> None:
        if not self._deletes or self._store is None:
            return
        keys, self._deletes = self._deletes, []
        await self._disk(self._store.delete, keys)
        self._sync_disk_figures()
