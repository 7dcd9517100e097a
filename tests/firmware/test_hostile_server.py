"""The download against a server that misbehaves: a drip, a stall, a hang before the
headers, a body longer than the manifest says, a Content-Length that lies, and a disk that
fills. In process, with limits small enough that the deadline and the stall come in a
second or so."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from device_kit import FileServer

from gateway.firmware import space
from gateway.firmware.download import Download, DownloadError, Limits, Stopped

FAST = Limits(min_rate_bytes_s=1000, stall_timeout_s=0.3, allowance_s=0.5)
PATIENT = Limits(min_rate_bytes_s=1, stall_timeout_s=600, allowance_s=600)


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    served = FileServer()
    try:
        yield served
    finally:
        served.close()


def in_thread(download: Download) -> tuple[threading.Thread, list[BaseException]]:
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            download.run()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_drip_is_given_up_at_the_deadline_keeping_what_came(
        tmp_path: Path, server: FileServer) -> None:
    data = os.urandom(500)
    url = server.add("drip", data, rate=1)
    # The drip never stalls (a byte a second); only the deadline, 0.5 + 500/1000 s, ends it.
    limits = Limits(min_rate_bytes_s=1000, stall_timeout_s=5, allowance_s=0.5)
    download = Download(url, tmp_path / "file", len(data), limits=limits)
    with pytest.raises(DownloadError) as failed:
        download.run()
    assert not failed.value.permanent
    assert failed.value.reason.startswith("too slow: ")
    assert failed.value.reason.endswith(" of 500 bytes within 1 s (at least 1000 B/s)")
    kept = (tmp_path / "file").read_bytes()
    assert 0 < len(kept) < len(data) and data.startswith(kept)
    assert len(server.requests_for("drip")) == 1


def test_a_stall_is_a_cut_and_the_download_resumes(tmp_path: Path,
                                                   server: FileServer) -> None:
    data = os.urandom(100_000)
    url = server.add("stall", data, stall_at=30_000)
    download = Download(url, tmp_path / "file", len(data), limits=FAST)
    download.run()
    assert (tmp_path / "file").read_bytes() == data
    assert [(r.range, r.status) for r in server.requests_for("stall")] == [
        (None, 200), ("bytes=30000-", 206)]


def test_a_server_that_never_answers_is_retried_then_reported(tmp_path: Path,
                                                              server: FileServer) -> None:
    url = server.add("hang", b"x" * 10, hang=True)
    limits = Limits(min_rate_bytes_s=1000, stall_timeout_s=0.3, allowance_s=10)
    download = Download(url, tmp_path / "file", 10, limits=limits, attempts=2)
    with pytest.raises(DownloadError) as failed:
        download.run()
    assert (failed.value.permanent, failed.value.reason) == (
        False, "download failed: stalled: no byte for 0.3 s")
    assert len(server.requests_for("hang")) == 2


@pytest.mark.parametrize("where", ["headers", "body"])
def test_stop_takes_effect_at_once_while_a_read_is_blocked(
        tmp_path: Path, server: FileServer, where: str) -> None:
    data = os.urandom(100_000)
    path = f"blocked-{where}"
    url = server.add(path, data, hang=where == "headers", stall_at=20_000)
    download = Download(url, tmp_path / "file", len(data), limits=PATIENT)
    thread, outcome = in_thread(download)
    wait_until(lambda: bool(server.requests_for(path)))
    if where == "body":
        wait_until(lambda: download.received == 20_000)
    time.sleep(0.2)  # blocked in the read
    stopped_at = time.monotonic()
    download.stop()
    thread.join(10)
    assert time.monotonic() - stopped_at < 2
    assert isinstance(outcome[0], Stopped)
    if where == "body":
        assert (tmp_path / "file").read_bytes() == data[:20_000]


def test_a_body_longer_than_the_manifest_says_is_cut_and_refused(
        tmp_path: Path, server: FileServer) -> None:
    data = os.urandom(300_000)
    url = server.add("oversize", data, no_length=True)
    with pytest.raises(DownloadError) as refused:
        Download(url, tmp_path / "file", 100_000, limits=FAST).run()
    assert (refused.value.permanent, refused.value.reason) == (
        True, "larger than the manifest's 100000 bytes")
    assert (tmp_path / "file").stat().st_size <= 100_000


def test_a_lying_content_length_gets_no_more_than_the_manifest_says(
        tmp_path: Path, server: FileServer) -> None:
    data = os.urandom(300_000)
    # It says the manifest's size and sends three times as much: what it said is read.
    url = server.add("lying-short", data, length=100_000)
    Download(url, tmp_path / "short", 100_000, limits=FAST).run()
    assert (tmp_path / "short").read_bytes() == data[:100_000]
    # It says more than the manifest's size: refused before the body.
    url = server.add("lying-long", data[:1000], length=10**12)
    with pytest.raises(DownloadError) as refused:
        Download(url, tmp_path / "long", 1000, limits=FAST).run()
    assert (refused.value.permanent, refused.value.reason) == (
        True, "larger than the manifest's 1000 bytes")
    assert not (tmp_path / "long").exists()


def test_a_disk_that_fills_while_downloading_is_no_space(
        tmp_path: Path, server: FileServer, small_disk: Callable[[Path, str], Path]) -> None:
    disk = small_disk(tmp_path / "disk", "1m")
    data = os.urandom(3 << 20)
    url = server.add("big", data)
    with pytest.raises(space.NoSpace) as full:
        Download(url, disk / "file", len(data), limits=FAST).run()
    assert not full.value.permanent
    assert full.value.reason == "not enough space: the disk filled while downloading, have 0 MiB"
    assert len(server.requests_for("big")) == 1
