"""Where the uplink stands, told to its owner the moment it changes.

The daemon shows the link (systemd's STATUS=, the heartbeat, a firmware trial's health), and
what it shows must never be stale: so the link has one holder here, and every change goes to
the owner's callback at once rather than waiting to be polled. A callback that fails is
logged and forgotten, because the owner's display must not take the connection down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import structlog

log = structlog.get_logger(__name__)


class LinkState(Enum):
    """The uplink's state: trying a broker, connected to one, or between attempts."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Link:
    """Where the uplink stands: the broker it is on or trying, and why the last one went."""

    state: LinkState
    broker: str
    reason: str | None = None

    def describe(self) -> str:
        """One line for a person: ``connected to URL``, ``broker unreachable (why)``."""
        if self.state is LinkState.UNREACHABLE:
            return f"broker unreachable ({self.reason})"
        return f"{self.state.value} to {self.broker}"


@dataclass
class UplinkStats:
    """The uplink's figures for the heartbeat and the diagnostics report."""

    connected: bool
    broker: str | None
    reconnects: int
    last_error: str | None


class LinkHolder:
    """The current ``Link``, and the owner's callback for each change of it."""

    def __init__(self, broker: str, on_change: Callable[[Link], None] | None) -> None:
        self.current = Link(LinkState.CONNECTING, broker)
        self._on_change = on_change

    def set(self, state: LinkState, broker: str, reason: str | None = None) -> None:
        """Record where the uplink now stands and tell the owner."""
        self.current = Link(state, broker, reason)
        if self._on_change is not None:
            try:
                self._on_change(self.current)
            except Exception:  # the owner's display must not take the connection down
                log.exception("uplink.on_link_failed")
