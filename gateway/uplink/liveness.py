"""Noticing a half-open connection: a broker gone silent while the socket looks alive.

A cut cable or a NAT that forgot us gives no error: writes succeed into the void until TCP
gives up, minutes later. So the connection watches the broker's traffic: after half a
keepalive of silence it pings, and after one and a half keepalives without an answer the
connection is dropped, so a healthy broker always has a full keepalive to answer.
"""

from __future__ import annotations

import asyncio

import structlog

from gateway.uplink.mqtt_client import SupervisedClient

log = structlog.get_logger(__name__)

DEAD_AFTER_KEEPALIVES = 1.5
PING_AFTER_KEEPALIVES = 0.5


async def watch(client: SupervisedClient, lost: asyncio.Event, keepalive_s: int) -> None:
    """Ping a silent broker, and end the connection (set ``lost``) when it stays silent
    for 1.5 keepalives."""
    while True:
        await asyncio.sleep(keepalive_s / 4)
        silence = client.inbound_silence()
        if silence >= DEAD_AFTER_KEEPALIVES * keepalive_s:
            log.warning("uplink.broker_silent", silence_s=round(silence, 1))
            client.abort()
            lost.set()
            return
        if silence >= PING_AFTER_KEEPALIVES * keepalive_s:
            client.ping()
