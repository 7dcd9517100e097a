"""How the daemon is doing, in the three forms it is asked for: systemd's one-line
``STATUS=``, the heartbeat published every ``heartbeat.interval_s`` and the figures of the
SIGUSR1 report. Read-only: it owns nothing but the time the daemon started, and follows the
uplink's link changes for the tasks that act on them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

from gateway import __version__, wire
from gateway.daemon.firmware_host import FirmwareHost
from gateway.daemon.reconfigure import Reconfigurer
from gateway.pipeline.alarms import AlarmBook
from gateway.sampling.health import SensorHealth, State
from gateway.sampling.running import RunningSensors
from gateway.service import heartbeat
from gateway.uplink.inbox import Inbox
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import Link, Uplink


class LinkWatch:
    """The uplink's ``on_link`` as something a task waits on: the latest change."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._link: Link | None = None

    def changed(self, link: Link) -> None:
        self._link = link
        self._changed.set()

    async def next(self) -> Link:
        while self._link is None or not self._changed.is_set():
            await self._changed.wait()
        self._changed.clear()
        return self._link


class Status:
    def __init__(self, queue: MessageQueue, uplink: Uplink, inbox: Inbox,
                 health: Mapping[str, SensorHealth], sensors: RunningSensors,
                 firmware: FirmwareHost, reconfigurer: Reconfigurer, alarms: AlarmBook) -> None:
        self._started = time.monotonic()
        self._queue = queue
        self._uplink = uplink
        self._inbox = inbox
        self._health = health
        self._sensors = sensors
        self._firmware = firmware
        self._reconfigurer = reconfigurer
        self._alarms = alarms

    def line(self) -> str:
        now = time.time()
        states = [h.state(now) for h in self._health.values()]
        ok = sum(1 for s in states if s is State.OK)
        link = self._uplink.link.describe()
        return f"{link}; sensors {ok}/{len(states)} ok; queue {self._queue.depth}"

    def send_heartbeat(self) -> None:
        remote = self._reconfigurer
        body = heartbeat.payload(
            self._started,
            self._queue.stats(),
            self._uplink.stats(),
            self._health,
            config_version=remote.versions(),
            config_rejected=remote.junk.counts,
            alarms=self._alarms.active(),
            firmware=heartbeat.FirmwareInfo(__version__, self._firmware.running_slot,
                                            self._firmware.channel),
        )
        config = remote.config
        topic = wire.heartbeat_topic(config.mqtt.topic_prefix, config.device_id)
        self._uplink.publish_live(topic, json.dumps(body, separators=(",", ":")).encode())

    def figures(self) -> dict[str, Any]:
        return {
            "status": self.line(),
            "queue": dataclasses.asdict(self._queue.stats()),
            "uplink": dataclasses.asdict(self._uplink.stats()),
            "inbox": {"depth": len(self._inbox), "dropped": self._inbox.dropped},
            "config_rejected": dict(self._reconfigurer.junk.counts),
            "firmware": self._firmware.figures(),
            "pipelines": {p.sensor: dataclasses.asdict(p.stats())
                          for p in self._sensors.pipelines()},
            "sensors": {
                name: {**dataclasses.asdict(h), "state": h.state(time.time()).value}
                for name, h in self._health.items()
            },
        }
