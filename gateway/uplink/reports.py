"""Retained state reports: the latest value per topic, delivered until the broker has it.

Reports (the config state, Home Assistant discovery, firmware state) say what is true now,
so only the latest per topic counts: a report that changes while an earlier one is in
flight replaces it rather than queueing behind it, and a fast-changing state costs one
message in flight, not one per change. A report not acknowledged when its connection ends
is sent again on the next. Reports share the connection's in-flight window with the queue
(a broker may disconnect a client that exceeds its receive maximum, and gmqtt fails a
publish that finds no packet id free), and take its free slots first.
"""

from __future__ import annotations

from gateway.uplink.mqtt_client import AckTracker, SupervisedClient


class RetainedReports:
    """The reports not yet acknowledged, and those of the current connection in flight."""

    def __init__(self) -> None:
        self._latest: dict[str, bytes] = {}
        # By packet id; at most one per topic.
        self._in_flight: dict[int, tuple[str, bytes]] = {}

    @property
    def waiting(self) -> bool:
        """Whether any report is not yet acknowledged."""
        return bool(self._latest)

    def put(self, topic: str, payload: bytes) -> None:
        """Make ``payload`` the report to deliver on ``topic``."""
        self._latest[topic] = payload

    def connected(self) -> None:
        """A new connection: what was in flight on the last one goes again."""
        self._in_flight = {}

    def send(self, client: SupervisedClient, acks: AckTracker, window: int) -> None:
        """Publish waiting reports (QoS 1, retained) while the window has room."""
        busy = {topic for topic, _ in self._in_flight.values()}
        for topic, payload in self._latest.items():
            if acks.pending >= window:
                return  # the rest go as acknowledgements free the window
            if topic not in busy:
                client.publish(topic, payload, qos=1, retain=True)
                self._in_flight[acks.last_mid] = (topic, payload)

    def acked(self, mid: int) -> bool:
        """The broker acknowledged packet ``mid``; False if it was not a report."""
        sent = self._in_flight.pop(mid, None)
        if sent is None:
            return False
        topic, payload = sent
        if self._latest.get(topic) is payload:
            del self._latest[topic]
        # Otherwise it changed while in flight: the next ``send`` delivers the latest.
        return True
