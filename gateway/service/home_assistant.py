"""Home Assistant's discovery messages, kept published for the running configuration.

They go out as the uplink's retained reports (the latest per topic, sent again after a
reconnect until the broker acknowledges it), and again after every CONNACK and whenever
Home Assistant says ``online`` on ``PREFIX/status`` (its birth message, after it restarts),
as its documentation asks. A configuration change publishes what it changed: an added
sensor's messages, a changed sensor's new ones, and an empty retained message on each
topic that is no longer wanted (Home Assistant then deletes the entity, the broker forgets
the message). Disabling discovery clears every topic the same way.

The topics published are kept in a small state file, so a sensor removed while the
daemon was stopped, or discovery turned off across a restart, is cleared at the next
start rather than left behind as an entity that never updates.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import structlog

from gateway.config.models import Config
from gateway.service import discovery
from gateway.statefile import Offload, read_json, write_atomic
from gateway.uplink.inbox import Inbox
from gateway.uplink.supervisor import Uplink

log = structlog.get_logger(__name__)


BIRTH = b"online"
# Home Assistant asks devices to answer its birth message after a random delay, so a
# restart does not meet every device's discovery messages at once.
BIRTH_JITTER_S = 1.0
# Anyone on the broker may publish on the birth topic: keep little of it.
INBOX_SIZE = 4
INBOX_MAX_BYTES = 64


class HomeAssistant:
    def __init__(self, uplink: Uplink, state_file: Path, version: str,
                 offload: Offload) -> None:
        self._uplink = uplink
        self._path = state_file
        self._version = version
        self._offload = offload
        # The discovery message published on each topic.
        self._published: dict[str, bytes] = {}
        self._birth_topic: str | None = None
        self.inbox = Inbox(INBOX_SIZE, INBOX_MAX_BYTES)

    def load(self) -> None:
        """The topics an earlier run published; ``configure`` clears those not wanted."""
        try:
            data = read_json(self._path)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("home_assistant.state_unreadable", file=str(self._path), error=str(exc))
            return
        topics = data.get("topics") if isinstance(data, dict) else None
        if isinstance(topics, list):
            # Their payloads are unknown: nothing matches them, so all are sent again.
            self._published = {t: b"" for t in topics if isinstance(t, str) and t}

    async def configure(self, config: Config) -> None:
        """Publish what differs between the messages published and those of ``config``."""
        wanted = discovery.messages(config, self._version)
        for topic in self._published.keys() - wanted.keys():
            self._uplink.publish_retained(topic, b"")
        for topic, payload in wanted.items():
            if self._published.get(topic) != payload:
                self._uplink.publish_retained(topic, payload)
        changed = wanted.keys() != self._published.keys()
        if self._published != wanted:
            log.info("home_assistant.discovery", entities=len(wanted),
                     removed=len(self._published.keys() - wanted.keys()))
        self._published = wanted
        self._listen(discovery.birth_topic(config) if config.home_assistant.enabled else None)
        if changed:
            data = json.dumps({"topics": sorted(wanted)}).encode()
            await self._offload(lambda: write_atomic(self._path, data))

    def _listen(self, birth_topic: str | None) -> None:
        if birth_topic == self._birth_topic:
            return
        if self._birth_topic is not None:
            self._uplink.unroute(self._birth_topic)
        if birth_topic is not None:
            self._uplink.route(birth_topic, self.inbox)
        self._birth_topic = birth_topic

    def republish(self) -> None:
        """Every discovery message again: after a CONNACK, or Home Assistant's birth."""
        for topic, payload in self._published.items():
            self._uplink.publish_retained(topic, payload)

    async def run(self) -> None:
        """Answer Home Assistant's birth messages, until cancelled."""
        while True:
            message = await self.inbox.get()
            if message.payload != BIRTH:
                continue
            await asyncio.sleep(random.uniform(0, BIRTH_JITTER_S))
            log.info("home_assistant.birth", entities=len(self._published))
            self.republish()
