"""gmqtt, adapted to a supervisor that owns reconnects and a queue that owns messages.

Everything this module touches inside gmqtt (0.8) is named here and nowhere else:
the reconnect hook, the QoS store seam, the CONNACK properties, and the connection's
transport, its close reason and inbound-traffic clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gmqtt import Client
from gmqtt.storage import PersistentStorage

# gmqtt's default when CONNACK carries no Receive Maximum (MQTT 5, 3.2.2.3.3).
DEFAULT_RECEIVE_MAXIMUM = 65535


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
        return len(self._messages)

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self.changed.set()
        self._on_ack(mid)


class SupervisedClient(Client):  # type: ignore[misc]
    """A gmqtt client that never reconnects by itself: the supervisor does."""

    async def reconnect(self, delay: bool = False) -> None:
        return None

    @property
    def receive_maximum(self) -> int:
        values = self._package_handler._connack_properties.get("receive_maximum")
        return int(values[0]) if values else DEFAULT_RECEIVE_MAXIMUM

    def inbound_silence(self) -> float:
        """Seconds since the broker last sent us anything."""
        return time.monotonic() - float(self._connection._last_data_in)

    def ping(self) -> None:
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
        return self._connection is not None and not self._connection.is_closing()
