"""The anomaly stage on the ADXL345 emulator (the driver over the emulated bus, a fake
clock, so an hour runs in seconds): after learning a 50 Hz motor, a new 157 Hz tone or
half as much vibration again scores above 5 within 10 windows; an hour of the normal
motor, noise and all, stays below 3; the baseline survives a restart and is learned anew
when the settings change; scoring allocates nothing."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from drivers.adxl345 import ADXL345
from drivers.sim.adxl345 import ADXL345Sim
from drivers.sim.i2c import SimI2CBus
from drivers.sim.vibration import Tone, Vibration
from gateway.config import stages as cfg
from gateway.config.models import QueueConfig
from gateway.pipeline.core import ANOMALY_DIR, Pipeline, build_steps
from gateway.pipeline.pool import Pool, Record
from gateway.pipeline.seq import SeqStore
from gateway.uplink.queue import MessageQueue

RATE_HZ = 400.0  # the slowest rate that carries 157 Hz
LEARN = 240  # two minutes of 1 s windows at 50 % overlap
DRAIN_S = 0.05


class FakeClock:
    """Emulated time in whole microseconds, so sample periods add up exactly."""

    def __init__(self) -> None:
        self.us = 0

    def __call__(self) -> float:
        return self.us / 1e6

    def sleep(self, seconds: float) -> None:
        self.us += round(seconds * 1e6)


async def offload(fn: Callable[[], None]) -> None:
    fn()


class Motor:
    """The emulated ADXL345 on a 50 Hz motor (the emulator's default: 0.3 g at 50 Hz on
    x, 0.1 g on y, a 0.05 g tone at 120 Hz on z, 5 mg of noise), drained every 50 ms
    into a pipeline with vibration and anomaly stages."""

    def __init__(self, state_dir: Path, **anomaly: Any) -> None:
        self.clock = FakeClock()
        self.model = Vibration(seed=7)
        bus = SimI2CBus()
        bus.attach(0x53, ADXL345Sim(vibration=self.model, clock=self.clock))
        self.driver = ADXL345(bus, 0x53, RATE_HZ, 16, sleep=self.clock.sleep)
        self.driver.init()
        seqs = SeqStore(state_dir / "seq.json", offload)
        seqs.load()
        stages = TypeAdapter(cfg.Stages).validate_python([
            {"stage": "vibration", "machine_class": "II", "window_s": 1.0, "overlap": 0.5},
            {"stage": "anomaly", "learn_windows": LEARN, **anomaly},
        ])
        self.queue = MessageQueue(QueueConfig(memory_max_messages=100_000))
        self.pipeline = Pipeline("pi-1", "pump", build_steps(stages), "gw/pi-1/telemetry/pump",
                                 1, seqs, self.queue, state_dir=state_dir)

    async def run(self, seconds: float) -> list[dict[str, Any]]:
        """The readings of ``seconds`` of running."""
        out: list[dict[str, Any]] = []
        for _ in range(round(seconds / DRAIN_S)):
            self.clock.sleep(DRAIN_S)
            batch = self.driver.read_fifo()
            await self.pipeline.push_samples(self.clock(), batch.samples, batch.rate_hz,
                                             batch.overflow)
            while self.queue.depth:
                message = await self.queue.take()
                self.queue.ack(message)
                out += json.loads(message.payload)["readings"]
        return out


def scores(readings: list[dict[str, Any]]) -> list[float]:
    return [r["anomaly_score"] for r in readings]


def learned(motor: Motor) -> list[dict[str, Any]]:
    readings = asyncio.run(motor.run(LEARN / 2 + 1))
    assert [r["anomaly_state"] for r in readings] == ["learning"] * LEARN + ["ok"]
    assert "anomaly_score" not in readings[0]
    return readings


def test_a_new_bearing_tone_scores_above_5_within_10_windows(tmp_path: Path) -> None:
    motor = Motor(tmp_path)
    learned(motor)
    normal = scores(asyncio.run(motor.run(30)))
    motor.model.tones.append(Tone("z", 157.0, 0.05))
    changed = scores(asyncio.run(motor.run(5)))  # 10 windows
    assert max(normal) < 3
    assert changed[-1] > 5 and min(changed[2:]) > 5, changed


def test_half_as_much_vibration_again_scores_above_5_within_10_windows(tmp_path: Path
                                                                       ) -> None:
    motor = Motor(tmp_path)
    learned(motor)
    motor.model.tones[:] = [tone._replace(amplitude_g=tone.amplitude_g * 1.5)
                            for tone in motor.model.tones]
    changed = scores(asyncio.run(motor.run(5)))
    assert changed[-1] > 5 and min(changed[2:]) > 5, changed


def test_an_hour_of_normal_running_stays_below_3(tmp_path: Path) -> None:
    motor = Motor(tmp_path)
    learned(motor)
    hour = scores(asyncio.run(motor.run(3600)))
    assert len(hour) == 7200
    assert max(hour) < 3, sorted(hour)[-10:]


def test_the_baseline_survives_a_restart_and_changed_settings_learn_again(tmp_path: Path
                                                                          ) -> None:
    learned(Motor(tmp_path))
    assert (tmp_path / ANOMALY_DIR / "pump.json").exists()
    # The next process scores from its first window.
    again = asyncio.run(Motor(tmp_path).run(10))
    assert [r["anomaly_state"] for r in again] == ["ok"] * 19
    assert max(scores(again)) < 3
    # Raising relearn (or any other setting) learns anew.
    relearn = asyncio.run(Motor(tmp_path, relearn=1).run(10))
    assert {r["anomaly_state"] for r in relearn} == {"learning"}


def test_a_rebuilt_pipeline_goes_on_learning(tmp_path: Path) -> None:
    motor = Motor(tmp_path)
    first = asyncio.run(motor.run(LEARN / 4 + 0.5))
    stages = TypeAdapter(cfg.Stages).validate_python([
        {"stage": "vibration", "machine_class": "III", "window_s": 1.0, "overlap": 0.5},
        {"stage": "anomaly", "learn_windows": LEARN},
        {"stage": "ema", "alpha": 0.5},
    ])
    asyncio.run(motor.pipeline.retune(build_steps(stages)))
    rest = asyncio.run(motor.run(LEARN / 4 + 1))
    states = [r["anomaly_state"] for r in first + rest]
    # One window is lost with the vibration stage's samples at the swap.
    assert states.count("learning") == LEARN and states[-1] == "ok"


def test_scoring_allocates_nothing(tmp_path: Path) -> None:
    motor = Motor(tmp_path)
    learned(motor)
    anomaly = motor.pipeline._steps.anomaly
    assert anomaly is not None
    pool: Pool[Record] = Pool(Record, 1)
    record = pool.acquire()
    record.values.update(accel_rms_g_x=0.21, accel_rms_g_y=0.07, accel_rms_g_z=0.035,
                         accel_peak_g=0.31, crest_factor=1.45, dominant_hz=50.0)
    anomaly.process(record, pool)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(2000):
            anomaly.process(record, pool)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The score itself is a new float each window, and numpy's call machinery has a few
    # hundred bytes in flight; but no array: not even one row of the spectrum (201 bins),
    # and nothing that grows.
    assert current - start <= 64
    assert peak - start < 8 * 201
