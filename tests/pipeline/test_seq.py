"""Sequence numbers: +1 per message, never repeated across restarts or crashes, and
without a gap across a clean stop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Broker, DaemonProcess, Subscriber, device_config, write_config

from gateway.pipeline.seq import SeqStore


async def inline(fn: Callable[[], None]) -> None:
    fn()


def test_numbers_rise_by_one_and_resume_above_the_reservation(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"

    async def run() -> tuple[list[int], list[int], list[int]]:
        store = SeqStore(path, inline, block=10)
        store.load()
        first = [await store.next("a") for _ in range(25)]
        other = [await store.next("b") for _ in range(3)]
        # A crash: the store is dropped without any shutdown step.
        again = SeqStore(path, inline, block=10)
        again.load()
        return first, other, [await again.next("a") for _ in range(3)]

    first, other, after = asyncio.run(run())
    assert first == list(range(25))
    assert other == [0, 1, 2]
    assert after == [30, 31, 32]  # the rest of the reserved block is skipped, never reused
    assert json.loads(path.read_text()) == {"a": 40, "b": 10}


@pytest.mark.parametrize("text", ['{"a": -1}', '{"a": 1.5}', "[1]", "{not json", "\xff"])
def test_corrupt_file_is_set_aside_and_numbering_jumps_above_anything_used(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "seq.json"
    path.write_text(text)
    store = SeqStore(path, inline)
    store.load()
    before = time.time() * 1000
    seq = asyncio.run(store.next("a"))
    assert before - 60_000 < seq <= time.time() * 1000
    [aside] = tmp_path.glob("seq.json.corrupt-*")
    assert aside.read_text() == text
    assert json.loads(path.read_text()) == {"a": seq + 1000}


async def numbers(store: SeqStore, sensor: str, count: int) -> list[int]:
    return [await store.next(sensor) for _ in range(count)]


def test_after_a_clean_close_the_next_process_continues_with_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"

    async def run() -> list[list[int]]:
        runs = []
        for count in (25, 1, 10, 0, 3):  # across block boundaries, and a run that sent none
            store = SeqStore(path, inline, block=10)
            store.load()
            runs.append(await numbers(store, "a", count))
            await numbers(store, "b", 2)
            await store.close()
        return runs

    runs = asyncio.run(run())
    assert [seq for run in runs for seq in run] == list(range(39))
    assert json.loads(path.read_text()) == {"a": 39, "b": 10}


@pytest.mark.parametrize("count", [1, 9, 10, 11, 25])
def test_a_crash_skips_at_most_a_block(tmp_path: Path, count: int) -> None:
    path = tmp_path / "seq.json"

    async def run() -> tuple[list[int], int]:
        store = SeqStore(path, inline, block=10)
        store.load()
        before = await numbers(store, "a", count)
        # A crash: no close.
        again = SeqStore(path, inline, block=10)
        again.load()
        return before, await again.next("a")

    before, after = asyncio.run(run())
    assert before[-1] < after <= before[-1] + 10


def test_a_number_after_close_reserves_first_so_none_repeats(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"

    async def run() -> tuple[list[int], list[int]]:
        store = SeqStore(path, inline, block=10)
        store.load()
        first = await numbers(store, "a", 3)
        await store.close()
        first += await numbers(store, "a", 2)  # a late message, after the stop began
        again = SeqStore(path, inline, block=10)
        again.load()
        return first, await numbers(again, "a", 2)

    first, after = asyncio.run(run())
    assert first == [0, 1, 2, 3, 4]
    assert after == [13, 14]


def test_a_close_that_cannot_write_keeps_the_reservation(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    failing = False

    async def offload(fn: Callable[[], None]) -> None:
        if failing:
            raise OSError(28, "No space left on device")
        fn()

    async def run() -> tuple[list[int], list[int]]:
        nonlocal failing
        store = SeqStore(path, offload, block=10)
        store.load()
        first = await numbers(store, "a", 3)
        failing = True
        await store.close()
        first += await numbers(store, "a", 2)
        again = SeqStore(path, inline, block=10)
        again.load()
        return first, await numbers(again, "a", 1)

    first, after = asyncio.run(run())
    assert first == [0, 1, 2, 3, 4]
    assert after == [10]  # as after a crash: a gap, no repeat


def test_the_daemon_continues_seq_with_plus_one_after_sigterm(
    tmp_path: Path, broker: Broker
) -> None:
    """End to end, as the README promises: a clean stop and a new start leave no gap."""
    config = write_config(tmp_path / "gw.yaml", device_config(broker.port, tmp_path / "state"))
    sub = Subscriber(broker.port, "gw/dev-1/telemetry/room")
    seqs: list[int] = []
    try:
        for _ in range(2):
            daemon = DaemonProcess(config)
            try:
                wanted = len(seqs) + 5
                while len(seqs) < wanted:
                    seqs.append(sub.get(15).json()["seq"])
                assert daemon.stop() == 0
            finally:
                daemon.kill()
            recorded = json.loads((tmp_path / "state" / "seq.json").read_text())
            # What the stop flushed and drained arrives, up to the last number it recorded.
            while seqs[-1] < recorded["room"] - 1:
                seqs.append(sub.get(5).json()["seq"])
            assert recorded == {"room": seqs[-1] + 1}
    finally:
        sub.close()
    assert seqs == list(range(len(seqs)))
