"""Bounded pools of reusable objects for the pipeline's hot path.

A gateway runs for years: allocating a record per reading and leaving it to the garbage
collector means a heap that grows and fragments and collections that pause the loop.
Records come from a pool sized at start-up instead, and go back to it once the message
that carries them is encoded. The other fixed buffers of the hot path have one owner
each and are allocated once by it: the vibration window arrays (``vibration.Workspace``)
and the encode buffer (``codec.ReadingsEncoder``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Poolable(Protocol):
    pooled: bool

    def reset(self) -> None:
        """Forget the previous user's data before the object is handed out again."""


P = TypeVar("P", bound=Poolable)


class PoolError(Exception):
    """An object was released twice: two owners would share it."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    capacity: int
    in_use: int
    high_water: int
    misses: int


class Pool(Generic[P]):
    """At most ``capacity`` objects, all created up front.

    When every object is in use, ``acquire`` creates an extra one and counts a miss
    rather than failing: losing a reading is worse than a short burst of allocation.
    Extras are let go on release, so the pool never keeps more than ``capacity``.
    """

    def __init__(self, factory: Callable[[], P], capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._factory = factory
        self._free = [factory() for _ in range(capacity)]
        for item in self._free:
            item.pooled = True
        self.capacity = capacity
        self.in_use = 0
        self.high_water = 0
        self.misses = 0

    def acquire(self) -> P:
        if self._free:
            item = self._free.pop()
        else:
            self.misses += 1
            item = self._factory()
        item.pooled = False
        self.in_use += 1
        if self.in_use > self.high_water:
            self.high_water = self.in_use
        return item

    def release(self, item: P) -> None:
        if item.pooled:
            raise PoolError(f"{type(item).__name__} released twice")
        item.reset()
        item.pooled = True
        self.in_use -= 1
        if len(self._free) < self.capacity:
            self._free.append(item)

    def stats(self) -> PoolStats:
        return PoolStats(self.capacity, self.in_use, self.high_water, self.misses)


class Record:
    """One reading on its way through the pipeline.

    ``values`` is the record's own dict, refilled in place; ``zone`` is the ISO 10816
    severity zone when a vibration stage set one; ``anomaly_state`` is an anomaly
    stage's ``learning`` or ``ok``; ``out_of_range`` names the quantities a ``range``
    stage flagged.
    """

    __slots__ = ("anomaly_state", "out_of_range", "pooled", "ts", "values", "zone")

    def __init__(self) -> None:
        self.ts = 0.0
        self.values: dict[str, float] = {}
        self.zone: str | None = None
        self.anomaly_state: str | None = None
        self.out_of_range: list[str] = []
        self.pooled = False

    def reset(self) -> None:
        self.values.clear()
        self.zone = None
        self.anomaly_state = None
        self.out_of_range.clear()
