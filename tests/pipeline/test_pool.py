"""The record pool, and that the pipeline returns every record it takes."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from drivers.sim.vibration import Vibration
from gateway.config import stages as cfg
from gateway.config.models import QueueConfig
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.pool import Pool, PoolError, PoolStats, Record
from gateway.pipeline.seq import SeqStore
from gateway.uplink.queue import MessageQueue

STAGES = TypeAdapter(cfg.Stages)

EVERY_STAGE: list[dict[str, Any]] = [
    {"stage": "calibrate", "scale": {"t": 1.01}, "offset": {"h": -1}},
    {"stage": "range", "min": {"t": -40}, "max": {"t": 85}, "action": "drop"},
    {"stage": "range", "max": {"h": 100}, "action": "flag"},
    {"stage": "median", "window": 5},
    {"stage": "ema", "alpha": 0.3},
    {"stage": "deadband", "delta": {"t": 0.2}, "max_silence_s": 30},
    {"stage": "average", "every": 3},
    {"stage": "downsample", "every": 2},
    {"stage": "batch", "max_readings": 7, "max_delay_s": 40},
]


def test_acquire_and_release_keep_the_counters() -> None:
    pool = Pool(Record, 2)
    a = pool.acquire()
    b = pool.acquire()
    assert pool.stats() == PoolStats(capacity=2, in_use=2, high_water=2, misses=0)
    pool.release(a)
    c = pool.acquire()
    assert c is a
    pool.release(b)
    pool.release(c)
    assert pool.stats() == PoolStats(capacity=2, in_use=0, high_water=2, misses=0)


def test_an_empty_pool_counts_a_miss_and_keeps_no_more_than_its_capacity() -> None:
    pool = Pool(Record, 1)
    kept = pool.acquire()
    extra = pool.acquire()
    assert extra is not kept
    assert pool.stats() == PoolStats(capacity=1, in_use=2, high_water=2, misses=1)
    pool.release(extra)
    pool.release(kept)
    assert pool.acquire() in (kept, extra)
    assert pool.acquire() not in (kept, extra)  # only one was kept
    assert pool.misses == 2


def test_a_record_released_twice_is_an_error() -> None:
    pool = Pool(Record, 2)
    record = pool.acquire()
    pool.release(record)
    with pytest.raises(PoolError, match="released twice"):
        pool.release(record)
    assert pool.in_use == 0


def test_a_released_record_comes_back_blank() -> None:
    pool = Pool(Record, 1)
    record = pool.acquire()
    record.values["t"] = 1.0
    record.zone = "C"
    record.out_of_range.append("t")
    pool.release(record)
    again = pool.acquire()
    assert again is record
    assert (again.values, again.zone, again.out_of_range) == ({}, None, [])


async def offload(fn: Callable[[], None]) -> None:
    fn()


def make_pipeline(tmp_path: Path, stages: list[dict[str, Any]]) -> Pipeline:
    seqs = SeqStore(tmp_path / "seq.json", offload)
    seqs.load()
    # A small queue that drops: a long run must not depend on the queue keeping up.
    queue = MessageQueue(QueueConfig(memory_max_messages=50))
    return Pipeline("pi-1", "s", build_steps(STAGES.validate_python(stages)), "t", 1, seqs,
                    queue)


def test_after_a_long_run_every_record_is_back_in_its_pool(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, EVERY_STAGE)
    rng = random.Random(4)

    async def scenario() -> None:
        for n in range(20_000):
            t = 20 + 5 * math.sin(n / 300) + rng.gauss(0, 0.3)
            if rng.random() < 0.01:
                t = 200.0  # out of range: dropped by the range stage
            await pipeline.push(n * 5.0, {"t": t, "h": 90 + rng.gauss(0, 8)})
        await pipeline.flush()

    asyncio.run(scenario())
    stats = pipeline.stats()
    assert stats.messages > 100
    assert stats.queue_dropped > 0
    assert stats.pool.in_use == 0
    assert stats.pool.misses == 0


def test_after_a_long_vibration_run_every_record_is_back(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [
        {"stage": "vibration", "machine_class": "I", "window_s": 0.1, "overlap": 0.75},
        {"stage": "deadband", "delta": {"velocity_rms_mm_s": 0.5}, "max_silence_s": 1},
        {"stage": "batch", "max_readings": 5, "max_delay_s": 2},
    ])
    model = Vibration(seed=2)
    flat = [v for k in range(3200) for v in model.sample(k / 3200)]

    async def scenario() -> None:
        for second in range(10):
            for start in range(0, 3200, 32):
                await pipeline.push_samples(second + (start + 31) / 3200,
                                            flat[start * 3 : (start + 32) * 3], 3200.0)
        await pipeline.flush()

    asyncio.run(scenario())
    stats = pipeline.stats()
    assert stats.readings > 300
    assert (stats.pool.in_use, stats.pool.misses) == (0, 0)


@pytest.mark.parametrize("failing", range(len(EVERY_STAGE) - 1))
def test_an_exception_inside_any_stage_leaks_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int
) -> None:
    pipeline = make_pipeline(tmp_path, EVERY_STAGE)
    stage = pipeline._steps._stages[failing]
    process = stage.process
    calls = 0

    def every_third_fails(record: Record, pool: Pool[Record]) -> Record | None:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            raise RuntimeError("stage bug")
        return process(record, pool)

    monkeypatch.setattr(stage, "process", every_third_fails)

    async def scenario() -> None:
        for n in range(300):
            await pipeline.push(n * 10.0, {"t": 20 + (n % 7), "h": 50.0 + n % 60})
        await pipeline.flush()

    asyncio.run(scenario())
    stats = pipeline.stats()
    assert stats.failed == calls // 3
    assert stats.failed > 0
    assert stats.pool.in_use == 0
