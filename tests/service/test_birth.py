"""Home Assistant's birth message, in process: ``HomeAssistant`` over a stand-in for the
uplink that records routes and publications. Only ``online`` on this discovery prefix's
``status`` topic makes it publish every entity again; its own last will (``offline``) and
another prefix's birth do not. The end-to-end answer, through Mosquitto and the daemon, is
in ``test_home_assistant.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config.file import parse
from gateway.service import discovery, home_assistant
from gateway.service.home_assistant import HomeAssistant
from gateway.uplink.inbox import Inbox

CONFIG = """\
device_id: pi-1
mqtt:
  brokers: ["mqtt://127.0.0.1:1883"]
sensors:
  - {name: room, driver: sht3x, bus: sim, interval_s: 1}
home_assistant: {enabled: true, discovery_prefix: ha/discovery}
"""


class Uplink:
    def __init__(self) -> None:
        self.routes: dict[str, Inbox] = {}
        self.published: list[str] = []
        self.more = asyncio.Event()

    def route(self, topic: str, inbox: Inbox) -> Callable[[], None]:
        self.routes[topic] = inbox
        return lambda: self.unroute(topic)

    def unroute(self, topic: str) -> None:
        self.routes.pop(topic)

    def publish_retained(self, topic: str, payload: bytes) -> None:
        self.published.append(topic)
        self.more.set()


async def offload(fn: Callable[[], None]) -> None:
    fn()


def test_only_this_prefixs_online_makes_it_publish_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(home_assistant, "BIRTH_JITTER_S", 0.0)  # its answer at the next turn
    config = parse(CONFIG, "gw.yaml")
    entities = sorted(discovery.messages(config, "1.0"))
    uplink = Uplink()

    async def run() -> None:
        ha = HomeAssistant(uplink, tmp_path / "home_assistant.json", "1.0",  # type: ignore[arg-type]
                           offload)
        await ha.configure(config)
        # The one topic it listens to: another prefix's birth never reaches it.
        assert list(uplink.routes) == ["ha/discovery/status"]
        assert sorted(uplink.published) == entities
        uplink.published.clear()
        inbox = uplink.routes["ha/discovery/status"]
        task = asyncio.create_task(ha.run())
        try:
            inbox.offer("ha/discovery/status", b"offline")  # its own last will
            inbox.offer("ha/discovery/status", b"online")
            async with asyncio.timeout(5):
                while len(uplink.published) < len(entities):
                    uplink.more.clear()
                    await uplink.more.wait()
            # Taken in order, each answer one turn after its message: an answer to the
            # will would have come first, and a second one by now.
            for _ in range(10):
                await asyncio.sleep(0)
            assert sorted(uplink.published) == entities
            assert len(inbox) == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
