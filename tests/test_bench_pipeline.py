"""The pipeline bench's memory measurement tells a leak from a bounded structure.

``bench/pipeline.py`` reports the net traced growth of a pipeline and its queue that grows
with the readings, over a million of them, against a 64 KiB target. A figure that a full
queue, a payload that widens or a one-off reallocation can inflate, or that a leak cannot
move, guards nothing: here the same measurement runs on a small number of readings, on the
bench's own chain, with a stage that keeps a copy of every reading, as a leaking stage in
the product would, and with one that takes a large block once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from pydantic import TypeAdapter

from gateway.config import stages as cfg
from gateway.pipeline.core import Steps, build_steps
from gateway.pipeline.pool import Record
from gateway.pipeline.stages import Calibrate, RecordPool

READINGS = 10_000
# A small queue fills, and is traced, within a short warm-up.
QUEUE = 200


def load_bench() -> ModuleType:
    path = Path(__file__).parents[1] / "bench" / "pipeline.py"
    spec = importlib.util.spec_from_file_location("bench_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


bench = load_bench()


class Hoard:
    """A stage that keeps a copy of every reading it passes on."""

    name = "hoard"
    holds = 0

    def __init__(self) -> None:
        self.kept: list[dict[str, float]] = []

    def process(self, record: Record, pool: RecordPool) -> Record:
        self.kept.append(dict(record.values))
        return record

    def flush(self, pool: RecordPool) -> None:
        return None


class Reserve(Hoard):
    """A stage that takes a large block once, at its 8,000th reading (after the warm-up, in
    the measured run), as a table the interpreter rebuilds once would be."""

    name = "reserve"

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.block = b""

    def process(self, record: Record, pool: RecordPool) -> Record:
        self.seen += 1
        if self.seen == 8_000:
            self.block = bytes(1024 * 1024)
        return record


def typical() -> list[cfg.Stage]:
    return list(TypeAdapter(cfg.Stages).validate_python(bench.TYPICAL))


def test_the_bench_chain_stays_within_the_target(tmp_path: Path) -> None:
    growth = asyncio.run(bench.memory_growth(build_steps(typical()), tmp_path, READINGS, QUEUE))

    assert growth.steady <= bench.GROWTH_TARGET, growth.top
    # The queue was full before the run: its contents are in the baseline.
    assert growth.queue_at_start[0] == growth.queue_at_end[0] == QUEUE


def with_stage(stage: Hoard) -> Steps:
    stages = typical()
    calibrate = next(s for s in stages if isinstance(s, cfg.Calibrate))
    batch = next(s for s in stages if isinstance(s, cfg.Batch))
    return Steps([Calibrate(calibrate), stage], batch)


def test_a_stage_that_keeps_every_reading_misses_the_target(tmp_path: Path) -> None:
    growth = asyncio.run(bench.memory_growth(with_stage(Hoard()), tmp_path, READINGS, QUEUE))

    # It grows in both halves alike, and the report names the stage.
    assert growth.steady > bench.GROWTH_TARGET
    assert any("test_bench_pipeline.py" in line for line in growth.top), growth.top


def test_a_block_taken_once_is_told_from_a_leak(tmp_path: Path) -> None:
    growth = asyncio.run(bench.memory_growth(with_stage(Reserve()), tmp_path, READINGS, QUEUE))

    assert growth.one_off >= 1024 * 1024
    assert growth.steady <= bench.GROWTH_TARGET
