"""Replayed manifests and failed attempts: the firmware task in process, with a fake host and
installer, a real HTTP server for the bundle and the record on disk, so a restart is a new
updater on the same state directory. Manifests carry chosen ``issued_at`` times, signed by
the tests' independent signer; the decisions themselves are asserted pure first."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_kit import FileServer
from nacl.signing import SigningKey
from packaging.version import Version
from releases import sha256
from signing import envelope, public_hex
from task_kit import Host, Message, until

from gateway.firmware import manifest, state, updater
from gateway.firmware.download import Limits
from gateway.firmware.failure import Backoff, Failure
from gateway.firmware.state import Release, Seen
from gateway.trust.keys import Keyring
from gateway.wire import FirmwareState

CHANNEL = "stable"
RUNNING = "0.3.14"
T0 = 1_750_000_000.0
DAY = 86_400.0
KEY = SigningKey.generate()
KEYRING = Keyring.load([public_hex(KEY)])
AN_HOUR = Backoff(3600, 3600)


def signed(version: str, issued_at: float, *, url: str = "http://127.0.0.1:9/b.tar.gz",
           data: bytes = b"bundle", percent: float = 100, halt: bool = False) -> bytes:
    body: dict[str, Any] = {"kind": "firmware", "channel": CHANNEL, "version": version,
                            "url": url, "sha256": sha256(data), "size": len(data),
                            "rollout": {"percent": percent}, "halt": halt,
                            "issued_at": issued_at, "expires_at": issued_at + 30 * DAY}
    return envelope(KEY, json.dumps(body).encode())


# -- the decisions ---------------------------------------------------------------------


def test_a_manifest_issued_before_the_newest_accepted_one_is_a_replay() -> None:
    device = manifest.Device("dev-1", CHANNEL, Version(RUNNING),
                             seen=Seen(T0 + 100, "0.3.16"))

    def decide(payload: bytes, on: manifest.Device = device) -> manifest.Decision:
        return manifest.decide(payload, KEYRING, on, T0 + 200, 8192)

    assert decide(signed("0.3.15", T0 + 50)) is None
    assert decide(signed("0.3.17", T0 + 99.999)) is None
    # The newest itself again (a reconnect), and anything newer, are decided as usual.
    again = decide(signed("0.3.16", T0 + 100))
    assert isinstance(again, manifest.Act) and again.seen == Seen(T0 + 100, "0.3.16")
    assert decide(signed("0.3.15", T0 + 101, halt=True)) == manifest.Halt(
        "0.3.15", Seen(T0 + 101, "0.3.15", halted=True))
    # The running release, newer issued: nothing to do, the manifest remembered all the same.
    assert decide(signed(RUNNING, T0 + 150)) == manifest.Known(Seen(T0 + 150, RUNNING))
    # A refusal is not a replay, nor is anything on a device that accepted nothing yet.
    assert decide(signed("0.3.15", T0 + 100, percent=0)) == manifest.NotEligible(
        "0.3.15", Seen(T0 + 100, "0.3.15"))
    fresh = manifest.Device("dev-1", CHANNEL, Version(RUNNING))
    assert isinstance(decide(signed("0.3.15", T0), fresh), manifest.Act)


def test_a_halt_holds_until_a_newer_manifest_lifts_it() -> None:
    halted = manifest.Device("dev-1", CHANNEL, Version(RUNNING),
                             seen=Seen(T0 + 100, "0.3.16", halted=True))

    def decide(payload: bytes) -> manifest.Decision:
        return manifest.decide(payload, KEYRING, halted, T0 + 200, 8192)

    # The pre-halt manifest, and one signed with the halt's very issued_at: replays.
    assert decide(signed("0.3.16", T0 + 10)) is None
    assert decide(signed("0.3.16", T0 + 100)) is None
    assert decide(signed("0.3.16", T0 + 100, halt=True)) == manifest.Halt(
        "0.3.16", Seen(T0 + 100, "0.3.16", halted=True))
    lifted = decide(signed("0.3.16", T0 + 101))
    assert isinstance(lifted, manifest.Act) and not lifted.seen.halted


# -- the updater in process ------------------------------------------------------------


@dataclass
class Installer:
    """Fails with each of ``failures`` in turn, then installs (nothing)."""

    failures: list[Failure] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)

    async def install(self, release: Release, archive: Path, slot: str) -> None:
        self.calls.append(time.monotonic())
        if self.failures:
            raise self.failures.pop(0)

    async def discard(self, slot: str) -> None:
        pass


@dataclass
class Device:
    """One start of the firmware task; ``restarted`` is the next one on the same disk."""

    state_dir: Path
    installer: Installer
    backoff: Backoff
    host: Host = field(default_factory=Host)

    def __post_init__(self) -> None:
        settings = updater.Settings("dev-1", "gw", CHANNEL, 5, 2, 0.05, Limits(), 0)
        self.topic = settings.manifest_topic
        self.updater = updater.Updater(
            self.state_dir, settings, KEYRING, updater.Running(RUNNING, None, launched=True),
            self.host, self.installer, clock=lambda: T0 + DAY, backoff=self.backoff)

    async def send(self, payload: bytes) -> None:
        await self.updater.handle(Message(self.topic, payload))

    def record(self) -> state.Record:
        record = state.load(self.state_dir)
        assert record is not None
        return record

    def restarted(self) -> Device:
        return Device(self.state_dir, self.installer, self.backoff)


@asynccontextmanager
async def running(device: Device) -> AsyncIterator[Device]:
    """The task started (its record reported), stopped at the end as the daemon stops it."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(device.updater.run(inbox.get))
    await until(lambda: device.host.reports, "the report at start")
    try:
        yield device
    finally:
        task.cancel()
        await asyncio.wait([task])


def working() -> bool:
    """Whether a download or install is under way (the updater names its job's task)."""
    return any(t.get_name() == "firmware-update" for t in asyncio.all_tasks())


def device_in(tmp_path: Path, installer: Installer | None = None,
              backoff: Backoff = AN_HOUR) -> Device:
    return Device(tmp_path, installer or Installer(), backoff)


def test_a_replayed_pre_halt_manifest_starts_nothing_also_after_a_restart(
        tmp_path: Path) -> None:
    server = FileServer()
    data = os.urandom(2_000_000)
    url = server.add("paced.tar.gz", data, rate=200_000)
    pre_halt = signed("0.3.16", T0, url=url, data=data)

    async def scenario() -> None:
        async with running(device_in(tmp_path)) as device:
            await device.send(pre_halt)
            await until(lambda: device.host.reports[-1]["progress"], "download progress")
            await device.send(signed("0.3.16", T0 + 60, url=url, data=data, halt=True))
            assert device.host.reports[-1] | {"ts": 0} == {
                "version": "0.3.16", "state": "idle", "reason": "halted", "progress": None,
                "ts": 0}
            said = len(device.host.reports)
            await device.send(pre_halt)
            assert not working()
            assert len(device.host.reports) == said
        assert device.record().seen == {CHANNEL: Seen(T0 + 60, "0.3.16", halted=True)}

        async with running(device.restarted()) as again:
            assert [r["state"] for r in again.host.reports] == ["idle"]  # the start's report
            await again.send(pre_halt)
            await again.send(signed("0.3.16", T0 + 60, url=url, data=data, halt=True))
            assert not working()
            assert len(again.host.reports) == 1
            # Only a newer manifest lifts the halt.
            await again.send(signed("0.3.16", T0 + 120, url=url, data=data))
            assert working()
            await until(lambda: again.host.reports[-1]["progress"], "the download again")

    try:
        asyncio.run(scenario())
        assert len(server.requests_for("paced.tar.gz")) == 2
    finally:
        server.close()


def test_an_older_release_after_a_newer_one_starts_nothing_also_after_a_restart(
        tmp_path: Path) -> None:
    server = FileServer()
    data = os.urandom(10_000)
    url = server.add("older.tar.gz", data)
    older = signed("0.3.15", T0, url=url, data=data)

    async def scenario() -> None:
        async with running(device_in(tmp_path)) as device:
            await device.send(signed("0.3.16", T0 + 60, url=url, data=data, percent=0))
            assert device.host.reports[-1]["state"] == "not_eligible"
            said = len(device.host.reports)
            await device.send(older)
            assert not working()
            assert len(device.host.reports) == said
        async with running(device.restarted()) as again:
            await again.send(older)
            assert not working()
            assert [r["state"] for r in again.host.reports] == ["not_eligible"]

    try:
        asyncio.run(scenario())
        assert server.requests_for("older.tar.gz") == []
    finally:
        server.close()


def test_a_transient_failure_is_tried_again_after_a_growing_backoff(tmp_path: Path) -> None:
    server = FileServer()
    data = os.urandom(10_000)
    url = server.add("retried.tar.gz", data)
    killed = Failure("the installer was killed by SIGKILL", permanent=False)
    installer = Installer([killed, killed])

    async def scenario() -> None:
        device = device_in(tmp_path, installer, Backoff(0.2, 0.4))
        async with running(device):
            await device.send(signed("0.3.16", T0, url=url, data=data))
            await until(lambda: device.host.restarts, "the activation", within=30)
        failed = [r for r in device.host.reports if r["state"] == "failed"]
        assert [r["reason"] for r in failed] == [killed.reason] * 2
        record = device.record()
        assert (record.state, record.refused) == (FirmwareState.AWAITING_HEALTH, None)

    try:
        asyncio.run(scenario())
    finally:
        server.close()
    first, second, third = installer.calls
    assert second - first >= 0.2 and third - second >= 0.4
    assert len(server.requests_for("retried.tar.gz")) == 3


def test_the_same_manifest_waits_for_the_retry_a_newer_one_or_a_restart_does_not(
        tmp_path: Path) -> None:
    server = FileServer()
    data = os.urandom(10_000)
    url = server.add("waiting.tar.gz", data)
    full = Failure("not enough space: need 300 MiB, have 120 MiB", permanent=False)
    installer = Installer([full, full])
    manifest_ = signed("0.3.16", T0, url=url, data=data)

    async def scenario() -> None:
        device = device_in(tmp_path, installer)  # an hour's backoff
        async with running(device):
            await device.send(manifest_)
            await until(lambda: device.host.reports[-1]["state"] == "failed", "the failure")
            assert device.host.reports[-1]["reason"] == full.reason
            await device.send(manifest_)  # a reconnect delivers it again
            assert not working()
            await device.send(signed("0.3.16", T0 + 1, url=url, data=data))
            assert working()
            await until(lambda: len(installer.calls) == 2, "the second try")
            await until(lambda: device.host.reports[-1]["state"] == "failed", "the failure")
        assert device.record().refused is None
        async with running(device.restarted()) as again:
            await again.send(signed("0.3.16", T0 + 1, url=url, data=data))
            await until(lambda: again.host.restarts, "the activation")
        assert len(installer.calls) == 3

    try:
        asyncio.run(scenario())
    finally:
        server.close()


def test_a_permanent_failure_refuses_the_version_for_good(tmp_path: Path) -> None:
    server = FileServer()
    data = os.urandom(10_000)
    url = server.add("broken.tar.gz", data)
    broken = Failure("release does not import: RuntimeError: boom", permanent=True)
    installer = Installer([broken])
    manifest_ = signed("0.3.16", T0, url=url, data=data)

    async def scenario() -> None:
        device = device_in(tmp_path, installer, Backoff(0.01, 0.01))
        async with running(device):
            await device.send(manifest_)
            await until(lambda: device.host.reports[-1]["state"] == "failed", "the failure")
            said = len(device.host.reports)
            await device.send(signed("0.3.16", T0 + 1, url=url, data=data))
            assert not working()
            assert len(device.host.reports) == said
        assert (device.record().refused, device.record().reason) == ("0.3.16", broken.reason)

    try:
        asyncio.run(scenario())
    finally:
        server.close()
    assert len(installer.calls) == 1
