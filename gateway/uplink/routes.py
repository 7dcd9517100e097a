"""The topics the uplink subscribes to, each delivering into the ``Inbox`` of its consumer.

A route outlives connections: a clean session forgets subscriptions, so every route is
subscribed again after each CONNACK, and one made or removed while connected is subscribed
or unsubscribed at once. Delivery is the only work done in gmqtt's callback, and it is an
``Inbox.offer`` that neither blocks nor raises; the inbox, not the broker, decides what to
keep, so every message is acknowledged as received. A topic whose messages an inbox dropped
in a burst is subscribed again once that inbox has drained: the broker then sends its
retained message again (``Inbox``).
"""

from __future__ import annotations

from collections.abc import Callable

from gmqtt import Subscription

from gateway.uplink.inbox import Inbox
from gateway.uplink.mqtt_client import SupervisedClient


class Routes:
    """Topic to inbox; ``connection`` gives the client connected now, if any."""

    def __init__(self, connection: Callable[[], SupervisedClient | None]) -> None:
        self._inboxes: dict[str, Inbox] = {}
        self._connection = connection

    def add(self, topic: str, inbox: Inbox) -> Callable[[], None]:
        """Deliver what arrives on ``topic`` (exact, no wildcards) into ``inbox``; returns
        a handle that removes this route (and no later one on the same topic)."""
        self._inboxes[topic] = inbox
        inbox.resync = self._resubscribe
        client = self._connection()
        if client is not None:
            client.subscribe(Subscription(topic, qos=1))

        def remove() -> None:
            if self._inboxes.get(topic) is inbox:
                self.remove(topic)

        return remove

    def remove(self, topic: str) -> None:
        """Stop delivering ``topic``; nothing if it is not routed."""
        client = self._connection()
        if self._inboxes.pop(topic, None) is not None and client is not None:
            client.unsubscribe(topic)

    def _resubscribe(self, topics: set[str]) -> None:
        """Subscribe ``topics`` again (those still routed), for their retained messages."""
        client = self._connection()
        routed = sorted(topic for topic in topics if topic in self._inboxes)
        if client is not None and routed:
            client.subscribe([Subscription(topic, qos=1) for topic in routed])

    def subscribe(self, client: SupervisedClient) -> None:
        """Subscribe every route on a new connection."""
        if self._inboxes:
            client.subscribe([Subscription(topic, qos=1) for topic in self._inboxes])

    def deliver(
        self, client: SupervisedClient, topic: str, payload: bytes, qos: int, properties: object
    ) -> int:
        """gmqtt's ``on_message``: into the topic's inbox, if it is still routed."""
        inbox = self._inboxes.get(topic)
        if inbox is not None:
            inbox.offer(topic, payload)
        return 0  # PUBACK "success": the inbox decides what to keep, not the broker
