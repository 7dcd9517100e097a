"""A short MQTT session for an operator's command: connect, subscribe and wait for the SUBACK,
publish retained at QoS 1 and wait for the PUBACK, read what arrives, disconnect.

Unlike the device's uplink it never reconnects: a command that loses its broker says so and
ends. It logs in as a device does: a username with the password from a file, TLS verified
against a CA file (or the system's CAs), and a client certificate when the broker wants
one. It uses the uplink's gmqtt seam (``mqtt_client``), where every gmqtt internal we
touch is named, rather than reaching into gmqtt a second time.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from dataclasses import dataclass
from typing import Any, TypeVar

from gmqtt import Subscription
from gmqtt.mqtt.constants import MQTTv50

from gateway.config.operator import BrokerAccess
from gateway.uplink import tls
from gateway.uplink.connect import close
from gateway.uplink.mqtt_client import AckTracker, SupervisedClient, unless_lost

ACK_TIMEOUT_S = 10.0  # for CONNACK, SUBACK and PUBACK alike
KEEPALIVE_S = 30
# What arrives while the command is busy elsewhere; beyond it the newest are dropped (a
# command reads its topics as fast as they come, so only a flood on them gets here).
INBOX_SIZE = 10_000

T = TypeVar("T")

# gmqtt logs its warnings (a refused CONNECT, a lost connection) through ``logging``, whose
# last resort would print them on stderr; the command says what went wrong in a line of its
# own instead.
logging.getLogger("gmqtt").addHandler(logging.NullHandler())


class BrokerError(Exception):
    """The broker could not be reached, refused something, or went away."""


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retained: bool  # delivered from the broker's store at subscription, not published since


def _credentials(broker: BrokerAccess) -> tuple[str | None, ssl.SSLContext | bool]:
    """The password and the TLS context, read and built as the device's uplink does them,
    from regular files only."""
    try:
        password = (None if broker.password_file is None
                    else tls.read_password(broker.password_file, "password file"))
        context = tls.tls_context(broker.tls, "tls ") if broker.url.tls else False
    except tls.CredentialsError as exc:
        raise BrokerError(f"cannot log in: {exc}") from None
    return password, context


class Session:
    """``async with Session(broker) as mqtt``: connected inside, disconnected cleanly (or
    the socket dropped) on every way out."""

    def __init__(self, broker: BrokerAccess) -> None:
        self._broker = broker
        self._url = broker.url
        self._lost = asyncio.Event()
        self._inbox: asyncio.Queue[Received] = asyncio.Queue(INBOX_SIZE)
        self._subscribed: dict[int, asyncio.Future[list[int]]] = {}
        self._published: dict[int, asyncio.Future[None]] = {}
        self._acks = AckTracker(self._on_ack)
        self._client = SupervisedClient(f"edge-gateway-operator-{secrets.token_hex(4)}",
                                        clean_session=True, persistent_storage=self._acks)
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = lambda *_: self._lost.set()

    async def __aenter__(self) -> Session:
        url = self._url
        password, context = _credentials(self._broker)
        if self._broker.username is not None:
            self._client.set_auth_credentials(self._broker.username, password)
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                answered = await self._connect(context)
        except TimeoutError:
            reason = self._client.lost_reason()
            await self._close()
            raise BrokerError(f"no answer from {url} within {ACK_TIMEOUT_S:g} s"
                              + (f" ({reason})" if reason else "")) from None
        except OSError as exc:  # refused, unreachable, TLS failures
            await self._close()
            raise BrokerError(f"cannot connect to {url}: {exc}") from None
        except Exception as exc:  # gmqtt's refusal of the CONNECT (not authorised, say)
            await self._close()
            raise BrokerError(f"{url} refused the connection: {exc}") from None
        if not answered:
            # A TLS broker that wants a client certificate hangs up after the handshake.
            reason = self._client.lost_reason()
            await self._close()
            raise BrokerError(f"{url} closed the connection before answering"
                              + (f" ({reason})" if reason else ""))
        return self

    async def _connect(self, tls: ssl.SSLContext | bool) -> bool:
        """CONNECT and wait for CONNACK: True once answered, False as soon as the broker
        closes the connection instead (rather than at the timeout)."""
        url = self._url
        connecting = await unless_lost(self._client.connect(
            url.host, url.port, ssl=tls, keepalive=KEEPALIVE_S, version=MQTTv50), self._lost)
        if connecting.cancelled():
            return False
        connecting.result()  # connected, or why not
        return True

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        await close(self._client)

    def _on_message(self, client: SupervisedClient, topic: str, payload: bytes, qos: int,
                    properties: dict[str, object]) -> int:
        if not self._inbox.full():
            self._inbox.put_nowait(Received(topic, payload, bool(properties.get("retain"))))
        return 0

    def _on_subscribe(self, client: SupervisedClient, mid: int, granted: list[int],
                      properties: object) -> None:
        future = self._subscribed.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(list(granted))

    def _on_ack(self, mid: int) -> None:
        future = self._published.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def _acknowledged(self, future: asyncio.Future[T], what: str) -> T:
        """``future``'s result, or ``BrokerError`` if the connection ends first."""
        lost = asyncio.ensure_future(self._lost.wait())
        either: set[asyncio.Future[Any]] = {future, lost}
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise BrokerError(f"{self._url} did not acknowledge {what} "
                              f"within {ACK_TIMEOUT_S:g} s") from None
        finally:
            lost.cancel()
        if not future.done():
            raise BrokerError(f"lost the connection to {self._url} ({what})")
        return future.result()

    async def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1; retained messages on them arrive from now on."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        mid = self._client.subscribe([Subscription(topic, qos=1) for topic in topics])
        self._subscribed[mid] = future
        granted = await self._acknowledged(future, "the subscription")
        refused = [topic for topic, qos in zip(topics, granted, strict=False) if qos >= 0x80]
        if refused:
            raise BrokerError(f"{self._url} refused the subscription to {', '.join(refused)}")

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish retained at QoS 1 and wait until the broker has it (PUBACK)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._client.publish(topic, payload, qos=1, retain=True)
        self._published[self._acks.last_mid] = future
        await self._acknowledged(future, f"the message on {topic}")

    async def receive(self) -> Received:
        """The next message; ``BrokerError`` if the connection ends."""
        if self._inbox.empty() and self._lost.is_set():
            raise BrokerError(f"lost the connection to {self._url}")
        got = asyncio.ensure_future(self._inbox.get())
        lost = asyncio.ensure_future(self._lost.wait())
        either: set[asyncio.Future[Any]] = {got, lost}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not got.done():
                got.cancel()
        if got.cancelled():
            raise BrokerError(f"lost the connection to {self._url}")
        return got.result()
