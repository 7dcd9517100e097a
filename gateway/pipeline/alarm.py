"""One alarm's state machine: a pure decision on each value, driven by (value, now).

clear -> pending -> active -> clearing -> clear. A value beyond the threshold starts the
on-delay (pending); held for ``on_delay_s`` it raises the alarm (active). A value back
past the threshold by the hysteresis starts the off-delay (clearing); held for
``off_delay_s`` it clears the alarm. A value that turns back during a delay returns to
where it came from, so a flicker around the threshold raises and clears nothing. Only
raising and clearing are published; pending and clearing stay on the device.

``step`` mutates the alarm's ``AlarmState`` in place and returns a transition only when
the alarm is raised or cleared: the steady state allocates nothing. The state is a
separate object so that its owner (``gateway.pipeline.alarms.AlarmBook``) can keep it
while the pipeline that evaluates it is rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gateway import wire
from gateway.config.alarms import Alarm


class Phase(Enum):
    CLEAR = "clear"
    PENDING = "pending"
    ACTIVE = "active"
    CLEARING = "clearing"


class Transition(Enum):
    """What is published, by the ``state`` it publishes."""

    RAISED = wire.AlarmState.ACTIVE.value
    CLEARED = wire.AlarmState.CLEARED.value


@dataclass(slots=True)
class AlarmState:
    phase: Phase = Phase.CLEAR
    # When the present delay began (pending, clearing).
    started: float = 0.0
    # When the condition of the alarm last raised began to hold (active, clearing), and
    # when the off-delay of the last clear began (clear): the ``since`` published.
    since: float = 0.0

    @property
    def raised(self) -> bool:
        """Whether the alarm is raised, as published: active, or clearing but not yet clear."""
        return self.phase is Phase.ACTIVE or self.phase is Phase.CLEARING


@dataclass(frozen=True, slots=True)
class Rule:
    """An alarm's thresholds, turned so that ``above`` and ``below`` compare alike: the
    watched value is multiplied by ``sign`` (-1 for ``below``)."""

    sign: float
    trip: float
    release: float
    on_delay_s: float
    off_delay_s: float

    @classmethod
    def of(cls, alarm: Alarm) -> Rule:
        sign = 1.0 if alarm.above is not None else -1.0
        trip = sign * alarm.threshold
        return cls(sign, trip, trip - alarm.hysteresis, alarm.on_delay_s, alarm.off_delay_s)


def step(rule: Rule, state: AlarmState, value: float, now: float) -> Transition | None:
    """Take ``value``, read at ``now`` (seconds), into ``state``; the transition to
    publish, if any. A clock stepped back shortens nothing: a delay that would have begun
    in the future begins again at ``now``."""
    x = rule.sign * value
    phase = state.phase
    if phase is Phase.CLEAR:
        if x > rule.trip:
            state.started = now
            if rule.on_delay_s <= 0.0:
                return _raise(state, now)
            state.phase = Phase.PENDING
        return None
    if phase is Phase.PENDING:
        if x <= rule.trip:
            state.phase = Phase.CLEAR
            return None
        if now < state.started:
            state.started = now
        if now - state.started >= rule.on_delay_s:
            return _raise(state, state.started)
        return None
    if phase is Phase.ACTIVE:
        if x <= rule.release:
            state.started = now
            if rule.off_delay_s <= 0.0:
                return _clear(state, now)
            state.phase = Phase.CLEARING
        return None
    # Clearing.
    if x > rule.release:
        state.phase = Phase.ACTIVE
        return None
    if now < state.started:
        state.started = now
    if now - state.started >= rule.off_delay_s:
        return _clear(state, state.started)
    return None


def _raise(state: AlarmState, since: float) -> Transition:
    state.phase = Phase.ACTIVE
    state.since = since
    return Transition.RAISED


def _clear(state: AlarmState, since: float) -> Transition:
    state.phase = Phase.CLEAR
    state.since = since
    return Transition.CLEARED
