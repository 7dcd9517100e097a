"""The MQTT uplink: one supervised gmqtt connection at a time.

The supervisor connects to the configured brokers in turn, with exponential backoff and
full jitter between attempts. Each connection owns a TaskGroup for its publishing
loop; when the connection is lost, that group is cancelled and awaited before the next
attempt, so nothing of an old connection survives into the next one. gmqtt's own
reconnect logic is disabled: it would race the supervisor.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from dataclasses import dataclass
from typing import Any

import structlog
from gmqtt import Client, Message
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.storage import PersistentStorage

from gateway import codec
from gateway.config import BrokerUrl, MqttConfig
from gateway.queue import MessageQueue

log = structlog.get_logger(__name__)

# Below Mosquitto's default receive maximum (20): gmqtt raises OverflowError past it.
IN_FLIGHT_WINDOW = 16
DISCONNECT_TIMEOUT_S = 2.0


class _SupervisedClient(Client):  # type: ignore[misc]
    async def reconnect(self, delay: bool = False) -> None:
        """The supervisor reconnects, never gmqtt itself."""


class _InFlight(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1 messages, with a wake-up on every ack."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = asyncio.Event()

    def __len__(self) -> int:
        return len(self._messages)

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self.acked.set()


@dataclass(frozen=True)
class Identity:
    device_id: str
    version: str
    boot_id: str


class Uplink:
    def __init__(self, config: MqttConfig, identity: Identity, queue: MessageQueue) -> None:
        self._config = config
        self._identity = identity
        self._queue = queue
        self._status_topic = f"{config.topic_prefix}/{identity.device_id}/status"
        self._client: _SupervisedClient | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def run(self) -> None:
        """Keep a connection up until cancelled or shut down."""
        backoff = self._config.backoff
        attempt = 0
        brokers = self._config.brokers
        while True:
            broker = brokers[attempt % len(brokers)]
            started = time.monotonic()
            try:
                await self._session(broker)
            except Exception as exc:  # any failure of one connection is retried on the next
                log.warning("uplink.disconnected", broker=str(broker), error=_describe(exc))
            else:
                log.warning("uplink.disconnected", broker=str(broker), error="connection closed")
            if self._closing:
                return
            # A connection that stayed up for a while was healthy: start backing off anew.
            if time.monotonic() - started > backoff.max_s:
                attempt = 0
            delay = random.uniform(0, min(backoff.max_s, backoff.initial_s * 2**attempt))
            attempt += 1
            self.reconnects += 1
            await asyncio.sleep(delay)

    async def _session(self, broker: BrokerUrl) -> None:
        lost = asyncio.Event()
        in_flight = _InFlight()
        client = _SupervisedClient(
            self._config.client_id or self._identity.device_id,
            will_message=Message(
                self._status_topic, codec.status_offline("connection lost"), qos=1, retain=True
            ),
            persistent_storage=in_flight,
        )
        client.on_disconnect = lambda *_: lost.set()
        try:
            async with asyncio.timeout(self._config.connect_timeout_s):
                await client.connect(
                    broker.host,
                    broker.port,
                    ssl=ssl.create_default_context() if broker.tls else False,
                    keepalive=self._config.keepalive_s,
                    version=MQTTv50,
                )
            log.info("uplink.connected", broker=str(broker))
            client.publish(
                self._status_topic,
                codec.status_online(time.time(), self._identity.version, self._identity.boot_id),
                qos=1,
                retain=True,
            )
            self._client = client
            self._connected.set()
            async with asyncio.TaskGroup() as tg:
                pump = tg.create_task(self._pump(client, in_flight))
                await lost.wait()
                pump.cancel()
        finally:
            self._connected.clear()
            self._client = None
            await _close(client)

    async def _pump(self, client: _SupervisedClient, in_flight: _InFlight) -> None:
        while True:
            message = await self._queue.peek()
            while len(in_flight) >= IN_FLIGHT_WINDOW:
                in_flight.acked.clear()
                await in_flight.acked.wait()
            client.publish(message.topic, message.payload, qos=message.qos)
            self._queue.remove(message)
            # Let acknowledgements and other tasks in between two publishes.
            await asyncio.sleep(0)

    async def shutdown(self, flush_s: float) -> None:
        """Drain the queue for up to ``flush_s``, then go offline cleanly; ``run`` returns."""
        self._closing = True
        if not self.connected:
            return
        try:
            async with asyncio.timeout(flush_s):
                await self._queue.drained()
        except TimeoutError:
            log.warning("uplink.flush_incomplete", left=len(self._queue))
        client = self._client
        if client is None:
            return
        client.publish(
            self._status_topic, codec.status_offline("shutdown", time.time()), qos=1, retain=True
        )
        await _close(client)


async def _close(client: Any) -> None:
    """Disconnect cleanly (no last will) if the connection is still up."""
    if client._connection is None or not client.is_connected:
        return
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await client.disconnect()
    except (OSError, TimeoutError) as exc:
        log.debug("uplink.close_failed", error=_describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
