"""One connection attempt: a fresh gmqtt client, CONNECT, and CONNACK or the reason why not.

Each attempt makes its own client, so nothing of a failed or lost connection survives into
the next. The client carries the last will (the retained offline status), the session the
settings ask for, the credentials built for them (``tls``), and in MQTT 5 the largest packet
we take: the broker then drops oversized junk on our subscriptions before sending it, rather
than spending the link and our CPU on it.

Waiting for CONNACK watches the connection too: gmqtt would wait for a CONNACK that cannot
come until ``connect_timeout_s`` and lose the reason (a TLS broker refusing our
certificate, say), so a connection lost first fails the attempt at once, saying why.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from gmqtt import Message as MqttMessage

from gateway.config.models import BrokerUrl, MqttConfig
from gateway.uplink import status
from gateway.uplink.mqtt_client import VERSIONS, AckTracker, SupervisedClient, unless_lost
from gateway.uplink.protocol import ClosedBeforeConnack, ProtocolRefused
from gateway.uplink.tls import Credentials

log = structlog.get_logger(__name__)

DISCONNECT_TIMEOUT_S = 2.0
# Beyond the payload, what a PUBLISH the broker sends us also carries: its fixed header (5),
# the topic (2 + its length; ours are well under a kilobyte), the packet id (2) and the
# properties the broker adds (message expiry, subscription id, topic alias).
PACKET_OVERHEAD_BYTES = 1024

OnMessage = Callable[[SupervisedClient, str, bytes, int, object], int]


def packet_limit(max_payload_bytes: int) -> int:
    """The MQTT 5 Maximum Packet Size to advertise for payloads up to ``max_payload_bytes``."""
    return max_payload_bytes + PACKET_OVERHEAD_BYTES


@dataclass(frozen=True)
class Dial:
    """What every attempt of one connection shares: the settings and who we are, the
    credentials built for them, where inbound messages and acknowledgements go."""

    config: MqttConfig
    client_id: str
    status_topic: str
    credentials: Credentials
    max_packet_bytes: int | None
    on_message: OnMessage
    acks: AckTracker

    async def attempt(
        self, broker: BrokerUrl, protocol: str
    ) -> tuple[SupervisedClient, asyncio.Event]:
        """A client connected to ``broker`` in ``protocol``, and the event set when that
        connection is lost; raises why not within ``connect_timeout_s``."""
        lost = asyncio.Event()
        client = self._new_client(protocol)
        client.on_disconnect = lambda *_: lost.set()
        client.on_message = self.on_message
        tls: ssl.SSLContext | bool = False
        if broker.tls:
            # Built for every settings with a TLS broker (``tls.load``).
            assert self.credentials.tls is not None
            tls = self.credentials.tls
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                await _connect(client, broker, lost, tls, self.config.keepalive_s, protocol)
        except BaseException:
            await close(client)
            raise
        return client, lost

    def _new_client(self, protocol: str) -> SupervisedClient:
        config = self.config
        properties = {}
        if protocol == "5":
            clean_session = config.session_expiry_s is None
            if config.session_expiry_s is not None:
                properties["session_expiry_interval"] = config.session_expiry_s
            if self.max_packet_bytes is not None:
                properties["maximum_packet_size"] = self.max_packet_bytes
        else:
            # 3.1.1 has no session expiry: a kept session lasts until a clean connect. Nor a
            # maximum packet size: the inboxes' own bounds are all there is.
            clean_session = not config.session_expiry_s
        client = SupervisedClient(
            self.client_id,
            clean_session=clean_session,
            will_message=MqttMessage(
                self.status_topic, status.offline("connection lost"), qos=1, retain=True
            ),
            persistent_storage=self.acks,
            **properties,
        )
        if config.username is not None:
            client.set_auth_credentials(config.username, self.credentials.password)
        return client


async def _connect(
    client: SupervisedClient,
    broker: BrokerUrl,
    lost: asyncio.Event,
    tls: ssl.SSLContext | bool,
    keepalive: int,
    protocol: str,
) -> None:
    """CONNECT and wait for CONNACK; a connection lost before that fails at once, saying why."""
    version = VERSIONS[protocol]
    connecting = await unless_lost(
        client.connect(broker.host, broker.port, ssl=tls, keepalive=keepalive, version=version),
        lost)
    failure = None if connecting.cancelled() else connecting.exception()
    if client.version_refused:
        raise ProtocolRefused(f"refused (CONNACK {client.connack_code:#04x})") from failure
    if not connecting.cancelled():
        connecting.result()  # connected, or why not
        return
    reason = client.lost_reason()
    if reason is None and not broker.tls:
        raise ClosedBeforeConnack("closed before CONNACK (by the broker)")
    error = f"closed before CONNACK ({describe(reason) if reason else 'by the broker'})"
    if broker.tls:
        error += "; a TLS broker does this when it refuses the client certificate"
        if protocol == "5":
            error += ", or when it speaks only MQTT 3.1.1 (set mqtt.protocol: 3.1.1)"
    raise ConnectionError(error)


async def close(client: SupervisedClient) -> None:
    """Disconnect cleanly (no last will) if possible, else drop the socket."""
    if not (client.has_connection and client.is_connected):
        client.abort()
        return
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await client.disconnect()
    except (OSError, TimeoutError) as exc:
        log.debug("uplink.close_failed", error=describe(exc))
        client.abort()


def describe(exc: BaseException) -> str:
    """An error in one line, as ``last_error`` and the logs show it."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
