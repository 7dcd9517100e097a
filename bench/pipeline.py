"""Pipeline benchmark: pooled stage chain against the same chain written plainly.

Prints readings per second of both (in one run, alternating, so both see the same
machine), GC collections per generation while they run, the net memory growth of the
pooled chain over 1,000,000 readings after warm-up (tracemalloc; what grows with the
readings against its target, what grew once beside it: ``Growth``), and the vibration
stage's speed against real time at 3200 Hz with the cost of numpy beside a pure-Python
FFT of the same window, and what an anomaly stage after it adds to that path. Run from
the repository root: ``python bench/pipeline.py``; exit status 1 when the memory growth
misses its target.
"""

from __future__ import annotations

import asyncio
import cmath
import gc
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from drivers.sim.vibration import Vibration
from gateway.config import stages as cfg
from gateway.config.models import QueueConfig
from gateway.pipeline import codec
from gateway.pipeline.core import Pipeline, Steps, build_steps
from gateway.pipeline.seq import SeqStore
from gateway.uplink.queue import Message, MessageQueue

DEVICE, SENSOR, TOPIC = "pi-0001", "cabinet", "gw/pi-0001/telemetry/cabinet"
WARM_UP = 50_000
ROUNDS, PER_ROUND = 5, 200_000
MEMORY_RUN = 1_000_000
GROWTH_TARGET = 64 * 1024
# Frames per traced allocation: the line that allocated and its caller (each more costs time).
TRACE_FRAMES = 2
# Readings are stamped from here on: a Unix time, as wide as the device's all run long.
EPOCH = 1_700_000_000.0

TYPICAL: list[dict[str, Any]] = [
    {"stage": "calibrate", "offset": {"temperature_c": -0.3}, "scale": {"humidity_rh": 1.02}},
    {"stage": "range", "min": {"temperature_c": -40, "humidity_rh": 0},
     "max": {"temperature_c": 125, "humidity_rh": 100}},
    {"stage": "median", "window": 5},
    {"stage": "ema", "alpha": 0.3},
    {"stage": "batch", "max_readings": 10, "max_delay_s": 300},
]


async def offload(fn: Callable[[], None]) -> None:
    fn()


class PlainPipeline:
    """``TYPICAL`` as one would write it without pools: new dicts and lists per reading,
    ``json.dumps`` through ``codec.telemetry``. Same results, same seq store and queue."""

    def __init__(self, seqs: SeqStore, queue: MessageQueue) -> None:
        self._seqs = seqs
        self._queue = queue
        self._windows: dict[str, deque[float]] = {}
        self._ema: dict[str, float] = {}
        self._batch: list[dict[str, float]] = []

    async def push(self, ts: float, values: Mapping[str, float]) -> None:
        offset = {"temperature_c": -0.3}
        scale = {"humidity_rh": 1.02}
        low = {"temperature_c": -40.0, "humidity_rh": 0.0}
        high = {"temperature_c": 125.0, "humidity_rh": 100.0}
        calibrated = {q: v * scale.get(q, 1.0) + offset.get(q, 0.0) for q, v in values.items()}
        in_range = {q: v for q, v in calibrated.items()
                    if low.get(q, -math.inf) <= v <= high.get(q, math.inf)}
        medians = {}
        for q, v in in_range.items():
            window = self._windows.setdefault(q, deque(maxlen=5))
            window.append(v)
            ordered = sorted(window)
            medians[q] = ordered[(len(ordered) - 1) // 2]
        smoothed = {}
        for q, v in medians.items():
            previous = self._ema.get(q)
            smoothed[q] = v if previous is None else 0.3 * v + 0.7 * previous
            self._ema[q] = smoothed[q]
        self._batch.append({"ts": ts, **smoothed})
        if len(self._batch) >= 10:
            batch, self._batch = self._batch, []
            seq = await self._seqs.next(SENSOR)
            payload = codec.telemetry(DEVICE, SENSOR, seq, batch)
            self._queue.put(Message(TOPIC, payload, 1, SENSOR))


def inputs(count: int) -> list[dict[str, float]]:
    """Driver-like readings: a fresh dict each, as the drivers return."""
    return [{"temperature_c": 21.0 + 3 * math.sin(n / 50), "humidity_rh": 45.0 + (n % 17) * 0.3}
            for n in range(count)]


async def drive(pipeline: Any, start: int, count: int, readings: list[dict[str, float]]) -> None:
    size = len(readings)
    for n in range(start, start + count):
        await pipeline.push(EPOCH + n * 10.0, readings[n % size])


def gc_counts() -> list[int]:
    return [generation["collections"] for generation in gc.get_stats()]


async def chains(state_dir: Path) -> None:
    seqs = SeqStore(state_dir / "seq.json", offload)
    seqs.load()
    # A bounded queue that keeps dropping its oldest: the broker is "away" all run long,
    # so the queue stays full and the pipeline's steady state is what is measured.
    queue = MessageQueue(QueueConfig(memory_max_messages=1000))
    stages = TypeAdapter(cfg.Stages).validate_python(TYPICAL)
    pooled = Pipeline(DEVICE, SENSOR, build_steps(stages), TOPIC, 1, seqs, queue)
    plain = PlainPipeline(seqs, queue)
    readings = inputs(4096)

    await drive(pooled, 0, WARM_UP, readings)
    await drive(plain, 0, WARM_UP, readings)
    elapsed = {"pooled": 0.0, "plain": 0.0}
    collections = {"pooled": [0, 0, 0], "plain": [0, 0, 0]}
    for round_ in range(ROUNDS):
        for name, pipeline in (("pooled", pooled), ("plain", plain)):
            before = gc_counts()
            started = time.perf_counter()
            await drive(pipeline, WARM_UP + round_ * PER_ROUND, PER_ROUND, readings)
            elapsed[name] += time.perf_counter() - started
            collections[name] = [c + after - b for c, after, b in
                                 zip(collections[name], gc_counts(), before, strict=True)]
    total = ROUNDS * PER_ROUND
    rates = {name: total / seconds for name, seconds in elapsed.items()}
    print(f"stage chain: {' -> '.join(s['stage'] for s in TYPICAL)}")
    print(f"  pooled: {rates['pooled']:>9,.0f} readings/s   GC collections per generation "
          f"over {total:,} readings: {collections['pooled']}")
    print(f"  plain:  {rates['plain']:>9,.0f} readings/s   GC collections per generation "
          f"over {total:,} readings: {collections['plain']}")
    print(f"  pooled / plain speed: {rates['pooled'] / rates['plain']:.2f}x")

    stats = pooled.stats()
    print(f"  pool: {stats.pool}, messages {stats.messages:,}, "
          f"dropped by the full queue {stats.queue_dropped:,}")


@dataclass
class Growth:
    """Net traced memory over a measured run, in two halves, with the queue's contents at
    both ends (a bounded structure still filling would show there).

    The halves are the run's own baseline. A leak grows with the readings, in both halves
    alike. A one-off does not: a global table of the interpreter that existed before
    tracing and is reallocated during the run counts whole in the half where that happens.
    CPython's table of interned strings is one: pathlib interns the name of the seq store's
    temporary file at every write, the name is freed after it, and the table is rebuilt
    once that churn has used up its free slots, about 940 KiB at once, whenever the
    process's history puts that moment (the modules imported before it, among them).
    """

    readings: int
    first_half: int
    second_half: int
    queue_at_start: tuple[int, int]
    queue_at_end: tuple[int, int]
    top: list[str]

    @property
    def steady(self) -> int:
        """Growth that scales with the readings: twice the smaller half."""
        return 2 * min(self.first_half, self.second_half)

    @property
    def one_off(self) -> int:
        return self.first_half + self.second_half - self.steady


async def memory_growth(steps: Steps, state_dir: Path, readings: int,
                        queue_messages: int = 1000) -> Growth:
    """Traced net growth of a pipeline (``steps`` with its seq store and a queue of
    ``queue_messages`` that drops its oldest) over ``readings`` readings.

    Tracing starts before the pipeline, its queue and its seq store exist, and the warm-up
    runs until the queue has been filled and emptied by drops twice over, so every bounded
    structure is traced both at the start and at the end of the run: what the figure holds
    is what grows with the readings. Timestamps and seq keep one width throughout (a Unix
    time, a seq of a device that has been counting for a while), as payloads on a device
    do, so message sizes do not drift with the loop counter.
    """
    tracemalloc.start(TRACE_FRAMES)
    try:
        (state_dir / "seq.json").write_text(json.dumps({SENSOR: 10**9}))
        seqs = SeqStore(state_dir / "seq.json", offload)
        seqs.load()
        queue = MessageQueue(QueueConfig(memory_max_messages=queue_messages))
        pipeline = Pipeline(DEVICE, SENSOR, steps, TOPIC, 1, seqs, queue)
        inputs_ = inputs(4096)
        position = 0
        chunk = 10 * queue_messages
        while queue.dropped[SENSOR] < 2 * queue_messages:
            if position >= 100 * chunk:
                raise RuntimeError("the queue never filled: the chain sends no messages")
            await drive(pipeline, position, chunk, inputs_)
            position += chunk
        sizes: list[int] = []
        queue_figures: list[tuple[int, int]] = []
        half = readings // 2
        for count in (0, half, readings - half):
            await drive(pipeline, position, count, inputs_)
            position += count
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])
            figures = queue.stats()
            queue_figures.append((figures.depth, figures.bytes))
            if count == 0:
                start = tracemalloc.take_snapshot()
        end = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    top = [f"{stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+,} blocks at "
           + " <- ".join(f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
                         for frame in reversed(stat.traceback))
           for stat in end.compare_to(start, "traceback")[:5] if stat.size_diff > 0]
    return Growth(readings, sizes[1] - sizes[0], sizes[2] - sizes[1], queue_figures[0],
                  queue_figures[2], top)


async def memory(state_dir: Path) -> bool:
    stages = TypeAdapter(cfg.Stages).validate_python(TYPICAL)
    growth = await memory_growth(build_steps(stages), state_dir, MEMORY_RUN)
    passed = growth.steady <= GROWTH_TARGET
    print(f"  pooled net memory growth over {growth.readings:,} readings after a traced "
          f"warm-up, growing with the readings: {growth.steady / 1024:.1f} KiB (target <= "
          f"{GROWTH_TARGET // 1024} KiB{'' if passed else ': MISSED'})")
    print(f"    first half {growth.first_half / 1024:+.1f} KiB, second half "
          f"{growth.second_half / 1024:+.1f} KiB, so once only "
          f"{growth.one_off / 1024:+.1f} KiB; queue (messages, bytes) "
          f"{growth.queue_at_start} at the start, {growth.queue_at_end} at the end")
    if not passed or growth.one_off > GROWTH_TARGET:
        print("    grew most:")
        for line in growth.top:
            print(f"      {line}")
    return passed


def python_fft(values: list[complex]) -> list[complex]:
    """Radix-2 FFT in plain Python: what the vibration stage would cost without numpy."""
    size = len(values)
    if size == 1:
        return values
    even = python_fft(values[0::2])
    odd = python_fft(values[1::2])
    half = size // 2
    out = [0j] * size
    for k in range(half):
        twiddled = cmath.exp(-2j * math.pi * k / size) * odd[k]
        out[k] = even[k] + twiddled
        out[k + half] = even[k] - twiddled
    return out


VIBRATION = {"stage": "vibration", "machine_class": "II", "window_s": 1.0, "overlap": 0.5}
BATCH = {"stage": "batch", "max_readings": 10, "max_delay_s": 60}
ANOMALY_TARGET = 0.10
VIBRATION_ROUNDS = 20


async def vibration(state_dir: Path) -> None:
    rate_hz, burst, seconds = 3200.0, 32, 30
    model = Vibration(seed=1)
    flat = array("f", [v for k in range(int(rate_hz)) for v in model.sample(k / rate_hz)])
    bursts = [flat[i : i + burst * 3] for i in range(0, len(flat), burst * 3)]
    seqs = SeqStore(state_dir / "seq-vibration.json", offload)
    seqs.load()

    def pipeline(*stages: dict[str, Any]) -> Pipeline:
        configs = TypeAdapter(cfg.Stages).validate_python([*stages, BATCH])
        return Pipeline(DEVICE, "pump", build_steps(configs), TOPIC, 1, seqs,
                        MessageQueue(QueueConfig()), state_dir=state_dir)

    async def stream(target: Pipeline, first_second: int, count: int) -> float:
        started = time.perf_counter()
        for second in range(first_second, first_second + count):
            for index, samples in enumerate(bursts):
                await target.push_samples(second + (index + 1) * burst / rate_hz, samples,
                                          rate_hz)
        return time.perf_counter() - started

    plain = pipeline(VIBRATION)
    # Learned within the warm-up, so what is timed is the scoring of every window.
    scored = pipeline(VIBRATION, {"stage": "anomaly", "learn_windows": 50})
    await stream(plain, 0, 30)
    await stream(scored, 0, 30)
    # Alternating rounds; the fastest of each, so a neighbour's burst on a shared
    # machine does not count against either.
    rounds: dict[str, list[float]] = {"plain": [], "scored": []}
    per_round = seconds
    for round_ in range(VIBRATION_ROUNDS):
        first = 30 + round_ * per_round
        rounds["plain"].append(await stream(plain, first, per_round))
        rounds["scored"].append(await stream(scored, first, per_round))
    best = {name: min(times) for name, times in rounds.items()}
    windows = plain.stats().readings
    print(f"vibration: 3 axes at {rate_hz:.0f} Hz in bursts of {burst}, 1 s windows, "
          f"50 % overlap: {per_round / best['plain']:,.0f}x real time on one core "
          f"({windows} windows, target >= 50x)")
    added = best["scored"] / best["plain"] - 1.0
    print(f"  with an anomaly stage after it (scoring): {per_round / best['scored']:,.0f}x "
          f"real time, {added:+.1%} on the vibration path (target <= "
          f"{ANOMALY_TARGET:.0%})")

    from gateway.pipeline.vibration import Workspace, analyse

    window = np.array(flat, dtype=np.float64).reshape(-1, 3).T.copy()
    workspace = Workspace(window.shape[1], rate_hz, 10.0, 1000.0)
    repeats = 200
    started = time.perf_counter()
    for _ in range(repeats):
        analyse(window, workspace)
    numpy_s = (time.perf_counter() - started) / repeats
    axis = [complex(v) for v in window[0]] + [0j] * (4096 - window.shape[1])
    started = time.perf_counter()
    python_fft(axis)
    python_s = (time.perf_counter() - started) * 3
    print(f"  one window's features with numpy: {numpy_s * 1e3:.2f} ms; its three FFTs alone "
          f"in plain Python (radix 2, padded to 4096): {python_s * 1e3:.0f} ms "
          f"({python_s / numpy_s:,.0f}x slower, {0.5 / python_s:.0f}x real time at best)")


def rss_mb_after(statement: str) -> float:
    """Resident memory of a fresh interpreter after ``statement`` (Linux)."""
    code = (f"{statement}\nimport re\n"
            "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return int(out.stdout) / 1024


def main() -> int:
    print(f"Python {sys.version.split()[0]} on {platform.machine()}, one core")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(chains(Path(tmp)))
        with tempfile.TemporaryDirectory() as memory_dir:
            passed = asyncio.run(memory(Path(memory_dir)))
        asyncio.run(vibration(Path(tmp)))
    cost = rss_mb_after("import numpy") - rss_mb_after("pass")
    print(f"  numpy's import costs {cost:.1f} MB of RSS, paid only by a sensor streaming samples")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
