"""One alarm's state machine, driven by (value, now) with a fake clock: the threshold, the
hysteresis, both delays, and values that turn back during a delay."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.alarms import Alarm
from gateway.pipeline.alarm import AlarmState, Phase, Rule, Transition, step

RAISED, CLEARED = Transition.RAISED, Transition.CLEARED


def run(alarm: Alarm, values: list[tuple[float, float]]) -> list[tuple[float, Any]]:
    """(now, value) in turn; the transitions with the time they happened."""
    rule, state = Rule.of(alarm), AlarmState()
    out = []
    for now, value in values:
        transition = step(rule, state, value, now)
        if transition is not None:
            out.append((now, transition, state.since))
    return out


def overheat(**settings: Any) -> Alarm:
    return Alarm.model_validate({"name": "overheat", "quantity": "temperature_c",
                                 "above": 40.0, **settings})


def test_without_delays_it_raises_above_and_clears_at_or_below_the_threshold() -> None:
    assert run(overheat(), [(0, 39.0), (1, 40.0), (2, 40.1), (3, 45.0), (4, 40.0), (5, 41.0)]
               ) == [(2, RAISED, 2), (4, CLEARED, 4), (5, RAISED, 5)]


def test_hysteresis_clears_only_below_the_threshold_less_the_hysteresis() -> None:
    alarm = overheat(hysteresis=2.0)
    # 39 and 38.5 are within the band: still raised. 38 clears ("clears at 38").
    assert run(alarm, [(0, 41.0), (1, 39.0), (2, 38.5), (3, 40.5), (4, 38.0), (5, 39.5)]
               ) == [(0, RAISED, 0), (4, CLEARED, 4)]


def test_on_delay_needs_the_condition_held_that_long() -> None:
    alarm = overheat(on_delay_s=10.0)
    # Above at 0..9 then back: nothing. Above again from 20: raised at 30, since 20.
    values = [(t, 41.0) for t in range(10)] + [(10, 39.0)] + [(t, 41.0) for t in range(20, 31)]
    assert run(alarm, values) == [(30, RAISED, 20)]


def test_off_delay_needs_the_clear_held_that_long() -> None:
    alarm = overheat(hysteresis=2.0, off_delay_s=30.0)
    values = [(0, 45.0), (10, 37.0), (39, 37.0), (40, 39.0),  # back within the band at 40
              (50, 37.0), (79, 37.5), (80, 36.0)]
    assert run(alarm, values) == [(0, RAISED, 0), (80, CLEARED, 50)]


def test_below_mirrors_above() -> None:
    alarm = Alarm.model_validate({"name": "frost", "quantity": "temperature_c", "below": 2.0,
                                  "hysteresis": 1.0, "on_delay_s": 5.0, "off_delay_s": 5.0})
    values = [(0, 3.0), (1, 1.0), (5, 0.5), (6, 0.0), (7, 2.5), (8, 3.0), (12, 3.5),
              (13, 3.0)]
    assert run(alarm, values) == [(6, RAISED, 1), (13, CLEARED, 8)]


def test_a_clock_stepped_back_restarts_the_delay_rather_than_raising() -> None:
    alarm = overheat(on_delay_s=10.0)
    # NTP steps the clock back by an hour during the on-delay: it begins again there.
    values = [(3600.0, 41.0), (3605.0, 41.0), (5.0, 41.0), (14.0, 41.0), (15.0, 41.0)]
    assert run(alarm, values) == [(15.0, RAISED, 5.0)]


def test_the_phases_in_between_are_not_published() -> None:
    rule, state = Rule.of(overheat(on_delay_s=1.0, off_delay_s=1.0)), AlarmState()
    phases = []
    for now, value in [(0, 41.0), (1, 41.0), (2, 30.0), (3, 30.0)]:
        step(rule, state, value, now)
        phases.append(state.phase)
    assert phases == [Phase.PENDING, Phase.ACTIVE, Phase.CLEARING, Phase.CLEAR]
    assert [state.raised for state in (AlarmState(Phase.CLEARING), AlarmState(Phase.PENDING))
            ] == [True, False]


@pytest.mark.parametrize("value", [41.0, 39.0])
def test_the_steady_state_changes_nothing(value: float) -> None:
    rule, state = Rule.of(overheat(hysteresis=1.0)), AlarmState()
    step(rule, state, value, 0.0)
    before = (state.phase, state.started, state.since)
    assert all(step(rule, state, value, float(t)) is None for t in range(1, 100))
    assert (state.phase, state.started, state.since) == before
