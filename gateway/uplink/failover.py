"""Which broker the uplink tries next, and after how long: the fail-over decision, pure.

``mqtt.brokers`` is tried in its order. A lost connection moves on to the next broker at
once: in a cluster another node serves the session within moments, and waiting first would
only hold back what the queue has. Backoff (exponential, full jitter) comes only when a full
cycle through the list has failed, and its ceiling doubles with each such cycle, so a device
that reaches no broker still tries each one ever more rarely. There is no fail-back: the
uplink stays on a working broker wherever it stands in the list, and moves only when that
connection is lost; new settings start from the broker in use if they still list it.

A connection that held for ``SETTLE_S`` after its CONNACK resets the count of failed cycles.
Not the CONNACK itself: a broker that accepts and then drops us (a twin device taking over
our client id, a proxy cutting the link, a broker refusing what we publish) would then be
cycled through at the speed of the network, every broker in turn, with no backoff ever. With
the settle time such a broker costs one connection per ``SETTLE_S`` at most; a connection
lost before it counts as a failed attempt of its cycle. Five seconds is long enough for
such a broker to show itself and short enough that a cluster's nodes, restarted one after
another, each count as a connection that held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gateway.config.mqtt import Backoff, BrokerUrl

SETTLE_S = 5.0

Draw = Callable[[float, float], float]


def backoff_delay(backoff: Backoff, cycle: int, draw: Draw) -> float:
    """The wait after failed cycle number ``cycle`` (from 0): full jitter over an
    exponential ceiling, capped at ``backoff.max_s``."""
    return draw(0, min(backoff.max_s, backoff.initial_s * 2**cycle))


@dataclass(frozen=True)
class Rotation:
    """Where the uplink stands in a list of ``size`` brokers: the one tried or in use
    (``turn``), how many have failed in a row in this cycle, how many full cycles have
    failed since a connection held, and when the current connection's CONNACK came."""

    size: int
    turn: int = 0
    failed: int = 0
    cycles: int = 0
    connected_at: float | None = None

    def connected(self, now: float) -> Rotation:
        """The broker at ``turn`` sent CONNACK at ``now``."""
        return replace(self, connected_at=now)

    def ended(self, now: float, backoff: Backoff, draw: Draw) -> tuple[Rotation, float]:
        """The attempt or connection at ``turn`` ended at ``now``: the rotation that
        follows, and how long to wait before trying its ``turn``."""
        held = self.connected_at is not None and now - self.connected_at >= SETTLE_S
        failed = 1 if held else self.failed + 1
        cycles = 0 if held else self.cycles
        turn = (self.turn + 1) % self.size
        if failed < self.size:
            return Rotation(self.size, turn, failed, cycles), 0.0
        return Rotation(self.size, turn, 0, cycles + 1), backoff_delay(backoff, cycles, draw)

    def restarted(self, old: Sequence[BrokerUrl], new: Sequence[BrokerUrl]) -> Rotation:
        """New settings, tried at once: from the broker at ``turn`` if ``new`` still lists
        it (a working uplink stays where it is), else from the first."""
        current = old[self.turn]
        return Rotation(len(new), new.index(current) if current in new else 0)
