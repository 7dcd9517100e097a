"""A kill in every state of an update: the next start ends on a working slot and says so
consistently (record, link, report, what runs). In process, on a real disk, the bundle from
a real HTTP server: each start of the device is the launcher's ``prepare`` on the state
directory, then the firmware task of the release in the slot it chose (its host faked, an
installer that makes a slot the launcher can start), and a restart the task asks for is the
next start. A kill is the state directory copied as it is at that instant, what a
``kill -9`` or a power cut leaves (the record written before each step, the bundle as far
as it came, nothing cleaned up), and the next start runs on the copy. Each state is caught
as it is reported: ``downloading`` by a paced server, ``installing`` by an installer at
work, ``verifying`` and ``awaiting_health`` by the task's hold, ``committed`` as it stays.
The real daemon killed with SIGKILL, and started again from its slot, is test_updates.py's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from device_kit import FileServer
from nacl.signing import SigningKey
from releases import manifest
from signing import public_hex
from task_kit import Host, Message, until

from gateway.firmware import launcher, slots, state
from gateway.firmware.download import Limits
from gateway.firmware.state import Release
from gateway.firmware.updater import Running, Settings, Updater
from gateway.trust.keys import Keyring
from gateway.wire import FirmwareState

BASE, GOOD = "1.0", "2.0"
KEY = SigningKey.generate()
KEYRING = Keyring.load([public_hex(KEY)])
SETTINGS = Settings("dev-1", "gw", "stable", 5, 2, 0.05, Limits(), 0)
SIZE = 2_000_000
STEPS = ["downloading", "verifying", "installing", "awaiting_health", "committed"]


@dataclass
class Installs:
    """What the installers of every start did: the slot of each install, in order; with
    ``hang`` the next install goes on until the process is killed."""

    slots: list[str] = field(default_factory=list)
    hang: bool = False


@dataclass
class SlotInstaller:
    """``job.Install``: the slot gets an ``edge-gateway`` the launcher can start and the
    version it runs."""

    state_dir: Path
    installs: Installs

    async def install(self, release: Release, archive: Path, slot: str) -> None:
        self.installs.slots.append(slot)
        command = slots.command_of(self.state_dir, slot)
        command.parent.mkdir(parents=True, exist_ok=True)
        if self.installs.hang:
            self.installs.hang = False
            await asyncio.Event().wait()  # at work, half way, until killed
        command.write_text("#!/bin/sh\n")
        command.chmod(0o755)
        (slots.venv_of(self.state_dir, slot) / "version").write_text(release.version)

    async def discard(self, slot: str) -> None:
        shutil.rmtree(slots.slot_dir(self.state_dir, slot), ignore_errors=True)


@dataclass
class Life:
    """What the starts of one device share: its installs, the launcher's lines and the
    firmware reports."""

    installs: Installs
    said: list[str] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)

    def states(self) -> list[str]:
        """The states reported, repeats in a row taken once."""
        states: list[str] = []
        for report in self.reports:
            if not states or states[-1] != report["state"]:
                states.append(report["state"])
        return states


@dataclass
class Start:
    """One start of the device: what the launcher chose, then the firmware task of that
    release."""

    state_dir: Path
    running: Running
    host: Host
    task: asyncio.Task[None]

    @classmethod
    async def boot(cls, state_dir: Path, life: Life, hold: str | None,
                   manifests: list[bytes]) -> Start:
        slot = launcher.prepare(state_dir, life.said.append)
        version = BASE if slot is None else (slots.venv_of(state_dir, slot) / "version"
                                             ).read_text()
        running, host = Running(version, slot, launched=True), Host(life.reports)
        updater = Updater(state_dir, SETTINGS, KEYRING, running, host,
                          SlotInstaller(state_dir, life.installs), hold=hold)
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        for payload in manifests:
            inbox.put_nowait(Message(SETTINGS.manifest_topic, payload))
        return cls(state_dir, running, host, asyncio.create_task(updater.run(inbox.get)))

    async def reach(self, want: Callable[[dict[str, Any]], bool]) -> bool:
        """Waits for a report ``want`` matches (True; the device's reports so far count) or
        a restart this start asks for (False)."""
        reports = self.host.reports
        await until(lambda: any(map(want, reports)) or self.host.restarts,
                    "the state or a restart", within=30)
        return any(map(want, reports))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task])

    async def kill(self, after: Path) -> Path:
        """The state directory as it is now, at ``after``; this start gone."""
        await asyncio.to_thread(shutil.copytree, self.state_dir, after, symlinks=True)
        await self.stop()
        return after


async def run_until(want: Callable[[dict[str, Any]], bool], state_dir: Path, life: Life, *,
                    hold: str | None = None, manifests: list[bytes] | None = None) -> Start:
    """Starts the device (its first start given ``manifests``), and again after every
    restart its task asks for, until a report matches ``want``; that start, running."""
    for _ in range(4):
        start = await Start.boot(state_dir, life, hold, manifests or [])
        manifests = None
        if await start.reach(want):
            return start
        await start.stop()
    raise AssertionError("more starts than an update takes")


def reached(name: str) -> Callable[[dict[str, Any]], bool]:
    if name == "downloading":
        return lambda r: r["state"] == name and 0.1 < (r["progress"] or 0) < 0.6
    return lambda r: r["state"] == name


@pytest.mark.parametrize("name", STEPS)
def test_killed_in_any_state_the_next_start_ends_on_a_working_slot(
        name: str, tmp_path: Path, server: FileServer) -> None:
    data = os.urandom(SIZE)
    path = f"kill-{name}.tar.gz"
    # Paced, the first download takes two seconds; the resumed one is not.
    url = server.add(path, data, rate=SIZE / 2 if name == "downloading" else None)
    before = Life(Installs(hang=name == "installing"))
    hold = name if name in ("verifying", "awaiting_health") else None

    async def scenario() -> tuple[Life, Start]:
        first = await run_until(reached(name), tmp_path / "state", before, hold=hold,
                                manifests=[manifest(KEY, "stable", GOOD, url, data)])
        after = await first.kill(tmp_path / "after")
        if name == "awaiting_health":
            # Killed after the record was written, before the link was switched.
            assert slots.pointed(after) is None
        # The manifest is not delivered again: the next starts go on from the record alone.
        life = Life(before.installs)
        last = await run_until(reached("committed"), after, life)
        await last.stop()
        return life, last

    life, last = asyncio.run(scenario())
    after = last.state_dir
    # Each state resumed where the kill left it (the start's report says it first).
    assert life.states() == STEPS[STEPS.index(name):]
    assert last.running == Running(GOOD, "a", launched=True)
    assert (life.reports[-1]["state"], life.reports[-1]["version"]) == ("committed", GOOD)
    record = state.load(after)
    assert record is not None
    assert (record.state, record.version, record.active, record.trial) == (
        FirmwareState.COMMITTED, GOOD, "a", None)
    assert slots.pointed(after) == "a"
    assert not list((after / "firmware" / "download").iterdir())

    requests = server.requests_for(path)
    if name == "downloading":
        # Resumed with one Range request from where the killed process stopped.
        assert len(requests) == 2 and requests[1].status == 206, requests
        resumed_at = requests[1].range or ""
        assert resumed_at.startswith("bytes=") and resumed_at.endswith("-")
        assert int(resumed_at[6:-1]) > SIZE // 10
    else:
        # The bundle on disk was whole: not fetched again.
        assert [(r.range, r.status) for r in requests] == [(None, 200)]
    # Installed once; killed at work, installed again from scratch by the next start.
    assert before.installs.slots == (["a", "a"] if name == "installing" else ["a"])
    if name == "committed":
        assert life.said == []  # a committed release runs, with nothing to count
    else:
        # The launcher counted the trial's start (and switched the link a kill before the
        # switch left behind).
        assert life.said == [f"trial start 1 of 2 of {GOOD} in slot a"]
