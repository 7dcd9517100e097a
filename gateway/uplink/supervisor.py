"""The MQTT uplink: one supervised gmqtt connection at a time.

The supervisor connects to the configured brokers in turn, with exponential backoff and
full jitter between attempts, reset after a connection that stayed up. Each connection
owns a TaskGroup (publisher, liveness watch); when the connection is lost, that group is
cancelled and awaited, the socket is closed, and every unacknowledged message goes back
to the queue, before the next attempt. So nothing of one connection survives into the
next, and the queue stays the single source of truth for what the broker has not got.

Beside the queue, two small things ride on every connection: the topics we subscribe to
(subscribed again after each CONNACK, since a clean session forgets them; each delivers
into the ``Inbox`` of its consumer), and retained state reports (``publish_retained``:
the latest value per topic, published once and again after a reconnect until the broker
acknowledges it). The owner is told of every change of the link's state (connecting, connected,
unreachable) as it happens, so what it shows (systemd's STATUS=) is never stale.

It speaks MQTT 5, or 3.1.1 to a broker that refuses 5 (many deployed brokers and cloud
endpoints speak only 3.1.1), and remembers which version each broker took.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

import structlog
from gmqtt import Message as MqttMessage
from gmqtt import Subscription

from gateway.config.models import BrokerUrl, MqttConfig
from gateway.uplink import status
from gateway.uplink.inbox import Inbox
from gateway.uplink.mqtt_client import VERSIONS, AckTracker, SupervisedClient
from gateway.uplink.queue import Message, MessageQueue
from gateway.uplink.ratelimit import TokenBucket

log = structlog.get_logger(__name__)

DISCONNECT_TIMEOUT_S = 2.0
# The broker must answer within 1.5 keepalives; we ping after half of one of silence,
# so a healthy broker always has a full keepalive to answer.
DEAD_AFTER_KEEPALIVES = 1.5
PING_AFTER_KEEPALIVES = 0.5
# gmqtt draws the packet ids of PUBLISH, SUBSCRIBE and UNSUBSCRIBE from one pool of the
# broker's receive maximum less one; publishes leave this many for subscriptions, which
# a full window would otherwise fail, taking the connection down.
CONTROL_IDS = 2


class ProtocolRefused(ConnectionError):
    """The broker's CONNACK refused the protocol version offered."""


class ClosedBeforeConnack(ConnectionError):
    """The broker closed a plain connection, cleanly, before its CONNACK: what a broker
    does that cannot parse the CONNECT (RabbitMQ 3.10 offered MQTT 5), or that is going down.
    """


@dataclass(frozen=True)
class Identity:
    device_id: str
    version: str
    boot_id: str
    groups: tuple[str, ...] = ()


class LinkState(Enum):
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
        if self.state is LinkState.UNREACHABLE:
            return f"broker unreachable ({self.reason})"
        return f"{self.state.value} to {self.broker}"


@dataclass
class UplinkStats:
    connected: bool
    broker: str | None
    reconnects: int
    last_error: str | None


class Uplink:
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
        self._status_topic = f"{config.topic_prefix}/{identity.device_id}/status"
        self._client: SupervisedClient | None = None
        self._broker: BrokerUrl | None = None
        self._closing = False
        self._bucket = TokenBucket(config.max_publish_rate) if config.max_publish_rate else None
        # The protocol version each broker took, by URL: probed once, not at every reconnect.
        self._protocols: dict[str, str] = {}
        self.reconnects = 0
        self.last_error: str | None = None
        self._routes: dict[str, Inbox] = {}
        # Latest retained payload per topic not yet acknowledged, and those of this
        # connection in flight by packet id (one per topic, so a fast-changing state
        # costs one message in flight, not one per change).
        self._retained: dict[str, bytes] = {}
        self._retained_in_flight: dict[int, tuple[str, bytes]] = {}
        self._acks: AckTracker | None = None
        # Unacknowledged QoS 1 publishes the current connection allows at once.
        self._window = 1
        # The current connection's "lost" event, set to end it on purpose.
        self._lost: asyncio.Event | None = None
        self._reconfigured = asyncio.Event()
        # Set on CONNACK, cleared when that connection ends or the settings change.
        self.up = asyncio.Event()
        self.link = Link(LinkState.CONNECTING, str(config.brokers[0]))
        self._on_link = on_link

    @property
    def connected(self) -> bool:
        return self._client is not None

    def stats(self) -> UplinkStats:
        broker = str(self._broker) if self._broker and self.connected else None
        return UplinkStats(self.connected, broker, self.reconnects, self.last_error)

    def reconfigure(self, config: MqttConfig) -> None:
        """New broker settings: the connection ends cleanly and the next one, made at once
        without backoff, uses them. The queue, the subscriptions and the retained reports
        carry over."""
        self._config = config
        self._protocols.clear()  # new settings may name new brokers or a forced version
        self._status_topic = f"{config.topic_prefix}/{self._identity.device_id}/status"
        self._bucket = TokenBucket(config.max_publish_rate) if config.max_publish_rate else None
        self.up.clear()
        self._reconfigured.set()
        if self._lost is not None:
            self._lost.set()
    def _set_link(self, state: LinkState, broker: BrokerUrl, reason: str | None = None) -> None:
        self.link = Link(state, str(broker), reason)
        if self._on_link is not None:
            try:
                self._on_link(self.link)
            except Exception:  # the owner's display must not take the connection down
                log.exception("uplink.on_link_failed")

    async def run(self) -> None:
        """Keep a connection up until cancelled or shut down."""
        attempt = 0
        turn = 0
        while True:
            self._reconfigured.clear()
            backoff = self._config.backoff
            brokers = self._config.brokers
            broker = brokers[turn % len(brokers)]
            started = time.monotonic()
            self._set_link(LinkState.CONNECTING, broker)
            try:
                await self._session(broker)
                error = "connection closed"
            except Exception as exc:  # whatever ended this connection, the next one retries
                error = _describe(exc)
            self.last_error = error
            log.warning("uplink.disconnected", broker=str(broker), error=error)
            if self._closing:
                return
            self._set_link(LinkState.UNREACHABLE, broker, error)
            # A connection that stayed up a while was healthy: back off from the start.
            if time.monotonic() - started > backoff.max_s:
                attempt = 0
            delay = random.uniform(0, min(backoff.max_s, backoff.initial_s * 2**attempt))
            attempt += 1
            turn += 1
            self.reconnects += 1
            try:
                async with asyncio.timeout(delay):
                    await self._reconfigured.wait()
                attempt = turn = 0  # new settings: try them now, from the first broker
            except TimeoutError:
                pass

    async def _session(self, broker: BrokerUrl) -> None:
        sent: dict[int, Message] = {}

        def on_ack(mid: int) -> None:
            message = sent.pop(mid, None)
            if message is not None:
                self._queue.ack(message)
            elif mid in self._retained_in_flight:
                self._retained_acked(mid)
            if self._retained:
                self._publish_retained()  # a report may be waiting for this free slot

        acks = AckTracker(on_ack)
        client: SupervisedClient | None = None
        try:
            client, lost, protocol = await self._open(broker, acks)
            self._lost = lost
            self._acks, self._retained_in_flight = acks, {}
            if self._reconfigured.is_set():
                lost.set()  # settings changed while connecting: this connection is stale
            window = self._config.max_in_flight
            expiry = None
            if protocol == "5":  # 3.1.1 has neither a receive maximum nor message expiry
                window = max(1, min(window, client.receive_maximum - 1 - CONTROL_IDS))
                expiry = self._config.message_expiry_s
            self._window = window
            log.info("uplink.connected", broker=str(broker), window=window)
            self._publish_online(client)
            self._client, self._broker = client, broker
            self._set_link(LinkState.CONNECTED, broker)
            self.up.set()
            if self._routes:
                client.subscribe([Subscription(topic, qos=1) for topic in self._routes])
            self._publish_retained()
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._publish(client, acks, sent, window, expiry)),
                    tg.create_task(self._watch_liveness(client, lost)),
                ]
                await lost.wait()
                for task in tasks:
                    task.cancel()
        finally:
            self._client = self._lost = None
            self.up.clear()
            if client is not None:
                await _close(client)
            self._queue.rewind()

    async def _open(
        self, broker: BrokerUrl, acks: AckTracker
    ) -> tuple[SupervisedClient, asyncio.Event, str]:
        """Connect with the configured protocol version or, with ``auto``, MQTT 5 and then
        3.1.1; the version a broker takes first is the one it gets from then on."""
        url = str(broker)
        known = self._protocols.get(url)
        if known is not None:
            offers: tuple[str, ...] = (known,)
        elif self._config.protocol == "auto":
            offers = ("5", "3.1.1")
        else:
            offers = (self._config.protocol,)
        failures: list[tuple[str, ConnectionError]] = []
        for protocol in offers:
            try:
                client, lost = await self._attempt(broker, acks, protocol)
            except (ProtocolRefused, ClosedBeforeConnack) as exc:
                failures.append((protocol, exc))
                continue
            if known is None:
                self._protocols[url] = protocol
                refused = {"refused": _failed(failures)} if failures else {}
                log.info("uplink.protocol", broker=url, version=protocol, **refused)
            return client, lost, protocol
        error = _failed(failures)
        if any(isinstance(exc, ProtocolRefused) for _, exc in failures):
            log.error("uplink.protocol_refused", broker=url, error=error)
            raise ProtocolRefused(error)
        raise ClosedBeforeConnack(error)

    async def _attempt(
        self, broker: BrokerUrl, acks: AckTracker, protocol: str
    ) -> tuple[SupervisedClient, asyncio.Event]:
        lost = asyncio.Event()
        client = self._new_client(acks, protocol)
        client.on_disconnect = lambda *_: lost.set()
        client.on_message = self._on_message
        tls = self._tls_context() if broker.tls else False
        try:
            async with asyncio.timeout(self._config.connect_timeout_s):
                await _connect(client, broker, lost, tls, self._config.keepalive_s, protocol)
        except BaseException:
            await _close(client)
            raise
        return client, lost

    def _new_client(self, acks: AckTracker, protocol: str) -> SupervisedClient:
        config = self._config
        properties = {}
        if protocol == "5":
            clean_session = config.session_expiry_s is None
            if config.session_expiry_s is not None:
                properties["session_expiry_interval"] = config.session_expiry_s
        else:
            # 3.1.1 has no session expiry: a kept session lasts until a clean connect.
            clean_session = not config.session_expiry_s
        client = SupervisedClient(
            config.client_id or self._identity.device_id,
            clean_session=clean_session,
            will_message=MqttMessage(
                self._status_topic, status.offline("connection lost"), qos=1, retain=True
            ),
            persistent_storage=acks,
            **properties,
        )
        if config.username is not None:
            password = None
            if config.password_file is not None:
                password = config.password_file.read_text().rstrip("\r\n")
            client.set_auth_credentials(config.username, password)
        return client

    def _tls_context(self) -> ssl.SSLContext:
        tls = self._config.tls
        context = ssl.create_default_context(cafile=tls.ca_file)
        context.check_hostname = tls.verify_hostname
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        return context

    async def _publish(
        self,
        client: SupervisedClient,
        acks: AckTracker,
        sent: dict[int, Message],
        window: int,
        expiry: int | None,
    ) -> None:
        extra = {"message_expiry_interval": expiry} if expiry else {}
        while True:
            message = await self._queue.take()
            while acks.pending >= window:
                acks.changed.clear()
                await acks.changed.wait()
            if self._bucket is not None:
                await self._bucket.acquire()
            client.publish(message.topic, message.payload, qos=message.qos,
                           retain=message.retain, **extra)
            if message.qos:
                sent[acks.last_mid] = message
            else:
                self._queue.ack(message)  # QoS 0 leaves the queue once written

    async def _watch_liveness(self, client: SupervisedClient, lost: asyncio.Event) -> None:
        """Detect a half-open connection (no PINGRESP) within 1.5 keepalives."""
        keepalive = self._config.keepalive_s
        while True:
            await asyncio.sleep(keepalive / 4)
            silence = client.inbound_silence()
            if silence >= DEAD_AFTER_KEEPALIVES * keepalive:
                log.warning("uplink.broker_silent", silence_s=round(silence, 1))
                client.abort()
                lost.set()
                return
            if silence >= PING_AFTER_KEEPALIVES * keepalive:
                client.ping()

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

    def route(self, topic: str, inbox: Inbox) -> None:
        """Deliver what arrives on ``topic`` (an exact topic, no wildcards) into ``inbox``."""
        self._routes[topic] = inbox
        if self._client is not None:
            self._client.subscribe(Subscription(topic, qos=1))

    def unroute(self, topic: str) -> None:
        if self._routes.pop(topic, None) is not None and self._client is not None:
            self._client.unsubscribe(topic)

    def _on_message(
        self, client: SupervisedClient, topic: str, payload: bytes, qos: int, properties: object
    ) -> int:
        inbox = self._routes.get(topic)
        if inbox is not None:
            inbox.offer(topic, payload)
        return 0  # PUBACK "success": the inbox decides what to keep, not the broker

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained state report (QoS 1); only the latest per topic counts, and
        it is sent again after a reconnect until acknowledged. Reports share the
        connection's in-flight window with the queue (a broker may disconnect a client
        that exceeds its receive maximum) and take its free slots first."""
        self._retained[topic] = payload
        self._publish_retained()

    def _publish_retained(self) -> None:
        client, acks = self._client, self._acks
        if client is None or acks is None:
            return
        busy = {topic for topic, _ in self._retained_in_flight.values()}
        for topic, payload in self._retained.items():
            if acks.pending >= self._window:
                return  # the rest go as acks free the window (``on_ack``)
            if topic not in busy:
                client.publish(topic, payload, qos=1, retain=True)
                self._retained_in_flight[acks.last_mid] = (topic, payload)

    def _retained_acked(self, mid: int) -> None:
        topic, payload = self._retained_in_flight.pop(mid)
        if self._retained.get(topic) is payload:
            del self._retained[topic]
        # Otherwise it changed while in flight: ``on_ack`` sends the latest.

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
        await _close(client)


async def _connect(
    client: SupervisedClient,
    broker: BrokerUrl,
    lost: asyncio.Event,
    tls: ssl.SSLContext | bool,
    keepalive: int,
    protocol: str,
) -> None:
    """CONNECT and wait for CONNACK; a connection lost before that fails at once, saying why.

    gmqtt would wait for a CONNACK that cannot come, until ``connect_timeout_s``, and
    the reason (a TLS broker refusing our certificate, say) would be lost.
    """
    version = VERSIONS[protocol]
    connecting = asyncio.ensure_future(
        client.connect(broker.host, broker.port, ssl=tls, keepalive=keepalive, version=version)
    )
    watching = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({connecting, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (connecting, watching):
            task.cancel()
        await asyncio.wait({connecting, watching})
    failure = None if connecting.cancelled() else connecting.exception()
    if client.version_refused:
        raise ProtocolRefused(f"refused (CONNACK {client.connack_code:#04x})") from failure
    if not connecting.cancelled():
        connecting.result()  # connected, or why not
        return
    reason = client.lost_reason()
    if reason is None and not broker.tls:
        raise ClosedBeforeConnack("closed before CONNACK (by the broker)")
    error = f"closed before CONNACK ({_describe(reason) if reason else 'by the broker'})"
    if broker.tls:
        error += "; a TLS broker does this when it refuses the client certificate"
        if protocol == "5":
            error += ", or when it speaks only MQTT 3.1.1 (set mqtt.protocol: 3.1.1)"
    raise ConnectionError(error)


async def _close(client: SupervisedClient) -> None:
    """Disconnect cleanly (no last will) if possible, else drop the socket."""
    if not (client.has_connection and client.is_connected):
        client.abort()
        return
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await client.disconnect()
    except (OSError, TimeoutError) as exc:
        log.debug("uplink.close_failed", error=_describe(exc))
        client.abort()


def _failed(failures: list[tuple[str, ConnectionError]]) -> str:
    return "; ".join(f"MQTT {protocol}: {exc}" for protocol, exc in failures)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
