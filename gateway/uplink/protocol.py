"""Which MQTT version to speak to a broker, and the memory of what each broker took.

The uplink speaks MQTT 5, or 3.1.1 to a broker that refuses 5: many deployed brokers and
cloud endpoints speak only 3.1.1, and they refuse 5 in different ways (a CONNACK code, or
closing the connection before any CONNACK). With ``protocol: auto`` a broker is offered 5,
then 3.1.1; the version it takes first is the one it gets from then on, so the probe costs
one refused attempt per broker and settings, not one per reconnect. A broker that refuses
every version offered is named once per attempt at error level: that is a setting to fix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")


class ProtocolRefused(ConnectionError):
    """The broker's CONNACK refused the protocol version offered."""


class ClosedBeforeConnack(ConnectionError):
    """The broker closed a plain connection, cleanly, before its CONNACK: what a broker
    does that cannot parse the CONNECT (RabbitMQ 3.10 offered MQTT 5), or that is going down.
    """


class ProtocolMemory:
    """The protocol version each broker took, by URL, for the settings in force."""

    def __init__(self) -> None:
        self._taken: dict[str, str] = {}

    def forget(self) -> None:
        """New settings may name new brokers or force a version: probe again."""
        self._taken.clear()

    async def negotiate(
        self, url: str, configured: str, attempt: Callable[[str], Awaitable[T]]
    ) -> tuple[T, str]:
        """Connect with ``attempt(version)``: the version this broker took before, else the
        configured one or, with ``auto``, MQTT 5 and then 3.1.1. Returns the connection and
        the version it speaks; raises ``ProtocolRefused`` or ``ClosedBeforeConnack`` when
        every version offered was refused (other errors pass through at once)."""
        known = self._taken.get(url)
        if known is not None:
            offers: tuple[str, ...] = (known,)
        elif configured == "auto":
            offers = ("5", "3.1.1")
        else:
            offers = (configured,)
        failures: list[tuple[str, ConnectionError]] = []
        for protocol in offers:
            try:
                connection = await attempt(protocol)
            except (ProtocolRefused, ClosedBeforeConnack) as exc:
                failures.append((protocol, exc))
                continue
            if known is None:
                self._taken[url] = protocol
                refused = {"refused": _failed(failures)} if failures else {}
                log.info("uplink.protocol", broker=url, version=protocol, **refused)
            return connection, protocol
        error = _failed(failures)
        if any(isinstance(exc, ProtocolRefused) for _, exc in failures):
            log.error("uplink.protocol_refused", broker=url, error=error)
            raise ProtocolRefused(error)
        raise ClosedBeforeConnack(error)


def _failed(failures: list[tuple[str, ConnectionError]]) -> str:
    return "; ".join(f"MQTT {protocol}: {exc}" for protocol, exc in failures)
