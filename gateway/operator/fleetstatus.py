"""``edge-gateway fleet status``: every device the broker knows of, and per channel how many
run which release in which firmware state.

The retained topics (status, config/state, firmware/state) arrive at once; heartbeats only
within a heartbeat interval (``heartbeat.interval_s``, 60 s by default), so the settle time
decides how many devices show their queue, slot and channel. The summary is plain data:
``--json`` prints it as it is, the table (``fleetview``) draws it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from gateway.config.operator import BrokerAccess
from gateway.operator.fleet import Device, Fleet
from gateway.operator.mqtt import Session

UNKNOWN = "unknown"
UNREPORTED = "unreported"


async def collect(broker: BrokerAccess, prefix: str, settle_s: float) -> Fleet:
    """What arrives on the devices' topics within ``settle_s``; ``BrokerError``."""
    fleet = Fleet(prefix)
    async with Session(broker) as mqtt:
        await mqtt.subscribe(*fleet.topics())
        try:
            async with asyncio.timeout(settle_s):
                while True:
                    fleet.take(await mqtt.receive(), time.time())
        except TimeoutError:
            pass
    return fleet


def _device(device: Device, now: float) -> dict[str, Any]:
    beat, status = device.heartbeat, device.status
    arrived = device.heartbeat_at
    return {
        "online": device.online,
        "status_reason": status.reason if status is not None else None,
        "channel": device.channel,
        "version": device.running,
        "slot": device.slot,
        "last_heartbeat_ts": (beat.ts or device.heartbeat_at) if beat is not None else None,
        "heartbeat_age_s": round(now - arrived, 1) if arrived is not None else None,
        "queue_depth": beat.queue.depth if beat is not None and beat.queue else None,
        "config_version": dict(beat.config_version) if beat is not None else None,
        "config_state": device.config_state.model_dump() if device.config_state else None,
        "firmware_state": device.firmware.model_dump() if device.firmware else None,
    }


def summary(fleet: Fleet, now: float) -> dict[str, Any]:
    """``{"devices": {ID: {...}}, "channels": {CHANNEL: {VERSION: {"devices", "online",
    "states": {STATE: N}}}}}``; the state is the latest firmware report's."""
    devices: dict[str, Any] = {}
    groups: dict[tuple[str, str], list[Device]] = {}
    for device in sorted(fleet.devices.values(), key=lambda d: d.id):
        devices[device.id] = _device(device, now)
        key = (device.channel or UNKNOWN, device.running or UNKNOWN)
        groups.setdefault(key, []).append(device)
    channels: dict[str, dict[str, Any]] = {}
    for (channel, version), members in sorted(groups.items()):
        states = Counter(d.firmware.state if d.firmware else UNREPORTED for d in members)
        channels.setdefault(channel, {})[version] = {
            "devices": len(members),
            "online": sum(d.online is True for d in members),
            "states": dict(sorted(states.items())),
        }
    return {"devices": devices, "channels": channels}
