"""Sequence numbers: +1 per message, never repeated across restarts or crashes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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
