"""A fleet for ``rollout`` to steer: many devices in one process, each with its own MQTT
connection (and last will) to one broker, taking a release from a loopback HTTP server.

Each device decides on a manifest with the device's own code
(``gateway.firmware.manifest.decide``: the envelope verified
against its trusted keys, the payload parsed, channel, running and refused versions,
expiry, halt, then eligibility by ``gateway.firmware.rollout``), downloads the bundle and
checks its size and sha256, and reports each state on its retained ``P/D/firmware/state``
as docs/PROTOCOL.md section 3.6 has it. What a device does not run here is the install itself: after
``awaiting_health`` it commits, rolls back (``ROLLS_BACK``) or dies without a word
(``SILENT``: the socket dropped, so the broker publishes its last will, and no heartbeat
follows), as the test injects.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import secrets
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from gmqtt import Message
from packaging.version import Version

from gateway.firmware import manifest
from gateway.firmware.manifest import Act, Halt, NotEligible, Refuse, decide
from gateway.firmware.state import Release
from gateway.trust.envelope import DEFAULT_MAX_BYTES
from gateway.trust.keys import Keyring
from gateway.uplink.mqtt_client import SupervisedClient

HEARTBEAT_S = 0.25
STEP_S = 0.02  # between two reported states, so that each is seen on the broker


class Behaviour(enum.Enum):
    GOOD = "good"
    ROLLS_BACK = "rolls back"
    SILENT = "silent"


class BundleServer:
    """One file over HTTP on a loopback port, served from a thread."""

    def __init__(self, body: bytes) -> None:
        self.body = body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bundle.tar.gz"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def fetch(url: str, limit: int) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read(limit + 1))


@dataclass(frozen=True)
class Report:
    version: str
    state: str
    reason: str | None
    at: float  # time.monotonic() when it was published


@dataclass
class Device:
    id: str
    running: Version
    behaviour: Behaviour
    keyring: Keyring
    port: int
    channel: str = "stable"
    prefix: str = "gw"
    reports: list[Report] = field(default_factory=list)
    refused: Version | None = None
    silent: bool = False
    _client: SupervisedClient | None = None
    _inbox: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(16))
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _update: asyncio.Task[None] | None = None
    _installing: bool = False

    def _status(self) -> bytes:
        return json.dumps({"state": "online", "ts": time.time(), "version": str(self.running),
                           "boot_id": secrets.token_hex(4)}).encode()

    async def start(self) -> None:
        will = Message(f"{self.prefix}/{self.id}/status",
                       json.dumps({"state": "offline", "reason": "connection lost"}),
                       qos=1, retain=True)
        client = SupervisedClient(self.id, will_message=will)
        client.on_message = self._on_message
        await client.connect("127.0.0.1", self.port, keepalive=10)
        self._client = client
        client.publish(f"{self.prefix}/{self.id}/status", self._status(), qos=1, retain=True)
        client.subscribe(f"{self.prefix}/firmware/{self.channel}/manifest", qos=1)
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._consume())]

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._update] if self._update else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None and not self.silent:
            await self._client.disconnect()

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int,
                    properties: Any) -> int:
        if not self._inbox.full():
            self._inbox.put_nowait(payload)
        return 0

    def report(self, version: str | None, state: str, reason: str | None = None,
               progress: float | None = None) -> None:
        if self.silent or self._client is None:
            return
        self.reports.append(Report(version or "", state, reason, time.monotonic()))
        body = {"version": version, "state": state,
                "reason": reason, "progress": progress, "ts": time.time()}
        self._client.publish(f"{self.prefix}/{self.id}/firmware/state",
                             json.dumps(body).encode(), qos=1, retain=True)

    async def _beat(self) -> None:
        while not self.silent:
            assert self._client is not None
            self._client.publish(f"{self.prefix}/{self.id}/heartbeat", json.dumps({
                "ts": time.time(), "queue": {"depth": 0}, "config_version": {},
                "firmware": {"version": str(self.running), "slot": None,
                             "channel": self.channel}}).encode(), qos=0)
            await asyncio.sleep(HEARTBEAT_S)

    async def _consume(self) -> None:
        while True:
            self._take(await self._inbox.get())

    def _take(self, data: bytes) -> None:
        me = manifest.Device(self.id, self.channel, self.running, self.refused)
        decision = decide(data, self.keyring, me, time.time(), DEFAULT_MAX_BYTES)
        busy = self._update is not None and not self._update.done()
        if isinstance(decision, Refuse):
            self.report(decision.version, "failed", decision.reason)
        elif isinstance(decision, Halt):
            if busy and not self._installing:
                assert self._update is not None
                self._update.cancel()
                self.report(decision.version, "idle", "halted")
        elif isinstance(decision, NotEligible):
            self.report(decision.version, "not_eligible")
        elif isinstance(decision, Act) and not busy:
            self._update = asyncio.create_task(self._install(decision.release))

    async def _install(self, release: Release) -> None:
        version = release.version
        self.report(version, "downloading", progress=0.0)
        try:
            data = await asyncio.to_thread(fetch, release.url, release.size)
        except OSError as exc:
            self.report(version, "failed", f"download: {exc}")
            return
        self.report(version, "verifying")
        if len(data) != release.size or hashlib.sha256(data).hexdigest() != release.sha256:
            self.refused = Version(version)
            self.report(version, "failed", "sha256 mismatch")
            return
        await asyncio.sleep(STEP_S)
        self._installing = True
        self.report(version, "installing")
        await asyncio.sleep(STEP_S)
        self.report(version, "awaiting_health")
        await asyncio.sleep(STEP_S)
        self._installing = False
        if self.behaviour is Behaviour.SILENT:
            self.silent = True  # bricked: no report, no heartbeat, the will says offline
            assert self._client is not None
            self._client.abort()
        elif self.behaviour is Behaviour.ROLLS_BACK:
            self.refused = Version(version)
            self.report(version, "rolled_back", "health check failed (injected)")
        else:
            self.running = Version(version)
            self.report(version, "committed")
            assert self._client is not None
            self._client.publish(f"{self.prefix}/{self.id}/status", self._status(), qos=1,
                                 retain=True)

    @property
    def started_at(self) -> float | None:
        """When it began to download a release, if it did."""
        return next((r.at for r in self.reports if r.state == "downloading"), None)


class Fleet:
    """``async with Fleet(...)``: every device connected and listening inside."""

    def __init__(self, port: int, keyring: Keyring, running: Version,
                 behaviours: Iterable[tuple[str, Behaviour]]) -> None:
        self.devices = [Device(name, running, behaviour, keyring, port)
                        for name, behaviour in behaviours]

    async def __aenter__(self) -> Fleet:
        started = await asyncio.gather(*(device.start() for device in self.devices),
                                       return_exceptions=True)
        failed = [error for error in started if isinstance(error, BaseException)]
        if failed:
            await self.__aexit__(None, None, None)
            raise failed[0]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await asyncio.gather(*(device.stop() for device in self.devices))
