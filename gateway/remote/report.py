"""What the device says about remote configuration, and to whom.

The retained ``P/D/config/state`` holds the outcome of an envelope a trusted key signed
(applied, rolled back, or rejected after its signature verified) and of a stored layer set
aside at start: the word of someone trusted, which an operator's ``push-config`` waits for
by scope, version and ``kid``. Anyone who can publish on the broker can send junk (too
large, malformed, signed by nobody trusted) at any rate: were it reported there, it would
overwrite the truth. Junk is counted per reason instead (the heartbeat's
``config_rejected``) and logged at most once a minute per reason, with the count of those
left unlogged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway import wire
from gateway.config.models import Config
from gateway.logthrottle import LogThrottle

log = structlog.get_logger(__name__)

@dataclass(frozen=True)
class Outcome:
    """What the device says of one trusted update on ``config/state`` (docs/PROTOCOL.md
    section 3.5)."""

    scope: str | None
    version: int | None
    status: wire.ConfigStatus
    reason: str | None = None
    # The key that signed the envelope; None for a stored layer set aside at start.
    kid: str | None = None


def state_topic(config: Config) -> str:
    """``P/D/config/state`` of this device."""
    return wire.config_state_topic(config.mqtt.topic_prefix, config.device_id)


def state_payload(outcome: Outcome, ts: float) -> bytes:
    """The config state document of ``outcome``, decided at ``ts``."""
    body = {"scope": outcome.scope, "version": outcome.version, "status": outcome.status,
            "reason": outcome.reason, "kid": outcome.kid, "ts": ts}
    return json.dumps(body, separators=(",", ":")).encode()


class Junk:
    """Envelopes refused before their signature verified: counted, logged sparingly."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: dict[str, int] = {}
        self._throttle = LogThrottle(clock=clock)

    def count(self, reason: str, topic: str) -> None:
        """Count one refused envelope; log it unless its reason was logged within a minute."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        extra = self._throttle.admit(reason)
        if extra is not None:
            log.warning("config.rejected", reason=reason, topic=topic, verified=False, **extra)
