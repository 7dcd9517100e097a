"""The fail-over decision (``failover.Rotation``) over histories of attempts, on a fake clock.

A connection lost moves to the next broker at once; the backoff comes after a full cycle
through the list has failed and its ceiling doubles per failed cycle; a connection that held
for ``SETTLE_S`` resets it, so fail-overs in quick succession all stay immediate. The draw
returns the ceiling (``ceiling``) where the test asserts it, and ``random.uniform`` where the
full jitter's bounds are.
"""

from __future__ import annotations

import random

from gateway.config.mqtt import Backoff, parse_broker_url
from gateway.uplink.failover import SETTLE_S, Rotation

BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
A, B, C = (parse_broker_url(f"mqtt://{name}:1883") for name in "abc")


def ceiling(low: float, high: float) -> float:
    return high


class History:
    """The uplink's attempts on a fake clock: ``fail`` an attempt, ``hold`` a connection for
    a while and lose it; each returns the wait the decision chose for the next attempt."""

    def __init__(self, size: int, backoff: Backoff = BACKOFF) -> None:
        self.rotation = Rotation(size)
        self.backoff = backoff
        self.now = 1000.0

    def fail(self, took_s: float = 0.1) -> float:
        self.now += took_s
        return self._end()

    def hold(self, up_s: float) -> float:
        self.now += 0.1
        self.rotation = self.rotation.connected(self.now)
        self.now += up_s
        return self._end()

    def _end(self) -> float:
        self.rotation, delay = self.rotation.ended(self.now, self.backoff, ceiling)
        self.now += delay
        return delay


def test_a_lost_connection_moves_to_the_next_broker_at_once() -> None:
    history = History(2)
    assert history.hold(30) == 0
    assert history.rotation.turn == 1


def test_with_every_broker_down_the_backoff_comes_per_full_cycle_and_grows() -> None:
    history = History(2)
    waits = [history.fail() for _ in range(16)]
    # A fails: B at once; B fails too: the cycle has failed, back off, then A again.
    assert waits == [0, 1, 0, 2, 0, 4, 0, 8, 0, 16, 0, 32, 0, 60, 0, 60]
    assert history.rotation.turn == 0


def test_after_a_loss_the_cycle_starts_at_the_lost_broker() -> None:
    history = History(3)
    history.fail()  # A
    assert history.hold(30) == 0  # B held, then lost: C at once
    assert [history.fail(), history.fail()] == [0, 1]  # C, then A: all three failed
    assert history.rotation.turn == 1  # B, where the cycle began


def test_repeated_fail_overs_within_max_s_stay_immediate() -> None:
    history = History(2)
    started = history.now
    waits = [history.hold(SETTLE_S + 1) for _ in range(8)]
    assert history.now - started < BACKOFF.max_s  # all within max_s of each other
    assert waits == [0] * 8
    assert [history.rotation.turn, history.hold(SETTLE_S)] == [0, 0]


def test_a_single_broker_backs_off_from_the_start_after_each_held_connection() -> None:
    history = History(1)
    assert [history.fail(), history.fail(), history.fail()] == [1, 2, 4]
    assert [history.hold(SETTLE_S), history.hold(SETTLE_S)] == [1, 1]


def test_a_broker_that_accepts_and_drops_at_once_is_backed_off_per_cycle() -> None:
    history = History(2)
    # CONNACK, then lost within the settle time: a failed attempt of its cycle.
    waits = [history.hold(0.2) for _ in range(8)]
    assert waits == [0, 1, 0, 2, 0, 4, 0, 8]
    # Once one holds, the next loss moves on at once and the count starts over.
    assert [history.hold(SETTLE_S), history.fail()] == [0, 1]


def test_the_wait_is_full_jitter_under_the_ceiling() -> None:
    rotation = Rotation(2, failed=1, cycles=3)
    draws = {rotation.ended(0.0, BACKOFF, random.uniform)[1] for _ in range(200)}
    assert all(0 <= wait <= 8 for wait in draws)
    assert min(draws) < 4 < max(draws)


def test_new_settings_keep_the_broker_in_use_if_still_listed() -> None:
    history = History(3)
    history.hold(30)  # A lost: B at once
    history.rotation = history.rotation.connected(history.now)
    assert history.rotation.restarted([A, B, C], [C, B]) == Rotation(2, turn=1)
    assert history.rotation.restarted([A, B, C], [A, C]) == Rotation(2, turn=0)
    # Counts start over: the new settings are tried at once.
    failing = Rotation(3, turn=2, failed=1, cycles=4)
    assert failing.restarted([A, B, C], [A, B, C]) == Rotation(3, turn=2)
