"""gmqtt, adapted to a supervisor that owns reconnects and a queue that owns messages.

Everything this module touches inside gmqtt (0.8) is named here and nowhere else:
the reconnect hook, the QoS store seam, the CONNACK properties and return code, and the
connection's transport, its close reason and inbound-traffic clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

# gmqtt's default when CONNACK carries no Receive Maximum (MQTT 5, 3.2.2.3.3).
DEFAULT_RECEIVE_MAXIMUM = 65535

# The protocol versions by their names in the configuration.
VERSIONS = {"5": MQTTv50, "3.1.1": MQTTv311}

# CONNACK codes that refuse the protocol version: MQTT 5's reason 0x84, and 3.1.1's
# return code 1, which a 3.1.1 broker also sends when offered MQTT 5.
VERSION_REFUSALS = frozenset({0x84, 0x01})


class AckTracker(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1 publishes, reporting each PUBACK.

    gmqtt assigns the packet id inside ``publish`` and hands the packet to this store
    before returning, which is how the caller learns which id its message got.
    """

    def __init__(self, on_ack: Callable[[int], None]) -> None:
        super().__init__()
        self._on_ack = on_ack
        self.last_mid = 0
        self.changed = asyncio.Event()

    # Not __len__: gmqtt takes ``persistent_storage or PersistentStorage()``, and an
    # empty store must not be falsy.
    @property
    def pending(self) -> int:
        """QoS 1 publishes awaiting their PUBACK."""
        return len(self._messages)

    def push_message(self, mid: int, raw_package: bytes) -> None:
        """gmqtt stores a publish: remember its packet id as ``last_mid``."""
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        """gmqtt got the PUBACK of ``mid``: report it."""
        super().remove_message_by_mid(mid)
        self.changed.set()
        self._on_ack(mid)


class SupervisedClient(Client):  # type: ignore[misc]
    """A gmqtt client that never reconnects by itself: the supervisor does."""

    def __init__(self, client_id: str, **kwargs: Any) -> None:
        super().__init__(client_id, **kwargs)
        self.connack_code: int | None = None
        # gmqtt answers a refusal of MQTT 5 with return code 1 by waiting for a CONNACK
        # on a connection of its own making, and tells no one; record every code it gets.
        handler: Any = self._package_handler
        handle_connack = handler._handle_connack_packet

        def record_connack(cmd: int, packet: bytes) -> None:
            self.connack_code = packet[1] if len(packet) > 1 else None
            handle_connack(cmd, packet)

        handler._handle_connack_packet = record_connack

    @property
    def version_refused(self) -> bool:
        """Whether the broker's CONNACK refused the protocol version we offered."""
        return self.connack_code in VERSION_REFUSALS

    async def reconnect(self, delay: bool = False) -> None:
        """Never: a lost connection is the supervisor's to replace."""

    @property
    def receive_maximum(self) -> int:
        """How many QoS 1 publishes the broker takes unacknowledged (MQTT 5 CONNACK)."""
        values = self._package_handler._connack_properties.get("receive_maximum")
        return int(values[0]) if values else DEFAULT_RECEIVE_MAXIMUM

    def inbound_silence(self) -> float:
        """Seconds since the broker last sent us anything."""
        return time.monotonic() - float(self._connection._last_data_in)

    def ping(self) -> None:
        """Send a PINGREQ now."""
        self._connection._send_ping_request()

    def abort(self) -> None:
        """Drop the socket at once; a half-open peer would never let ``close`` finish."""
        connection: Any = self._connection
        if connection is None:
            return
        if connection._keep_connection_callback:
            connection._keep_connection_callback.cancel()
        connection._transport.abort()

    def lost_reason(self) -> BaseException | None:
        """The error the transport closed with, if it closed with one."""
        connection: Any = self._connection
        if connection is None:
            return None
        closed: asyncio.Future[None] = connection._protocol.closed
        if closed.done() and not closed.cancelled():
            return closed.exception()
        return None

    @property
    def has_connection(self) -> bool:
        """Whether a transport is open and not closing."""
        return self._connection is not None and not self._connection.is_closing()


T = TypeVar("T")


async def unless_lost(work: Coroutine[Any, Any, T], lost: asyncio.Event) -> asyncio.Future[T]:
    """Runs ``work`` (a CONNECT waiting for its CONNACK) until it ends or ``lost`` is set,
    whichever comes first: a broker that hangs up is known at once, not at a timeout. The
    future, done or cancelled, to read the outcome of; nothing is left running."""
    running = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({running, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (running, watching):
            task.cancel()
        await asyncio.wait({running, watching})
    return running
