"""The heartbeat (docs/PROTOCOL.md section 3.4): how this device is doing, every
``interval_s``.

It is a live view, so it goes straight to the connected broker at QoS 0 and is never
queued: a heartbeat that waited out an outage would only describe the past.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.sampling.health import SensorHealth
from gateway.service.diagnostics import rss_bytes
from gateway.uplink.queue import QueueStats
from gateway.uplink.supervisor import UplinkStats


@dataclass(frozen=True)
class FirmwareInfo:
    version: str
    slot: str | None = None
    channel: str | None = None


def payload(
    started: float,
    queue: QueueStats,
    uplink: UplinkStats,
    sensors: Mapping[str, SensorHealth],
    config_version: Mapping[str, int],
    config_rejected: Mapping[str, int],
    firmware: FirmwareInfo,
    alarms: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """``alarms``: how many alarms are raised, per severity."""
    now = time.time()
    return {
        "ts": now,
        "uptime_s": round(time.monotonic() - started, 3),
        "queue": {
            "depth": queue.depth,
            "bytes": queue.bytes,
            "dropped": queue.dropped,
            "spilled": queue.spilled,
            "in_flight": queue.in_flight,
        },
        # How the connection itself has been doing.
        "uplink": {"reconnects": uplink.reconnects, "last_error": uplink.last_error},
        "sensors": {
            name: {
                "state": health.state(now).value,
                "last_ok_ts": health.last_ok_ts,
                "errors": health.errors,
            }
            for name, health in sensors.items()
        },
        "rss_bytes": rss_bytes(),
        "tasks": len(asyncio.all_tasks()),
        "config_version": dict(config_version),
        # Config envelopes refused before their signature verified, per reason: junk is
        # counted here, never reported on config/state.
        "config_rejected": dict(config_rejected),
        "firmware": {"version": firmware.version, "slot": firmware.slot,
                     "channel": firmware.channel},
        "alarms": dict(alarms or {}),
    }


async def beat(interval_s: float, send: Callable[[], None]) -> None:
    """Call ``send`` every ``interval_s``, the first time at once."""
    while True:
        send()
        await asyncio.sleep(interval_s)
