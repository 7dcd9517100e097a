"""Properties of the stages and of the pipeline as a whole, over generated readings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gateway.config import stages as cfg
from gateway.config.fields import DAY_S
from gateway.config.models import QueueConfig
from gateway.pipeline import stages
from gateway.pipeline.batch import Batch
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.pool import Pool, Record
from gateway.pipeline.seq import SeqStore
from gateway.uplink.queue import MessageQueue

STAGES = TypeAdapter(cfg.Stages)
SETTINGS = settings(max_examples=60, deadline=None)

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
gaps = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


def stage(**fields: Any) -> Any:
    return STAGES.validate_python([fields])[0]


def feed(step: stages.Step, pool: Pool[Record], readings: list[tuple[float, float]]
         ) -> list[tuple[float, float] | None]:
    out: list[tuple[float, float] | None] = []
    for ts, value in readings:
        record = pool.acquire()
        record.ts = ts
        record.values["v"] = value
        passed = step.process(record, pool)
        out.append(None if passed is None else (passed.ts, passed.values["v"]))
        if passed is not None:
            pool.release(passed)
    return out


def timeline(gap_list: list[float]) -> list[float]:
    ts, times = 1000.0, []
    for gap in gap_list:
        ts += gap
        times.append(ts)
    return times


@SETTINGS
@given(st.floats(min_value=1e-6, max_value=1.0), st.lists(values, min_size=1, max_size=50))
# alpha * x + (1 - alpha) * x rounds to one ulp beside x in both.
@example(0.762280082457942, [-995.7878932977786, -995.7878932977786])
@example(1e-06, [2.327561607265547e-272, 2.327561607265547e-272])
def test_ema_stays_within_the_range_of_its_inputs(alpha: float, inputs: list[float]) -> None:
    pool = Pool(Record, 4)
    out = feed(stages.Ema(stage(stage="ema", alpha=alpha)), pool,
               [(float(i), v) for i, v in enumerate(inputs)])
    for n, passed in enumerate(out, start=1):
        assert passed is not None
        assert min(inputs[:n]) <= passed[1] <= max(inputs[:n])


@SETTINGS
@given(st.floats(min_value=0.0, max_value=10.0), st.floats(min_value=0.5, max_value=300.0),
       st.lists(st.tuples(gaps, values), min_size=1, max_size=60))
def test_deadband_is_never_silent_longer_than_max_silence(
    delta: float, max_silence_s: float, steps: list[tuple[float, float]]
) -> None:
    pool = Pool(Record, 4)
    step = stages.Deadband(stage(stage="deadband", delta={"v": delta},
                                 max_silence_s=max_silence_s))
    readings = list(zip(timeline([g for g, _ in steps]), [v for _, v in steps], strict=True))
    out = feed(step, pool, readings)
    assert out[0] is not None
    last_sent_ts, last_sent_value = out[0]
    for (ts, value), passed in zip(readings, out, strict=True):
        if passed is None:
            assert ts - last_sent_ts < max_silence_s
            assert abs(value - last_sent_value) <= delta
        else:
            last_sent_ts, last_sent_value = passed
    # The newest reading, when held back, waits for a flush; older held ones are released.
    assert pool.in_use == (out[-1] is None)
    held = step.flush(pool)
    assert (held is None) == (out[-1] is not None)


@SETTINGS
@given(st.integers(min_value=1, max_value=12), st.floats(min_value=0.1, max_value=50.0),
       st.lists(st.tuples(gaps, st.booleans()), min_size=1, max_size=80))
def test_batch_never_exceeds_its_bounds(max_readings: int, max_delay_s: float,
                                        events: list[tuple[float, bool]]) -> None:
    """Between readings the timer may expire the batch; every reading is sent once."""
    pool = Pool(Record, max_readings + 2)
    groups: list[list[float]] = []
    batch = Batch(max_readings, max_delay_s, pool, lambda rs: groups.append([r.ts for r in rs]))
    times = timeline([gap for gap, _ in events])
    for ts, (_, timer_first) in zip(times, events, strict=True):
        if timer_first:
            batch.expire(ts)
        record = pool.acquire()
        record.ts = ts
        batch.add(record)
        deadline = batch.deadline()
        assert deadline is None or deadline > ts
    batch.flush()
    for group in groups:
        assert 1 <= len(group) <= max_readings
        assert group[-1] < group[0] + max_delay_s
    assert [ts for group in groups for ts in group] == times
    assert pool.in_use == 0


async def offload(fn: Callable[[], None]) -> None:
    fn()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(["t", "h", "p"]), values, min_size=1),
             min_size=1, max_size=60),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=20),
    st.sampled_from(["oldest", "newest"]),
)
def test_no_reading_is_lost_or_duplicated_between_sampler_and_queue(
    tmp_path_factory: pytest.TempPathFactory, readings: list[dict[str, float]], max_readings: int,
    max_messages: int, drop_policy: Any,
) -> None:
    """Every reading reaches the queue exactly once, or is in a message the queue dropped
    and counted; seq numbers are consecutive in the order messages were made."""
    seqs = SeqStore(tmp_path_factory.mktemp("seq") / "seq.json", offload, block=7)
    seqs.load()
    queue = MessageQueue(QueueConfig(memory_max_messages=max(2, max_messages),
                                     drop_policy=drop_policy))
    chain = STAGES.validate_python([
        {"stage": "calibrate", "scale": {"t": 2}},
        {"stage": "median", "window": 3},
        {"stage": "ema", "alpha": 0.5},
        {"stage": "batch", "max_readings": max_readings, "max_delay_s": DAY_S},
    ])
    pipeline = Pipeline("d", "s", build_steps(chain), "t/s", 0, seqs, queue)

    async def scenario() -> list[dict[str, Any]]:
        for ts, reading in enumerate(readings):
            await pipeline.push(float(ts), reading)
        await pipeline.flush()
        out = []
        while queue.depth:
            message = await queue.take()
            queue.ack(message)
            out.append(json.loads(message.payload))
        return out

    payloads = asyncio.run(scenario())
    delivered = [r["ts"] for p in payloads for r in p["readings"]]
    assert delivered == sorted(set(delivered))
    seq_numbers = [p["seq"] for p in payloads]
    assert seq_numbers == sorted(seq_numbers)
    stats = pipeline.stats()
    assert stats.messages == len(payloads) + stats.queue_dropped
    assert stats.pool.in_use == 0
    if not stats.queue_dropped:
        assert delivered == [float(ts) for ts in range(len(readings))]
        assert seq_numbers == list(range(len(payloads)))
