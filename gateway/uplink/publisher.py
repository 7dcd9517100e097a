"""What leaves the queue on a connection: within its in-flight window, at the paced rate.

The window is how many QoS 1 publishes may await their PUBACK at once: the configured
``max_in_flight``, and in MQTT 5 no more than the broker's receive maximum allows (a broker
may disconnect a client that exceeds it), less the packet ids subscriptions need. The token
bucket, when ``max_publish_rate`` is set, keeps a backlog drain under a broker's per-client
rate cap. A message leaves the queue on its PUBACK (QoS 0: once written); one still unacked
when the connection ends is rewound into the queue by the supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.models import MqttConfig
from gateway.uplink.mqtt_client import AckTracker, SupervisedClient
from gateway.uplink.queue import Message, MessageQueue
from gateway.uplink.ratelimit import TokenBucket

# gmqtt draws the packet ids of PUBLISH, SUBSCRIBE and UNSUBSCRIBE from one pool of the
# broker's receive maximum less one; publishes leave this many for subscriptions, which
# a full window would otherwise fail, taking the connection down.
CONTROL_IDS = 2


@dataclass(frozen=True)
class Flow:
    """How a connection publishes: its window, and the message expiry it sets (MQTT 5)."""

    window: int
    expiry_s: int | None

    @classmethod
    def of(cls, config: MqttConfig, protocol: str, receive_maximum: int) -> Flow:
        """The flow for a connection in ``protocol`` to a broker with ``receive_maximum``;
        3.1.1 has neither a receive maximum nor message expiry."""
        if protocol != "5":
            return cls(config.max_in_flight, None)
        window = max(1, min(config.max_in_flight, receive_maximum - 1 - CONTROL_IDS))
        return cls(window, config.message_expiry_s)


def bucket_for(config: MqttConfig) -> TokenBucket | None:
    """The pace the settings ask for, if any."""
    return TokenBucket(config.max_publish_rate) if config.max_publish_rate else None


async def publish(
    queue: MessageQueue,
    client: SupervisedClient,
    acks: AckTracker,
    sent: dict[int, Message],
    flow: Flow,
    bucket: TokenBucket | None,
) -> None:
    """Publish the queue's messages for as long as the connection lasts, recording each
    QoS 1 message in ``sent`` by its packet id until its PUBACK."""
    extra = {"message_expiry_interval": flow.expiry_s} if flow.expiry_s else {}
    while True:
        message = await queue.take()
        while acks.pending >= flow.window:
            acks.changed.clear()
            await acks.changed.wait()
        if bucket is not None:
            await bucket.acquire()
        client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain,
                       **extra)
        if message.qos:
            sent[acks.last_mid] = message
        else:
            queue.ack(message)  # QoS 0 leaves the queue once written
