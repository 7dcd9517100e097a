"""The MQTT uplink: one supervised gmqtt connection at a time.

The supervisor connects to the configured brokers in turn, moving on to the next one at
once when a connection is lost and backing off only after a full cycle through the list has
failed (``failover`` decides, from the attempts' history). Each connection
owns a TaskGroup (publisher, liveness watch); when the connection is lost, that group is
cancelled and awaited, the socket is closed, and every unacknowledged message goes back
to the queue, before the next attempt. So nothing of one connection survives into the
next, and the queue stays the single source of truth for what the broker has not got.

What outlives connections has a holder of its own beside this loop: the routes of
subscribed topics (``routes``), the retained reports (``reports``), the link state shown to
the owner (``link``), the version each broker took (``protocol``) and the credentials built
for the settings (``tls``). An attempt itself is ``connect``; a connection's work is
``publisher`` and ``liveness``. This module runs the connections, and drains at the end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from gateway import wire
from gateway.config.mqtt import BrokerUrl, MqttConfig
from gateway.uplink import liveness, publisher, status, tls
from gateway.uplink.connect import Dial, close, describe, packet_limit
from gateway.uplink.failover import Rotation
from gateway.uplink.inbox import Inbox
from gateway.uplink.link import Link, LinkHolder, LinkState, UplinkStats
from gateway.uplink.mqtt_client import AckTracker, SupervisedClient
from gateway.uplink.protocol import ProtocolMemory
from gateway.uplink.queue import Message, MessageQueue
from gateway.uplink.reports import RetainedReports
from gateway.uplink.routes import Routes
from gateway.uplink.status import Identity

# The uplink's public face: its owner needs nothing from the modules behind it.
__all__ = ["Identity", "Link", "LinkState", "Uplink", "UplinkStats"]

log = structlog.get_logger(__name__)


class Uplink:
    """Keeps one connection to the configured brokers, publishes the queue through it, and
    carries the device's subscriptions, retained reports and status across reconnects."""

    def __init__(
        self,
        config: MqttConfig,
        identity: Identity,
        queue: MessageQueue,
        on_link: Callable[[Link], None] | None = None,
    ) -> None:
        """``on_link`` is called on the event loop at every change of ``link``; it must be
        quick (an exception from it is logged, never raised into the uplink)."""
        self._config = config
        self._identity = identity
        self._queue = queue
        self._client: SupervisedClient | None = None
        self._broker: BrokerUrl | None = None
        self._closing = False
        self._bucket = publisher.bucket_for(config)
        self._protocols = ProtocolMemory()
        # Built for the settings they name (``tls.load``), in a thread, once per settings.
        self._credentials: tuple[MqttConfig, tls.Credentials] | None = None
        # The advertised Maximum Packet Size (MQTT 5), if ``limit_incoming`` set one.
        self._max_packet_bytes: int | None = None
        self.reconnects = 0
        self.last_error: str | None = None
        self._routes = Routes(lambda: self._client)
        self._reports = RetainedReports()
        self._acks: AckTracker | None = None
        # Unacknowledged QoS 1 publishes the current connection allows at once.
        self._window = 1
        # The Maximum Packet Size of the connection made or being made (MQTT 5 only).
        self._advertised: int | None = None
        # The current connection's "lost" event, set to end it on purpose.
        self._lost: asyncio.Event | None = None
        self._reconfigured = asyncio.Event()
        # Set on CONNACK, cleared when that connection ends or the settings change.
        self.up = asyncio.Event()
        self._link = LinkHolder(str(config.brokers[0]), on_link)
        # The run loop's place in the broker list; the session notes its CONNACK in it.
        self._rotation: Rotation

    @property
    def link(self) -> Link:
        """Where the uplink stands now."""
        return self._link.current

    @property
    def connected(self) -> bool:
        """Whether a connection is up (CONNACK received, not yet lost)."""
        return self._client is not None

    @property
    def _status_topic(self) -> str:
        return wire.status_topic(self._config.topic_prefix, self._identity.device_id)

    def stats(self) -> UplinkStats:
        """The figures the heartbeat reports."""
        broker = str(self._broker) if self._broker and self.connected else None
        return UplinkStats(self.connected, broker, self.reconnects, self.last_error)

    def reconfigure(self, config: MqttConfig) -> None:
        """New broker settings: the connection ends cleanly and the next one, made at once
        without backoff, uses them. The queue, the subscriptions and the retained reports
        carry over."""
        self._config = config
        self._protocols.forget()
        self._bucket = publisher.bucket_for(config)
        self._reconnect_now()

    def limit_incoming(self, max_payload_bytes: int) -> None:
        """The largest payload any route takes: in MQTT 5 the broker is told (Maximum Packet
        Size, with room for the topic and headers) and drops larger messages before sending
        them. A lower limit takes effect at the next connect; a higher one reconnects now,
        so that nothing the routes now take is dropped meanwhile."""
        self._max_packet_bytes = packet_limit(max_payload_bytes)
        if self._advertised is not None and self._max_packet_bytes > self._advertised:
            log.info("uplink.packet_limit_raised", max_packet_bytes=self._max_packet_bytes)
            self._reconnect_now()

    def _reconnect_now(self) -> None:
        self.up.clear()
        self._reconfigured.set()
        if self._lost is not None:
            self._lost.set()

    async def run(self) -> None:
        """Keep a connection up until cancelled or shut down."""
        brokers = self._config.brokers
        self._rotation = Rotation(len(brokers))
        while True:
            self._reconfigured.clear()
            broker = brokers[self._rotation.turn]
            self._link.set(LinkState.CONNECTING, str(broker))
            try:
                await self._session(broker)
                error = "connection closed"
            except Exception as exc:  # whatever ended this connection, the next one retries
                error = describe(exc)
            self.last_error = error
            log.warning("uplink.disconnected", broker=str(broker), error=error)
            if self._closing:
                return
            self._link.set(LinkState.UNREACHABLE, str(broker), error)
            self.reconnects += 1
            if not self._reconfigured.is_set():
                self._rotation, delay = self._rotation.ended(
                    time.monotonic(), self._config.backoff, random.uniform)
                log.info("uplink.next_broker", broker=str(brokers[self._rotation.turn]),
                         delay_s=round(delay, 3))  # fmt: skip
                try:
                    async with asyncio.timeout(delay):
                        await self._reconfigured.wait()
                except TimeoutError:
                    continue
            # New settings: try them now.
            self._rotation = self._rotation.restarted(brokers, self._config.brokers)
            brokers = self._config.brokers

    async def _credentials_for(self, config: MqttConfig) -> tls.Credentials:
        """The settings' credentials, built in a thread the first time they are asked for
        (and again after a failure: the file may have been fixed)."""
        if self._credentials is None or self._credentials[0] is not config:
            try:
                built = await asyncio.to_thread(tls.load, config)
            except tls.CredentialsError as exc:
                log.error("uplink.credentials_invalid", error=str(exc))
                raise
            self._credentials = (config, built)
        return self._credentials[1]

    async def _session(self, broker: BrokerUrl) -> None:
        sent: dict[int, Message] = {}

        def on_ack(mid: int) -> None:
            message = sent.pop(mid, None)
            if message is not None:
                self._queue.ack(message)
            else:
                self._reports.acked(mid)
            if self._reports.waiting:
                self._send_reports()  # a report may be waiting for this free slot

        acks = AckTracker(on_ack)
        client: SupervisedClient | None = None
        config = self._config
        try:
            credentials = await self._credentials_for(config)
            dial = Dial(config, config.client_id or self._identity.device_id,
                        self._status_topic, credentials, self._max_packet_bytes,
                        self._routes.deliver, acks)
            self._advertised = dial.max_packet_bytes
            (client, lost), protocol = await self._protocols.negotiate(
                str(broker), config.protocol, lambda version: dial.attempt(broker, version))
            if protocol != "5":
                self._advertised = None  # 3.1.1 cannot say: a reconnect would not help
            self._lost = lost
            self._acks = acks
            self._reports.connected()
            if self._reconfigured.is_set():
                lost.set()  # settings changed while connecting: this connection is stale
            flow = publisher.Flow.of(config, protocol, client.receive_maximum)
            self._window = flow.window
            log.info("uplink.connected", broker=str(broker), window=flow.window)
            self._publish_online(client)
            self._client, self._broker = client, broker
            self._rotation = self._rotation.connected(time.monotonic())
            self._link.set(LinkState.CONNECTED, str(broker))
            self.up.set()
            self._routes.subscribe(client)
            self._send_reports()
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(publisher.publish(self._queue, client, acks, sent, flow,
                                                     self._bucket)),
                    tg.create_task(liveness.watch(client, lost, config.keepalive_s)),
                ]
                await lost.wait()
                for task in tasks:
                    task.cancel()
        finally:
            self._client = self._lost = None
            self._advertised = None
            self.up.clear()
            if client is not None:
                await close(client)
            self._queue.rewind()

    def _publish_online(self, client: SupervisedClient) -> None:
        identity = self._identity
        client.publish(
            self._status_topic,
            status.online(time.time(), identity.version, identity.boot_id, identity.groups),
            qos=1,
            retain=True,
        )

    def regroup(self, groups: tuple[str, ...]) -> None:
        """The device's groups changed (reload, remote config): the retained online status
        names them, so an operator finds a group's devices by it."""
        self._identity = replace(self._identity, groups=groups)
        if self._client is not None:
            self._publish_online(self._client)

    def route(self, topic: str, inbox: Inbox) -> Callable[[], None]:
        """Deliver what arrives on ``topic`` (an exact topic, no wildcards) into ``inbox``;
        returns a handle that removes this route."""
        return self._routes.add(topic, inbox)

    def unroute(self, topic: str) -> None:
        """Stop delivering ``topic``, whatever inbox it goes to."""
        self._routes.remove(topic)

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained state report (QoS 1); only the latest per topic counts, and
        it is sent again after a reconnect until acknowledged. Reports share the
        connection's in-flight window with the queue (a broker may disconnect a client
        that exceeds its receive maximum) and take its free slots first."""
        self._reports.put(topic, payload)
        self._send_reports()

    def _send_reports(self) -> None:
        if self._client is not None and self._acks is not None:
            self._reports.send(self._client, self._acks, self._window)

    def publish_live(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Publish now, outside the queue, if connected: for live views such as the
        heartbeat, which are worthless once late."""
        client = self._client
        if client is None:
            return False
        client.publish(topic, payload, qos=qos)
        return True

    async def shutdown(self, flush_s: float) -> None:
        """Drain the queue for up to ``flush_s``, then go offline cleanly; ``run`` returns."""
        self._closing = True
        client = self._client
        if client is None:
            return
        try:
            async with asyncio.timeout(flush_s):
                await self._queue.drained()
        except TimeoutError:
            log.warning("uplink.flush_incomplete", left=self._queue.depth)
        if self._client is not client:
            return  # the connection was lost while flushing; the last will stands
        client.publish(
            self._status_topic, status.offline("shutdown", time.time()), qos=1, retain=True
        )
        await close(client)
