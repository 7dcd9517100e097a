"""The pipeline between sampler and queue, with a real queue and a real seq store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import TypeAdapter
from structlog.testing import capture_logs

from gateway.config import stages as cfg
from gateway.config.models import QueueConfig
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.pool import Record
from gateway.pipeline.seq import SeqStore
from gateway.uplink.queue import MessageQueue

STAGES = TypeAdapter(cfg.Stages)
TOPIC = "gw/pi-1/telemetry/cabinet"


async def offload(fn: Callable[[], None]) -> None:
    fn()


def make_pipeline(tmp_path: Path, stages: list[dict[str, Any]], max_messages: int = 1000,
                  drop_policy: Literal["oldest", "newest"] = "oldest",
                  clock: Callable[[], float] = time.time,
                  monotonic: Callable[[], float] = time.monotonic) -> Pipeline:
    seqs = SeqStore(tmp_path / "seq.json", offload)
    seqs.load()
    queue = MessageQueue(QueueConfig(memory_max_messages=max_messages, drop_policy=drop_policy))
    return Pipeline("pi-1", "cabinet", build_steps(STAGES.validate_python(stages)), TOPIC, 1,
                    seqs, queue, clock=clock, monotonic=monotonic)


async def drain(pipeline: Pipeline) -> list[dict[str, Any]]:
    queue = pipeline._queue
    payloads = []
    while queue.depth:
        message = await queue.take()
        queue.ack(message)
        assert (message.topic, message.qos, message.sensor) == (TOPIC, 1, "cabinet")
        payloads.append(json.loads(message.payload))
    return payloads


def test_each_reading_becomes_a_spec_telemetry_message(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [{"stage": "calibrate", "offset": {"temperature_c": 1}}])

    async def scenario() -> list[dict[str, Any]]:
        await pipeline.push(1700000000.25, {"temperature_c": 20.5, "humidity_rh": 40.0})
        await pipeline.push(1700000010.25, {"temperature_c": 21.0, "humidity_rh": 41.0})
        return await drain(pipeline)

    assert asyncio.run(scenario()) == [
        {"device": "pi-1", "sensor": "cabinet", "seq": 0,
         "readings": [{"ts": 1700000000.25, "temperature_c": 21.5, "humidity_rh": 40.0}]},
        {"device": "pi-1", "sensor": "cabinet", "seq": 1,
         "readings": [{"ts": 1700000010.25, "temperature_c": 22.0, "humidity_rh": 41.0}]},
    ]


def test_a_batch_is_one_message_with_one_seq(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [{"stage": "batch", "max_readings": 3, "max_delay_s": 60}])

    async def scenario() -> list[dict[str, Any]]:
        for ts in range(7):
            await pipeline.push(float(ts), {"t": float(ts)})
        await pipeline.flush()
        return await drain(pipeline)

    payloads = asyncio.run(scenario())
    assert [p["seq"] for p in payloads] == [0, 1, 2]
    assert [[r["ts"] for r in p["readings"]] for p in payloads] == [
        [0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0]]


def test_flush_sends_what_deadband_and_batch_hold(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [
        {"stage": "deadband", "delta": {"t": 1}, "max_silence_s": 600},
        {"stage": "batch", "max_readings": 10, "max_delay_s": 600},
    ])

    async def scenario() -> list[dict[str, Any]]:
        for ts, t in ((0.0, 20.0), (1.0, 20.1), (2.0, 22.0), (3.0, 22.2), (4.0, 22.3)):
            await pipeline.push(ts, {"t": t})
        assert await drain(pipeline) == []
        await pipeline.flush()
        return await drain(pipeline)

    (payload,) = asyncio.run(scenario())
    assert payload["readings"] == [{"ts": 0.0, "t": 20.0}, {"ts": 2.0, "t": 22.0},
                                   {"ts": 4.0, "t": 22.3}]
    assert pipeline.stats().pool.in_use == 0


def test_the_timer_sends_a_batch_when_no_reading_comes(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [{"stage": "batch", "max_readings": 100,
                                         "max_delay_s": 0.05}])

    async def scenario() -> list[dict[str, Any]]:
        async with asyncio.TaskGroup() as tg:
            timer = tg.create_task(pipeline.run())
            await pipeline.push(time.time(), {"t": 1.0})
            await pipeline.push(time.time(), {"t": 2.0})
            async with asyncio.timeout(10):
                message = await pipeline._queue.take()
            timer.cancel()
        return [json.loads(message.payload)]

    (payload,) = asyncio.run(scenario())
    assert [r["t"] for r in payload["readings"]] == [1.0, 2.0]


def test_a_full_queue_drops_by_its_policy_and_the_pipeline_goes_on(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [], max_messages=2, drop_policy="newest")

    async def scenario() -> list[dict[str, Any]]:
        for ts in range(5):
            await pipeline.push(float(ts), {"t": float(ts)})
        return await drain(pipeline)

    payloads = asyncio.run(scenario())
    assert [p["readings"][0]["ts"] for p in payloads] == [0.0, 1.0]
    stats = pipeline.stats()
    assert (stats.messages, stats.queue_dropped, stats.pool.in_use) == (5, 3, 0)


def test_a_failing_stage_costs_one_reading_and_is_logged(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = make_pipeline(tmp_path, [{"stage": "ema", "alpha": 1},
                                        {"stage": "batch", "max_readings": 10,
                                         "max_delay_s": 60}])
    ema = pipeline._steps._stages[0]
    process = ema.process

    def fragile(record: Record, pool: Any) -> Record | None:
        if record.values["t"] < 0:
            raise ArithmeticError("negative")
        return process(record, pool)

    monkeypatch.setattr(ema, "process", fragile)

    async def scenario() -> list[dict[str, Any]]:
        for ts, t in ((0.0, 1.0), (1.0, -1.0), (2.0, 2.0)):
            await pipeline.push(ts, {"t": t})
        await pipeline.flush()
        return await drain(pipeline)

    with capture_logs() as logs:
        (payload,) = asyncio.run(scenario())
    assert [r["t"] for r in payload["readings"]] == [1.0, 2.0]
    assert logs == [{"event": "pipeline.stage_failed", "log_level": "warning",
                     "sensor": "cabinet", "stage": "ema",
                     "error": "ArithmeticError('negative')"}]
    stats = pipeline.stats()
    assert (stats.readings, stats.failed, stats.pool.in_use) == (3, 1, 0)


def test_a_stage_failing_on_every_reading_logs_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    pipeline = make_pipeline(tmp_path, [{"stage": "median", "window": 3}],
                             clock=lambda: now[0], monotonic=lambda: now[0])
    median = pipeline._steps._stages[0]

    def broken(record: Record, pool: Any) -> Record | None:
        raise ValueError("broken")

    monkeypatch.setattr(median, "process", broken)

    async def scenario() -> None:
        for second in range(130):
            now[0] = 1000.0 + second
            await pipeline.push(now[0], {"t": 1.0})

    with capture_logs() as logs:
        asyncio.run(scenario())
    assert [log.get("unlogged_since") for log in logs] == [None, 59, 59]
    stats = pipeline.stats()
    assert (stats.failed, stats.messages, stats.pool.in_use) == (130, 0, 0)


def test_non_finite_and_non_numeric_driver_values(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [])

    async def scenario() -> list[dict[str, Any]]:
        await pipeline.push(0.0, {"t": float("nan"), "h": 40.0})
        await pipeline.push(1.0, {"t": float("inf")})
        await pipeline.push(2.0, {"t": "warm"})  # type: ignore[dict-item]
        await pipeline.push(3.0, {"t": 3})
        return await drain(pipeline)

    payloads = asyncio.run(scenario())
    assert [p["readings"] for p in payloads] == [[{"ts": 0.0, "h": 40.0}], [{"ts": 3.0, "t": 3.0}]]
    assert pipeline.stats().failed == 1


def test_seq_numbers_continue_across_pipelines_and_restarts(tmp_path: Path) -> None:
    async def one_run() -> list[int]:
        pipeline = make_pipeline(tmp_path, [])
        for ts in range(3):
            await pipeline.push(float(ts), {"t": 1.0})
        return [p["seq"] for p in await drain(pipeline)]

    first = asyncio.run(one_run())
    second = asyncio.run(one_run())
    assert first == [0, 1, 2]
    assert min(second) > max(first)


def test_raw_samples_need_a_vibration_stage(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [{"stage": "ema", "alpha": 0.5}])
    assert not pipeline.takes_samples
    with pytest.raises(TypeError, match="vibration stage"):
        asyncio.run(pipeline.push_samples(1.0, [0.0, 0.0, 1.0], 3200.0))


def test_wtvb01_readings_get_velocity_rms_and_zone(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, [{"stage": "vibration", "machine_class": "I"}])
    reading = {"accel_x_g": 0.01, "velocity_x_mm_s": 0.5, "velocity_y_mm_s": 5.0,
               "velocity_z_mm_s": 0.2}

    async def scenario() -> list[dict[str, Any]]:
        await pipeline.push(0.0, reading)
        return await drain(pipeline)

    (payload,) = asyncio.run(scenario())
    assert payload["readings"] == [{"ts": 0.0, **reading, "velocity_rms_mm_s": 5.0, "zone": "D"}]


def test_numpy_is_imported_only_for_raw_samples() -> None:
    script = """
import asyncio, sys
from pydantic import TypeAdapter
from gateway.config import stages as cfg
from gateway.pipeline.core import build_steps
steps = build_steps(TypeAdapter(cfg.Stages).validate_python(
    [{"stage": "vibration", "machine_class": "II"}, {"stage": "ema", "alpha": 0.5}]))
steps.push(0.0, {"velocity_x_mm_s": 1.0, "velocity_y_mm_s": 1.0, "velocity_z_mm_s": 1.0})
print("numpy" in sys.modules)
steps.push_samples(0.0, [0.0] * 96, 3200.0, False)
print("numpy" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parents[2])
    assert result.stdout.split() == ["False", "True"]
