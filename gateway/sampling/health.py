"""Sensor health: ``ok``, ``degraded`` or ``failed``, from the sensor's recent history.

A few consecutive errors degrade a sensor, a longer run fails it; a failed sensor is
closed and re-opened with exponential backoff by its sampler, and one good reading
makes it ``ok`` again. A sensor whose last good reading is too old is degraded even
without errors (a read that hangs, a FIFO that stopped).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"


@dataclass(frozen=True)
class HealthPolicy:
    degrade_after: int = 3
    fail_after: int = 10
    stale_after_s: float = 30.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0


@dataclass
class SensorHealth:
    policy: HealthPolicy
    started_at: float
    errors: int = 0
    consecutive_errors: int = 0
    last_ok_ts: float | None = None
    last_error: str | None = None
    reopen_attempts: int = 0

    def succeeded(self, ts: float) -> None:
        self.consecutive_errors = 0
        self.reopen_attempts = 0
        self.last_ok_ts = ts

    def failed(self, error: str) -> None:
        self.errors += 1
        self.consecutive_errors += 1
        self.last_error = error

    def state(self, now: float) -> State:
        if self.consecutive_errors >= self.policy.fail_after:
            return State.FAILED
        if self.consecutive_errors >= self.policy.degrade_after:
            return State.DEGRADED
        # Before the first good reading, the time since start-up counts as staleness.
        since = self.last_ok_ts if self.last_ok_ts is not None else self.started_at
        if now - since > self.policy.stale_after_s:
            return State.DEGRADED
        return State.OK

    def reopen_delay(self) -> float:
        """Backoff before the next attempt to re-initialise a failed sensor."""
        delay = self.policy.retry_initial_s * 2 ** min(self.reopen_attempts, 30)
        self.reopen_attempts += 1
        return float(min(self.policy.retry_max_s, delay))
