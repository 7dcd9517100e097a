"""The log throttle: one line per reason per interval, the rest counted, on a fake clock."""

from __future__ import annotations

from gateway.logthrottle import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_once_per_interval_per_reason_with_the_count_left_unlogged() -> None:
    clock = Clock()
    throttle = LogThrottle(60.0, clock)
    said = []
    for second in range(130):
        clock.now = 5000.0 + second
        said.append((second, throttle.admit("bad signature")))
    assert [(s, extra) for s, extra in said if extra is not None] == [
        (0, {}), (60, {"unlogged_since": 59}), (120, {"unlogged_since": 59})]


def test_reasons_are_throttled_apart() -> None:
    clock = Clock()
    throttle = LogThrottle(60.0, clock)
    assert throttle.admit("not json") == {}
    assert throttle.admit("too large") == {}
    assert throttle.admit("not json") is None
    clock.now += 60.0
    assert throttle.admit("too large") == {}
    assert throttle.admit("not json") == {"unlogged_since": 1}


def test_a_clock_stepped_back_ends_the_interval_instead_of_silencing_the_reason() -> None:
    clock = Clock()
    throttle = LogThrottle(60.0, clock)
    assert throttle.admit("ema") == {}
    clock.now += 10.0
    assert throttle.admit("ema") is None
    clock.now -= 3600.0
    assert throttle.admit("ema") == {"unlogged_since": 1}
    clock.now += 1.0
    assert throttle.admit("ema") is None
