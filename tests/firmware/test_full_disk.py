"""The firmware task on a small state directory (an 8 MiB tmpfs), in process with the real
updater, download and installer: a release larger than the disk is refused up front; a disk
that fills while downloading or making the slot's venv fails the release without refusing
it, and leaves no partial bundle or half-made slot; a record that cannot be written is
reported all the same; and after each the task answers the next manifest."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from device_kit import FileServer, fill
from nacl.signing import SigningKey
from releases import manifest
from signing import public_hex

from gateway.firmware import slots, state
from gateway.firmware.download import Limits
from gateway.firmware.install import Installer
from gateway.firmware.updater import Running, Settings, Updater
from gateway.trust.keys import Keyring

TOPIC = "gw/firmware/stable/manifest"


def one_wheel() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("x-5.0-py3-none-any.whl"), io.BytesIO())
    return out.getvalue()


@dataclass
class Message:
    topic: str
    payload: bytes | None


class Host:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def report(self, topic: str, payload: bytes) -> None:
        self.reports.append(json.loads(payload))

    def health(self, excused: frozenset[str]) -> str | None:
        return None

    def unwell(self) -> frozenset[str]:
        return frozenset()

    def restart(self) -> None:
        raise AssertionError("nothing is activated here")


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    served = FileServer()
    try:
        yield served
    finally:
        served.close()


async def report(host: Host, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            for seen in host.reports:
                if want(seen):
                    return seen
            await asyncio.sleep(0.02)


def failed(version: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: (r["state"], r["version"]) == ("failed", version)


def test_a_full_disk_fails_the_release_and_the_task_goes_on(
        tmp_path: Path, server: FileServer, small_disk: Callable[[Path, str], Path]) -> None:
    state_dir = small_disk(tmp_path / "state", "8m")
    key = SigningKey.generate()
    host = Host()
    installer = Installer(state_dir, tmp_path / "gw.yaml", 60, ["/bin/true"])
    settings = Settings("dev-1", "gw", "stable", 10, 2, 0.1,
                        Limits(min_rate_bytes_s=10_000, stall_timeout_s=5), 1 << 20)
    updater = Updater(state_dir, settings, Keyring.load([public_hex(key)]),
                      Running("1.0", None, launched=True), host, installer)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    downloads = state_dir / "firmware" / "download"

    def offer(version: str, url: str, data: bytes) -> None:
        inbox.put_nowait(Message(TOPIC, manifest(key, "stable", version, url, data)))

    async def scenario() -> None:
        task = asyncio.create_task(updater.run(inbox.get))
        await report(host, lambda r: r["state"] == "idle")

        # 4 MiB, unpacking to seven times that, and the reserve: not on an 8 MiB disk.
        big = os.urandom(4 << 20)
        offer("2.0", server.add("big", big), big)
        reason = (await report(host, failed("2.0")))["reason"]
        assert re.fullmatch(r"not enough space: need 33 MiB, have [78] MiB", reason), reason
        assert not server.requests_for("big")

        # The disk fills while downloading: the partial bundle goes.
        paced = os.urandom(200_000)
        offer("3.0", server.add("paced", paced, rate=100_000), paced)
        await report(host, lambda r: r["state"] == "downloading" and (r["progress"] or 0) > 0)
        ballast = await asyncio.to_thread(fill, state_dir)
        assert (await report(host, failed("3.0")))["reason"] == (
            "not enough space: the disk filled while downloading, have 0 MiB")
        assert list(downloads.iterdir()) == []

        # Full: not even the record can be written, and the failure is said all the same.
        await asyncio.to_thread(fill, state_dir, "more")
        small = os.urandom(1000)
        offer("4.0", server.add("small", small), small)
        assert (await report(host, failed("4.0")))["reason"] == (
            "not enough space: need 2 MiB, have 0 MiB")
        on_disk = state.load(state_dir)
        assert on_disk is not None and on_disk.version == "3.0"
        assert not task.done()

        # Room again, but not for a venv (ensurepip's pip alone is more than 8 MiB): the
        # half-made slot goes.
        ballast.unlink()
        (state_dir / "more").unlink()
        bundle = one_wheel()
        offer("5.0", server.add("bundle", bundle), bundle)
        reason = (await report(host, failed("5.0")))["reason"]
        assert reason.startswith(
            "not enough space: the disk filled while running python -m venv, have "), reason
        assert not slots.slot_dir(state_dir, "a").exists()
        assert list(downloads.iterdir()) == []
        record = state.load(state_dir)
        assert record is not None
        assert (record.state, record.version, record.refused) == ("failed", "5.0", None)

        # And the task still answers: a bundle that is no bundle is refused for good.
        offer("6.0", server.url("small"), small)
        assert (await report(host, failed("6.0")))["reason"].startswith("bad bundle: ")
        task.cancel()
        await asyncio.wait([task])

    asyncio.run(scenario())
