"""Vibration features against the analytic values of emulated sines."""

from __future__ import annotations

import asyncio
import json
import math
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

from drivers.adxl345 import ADXL345
from drivers.sim.adxl345 import ADXL345Sim
from drivers.sim.i2c import SimI2CBus
from drivers.sim.vibration import Axis, Tone, Vibration
from gateway.config import stages as cfg
from gateway.config.models import QueueConfig
from gateway.pipeline import severity
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.seq import SeqStore
from gateway.pipeline.vibration import Features, SampleWindows, as_xyz
from gateway.uplink.queue import MessageQueue

G = 9.80665
RATE_HZ = 3200.0


def velocity_rms_mm_s(amplitude_g: float, freq_hz: float) -> float:
    """A sine of amplitude A (g) at f integrates to a velocity of amplitude A*g/(2*pi*f)."""
    return amplitude_g * G / (2 * math.pi * freq_hz) / math.sqrt(2) * 1000


def samples(model: Vibration, seconds: float, rate_hz: float = RATE_HZ) -> list[float]:
    return [v for k in range(round(seconds * rate_hz)) for v in model.sample(k / rate_hz)]


def windows_of(flat: list[float], rate_hz: float = RATE_HZ, window_s: float = 1.0,
               overlap: float = 0.0, band: tuple[float, float] = (10.0, 1000.0)
               ) -> list[tuple[Features, float]]:
    stream = SampleWindows(rate_hz, window_s, overlap, *band)
    found: list[tuple[Features, float]] = []
    stream.feed(len(flat) / 3 / rate_hz, flat, lambda f, ts: found.append((f, ts)))
    return found


@pytest.mark.parametrize(("axis", "freq_hz", "amplitude_g"), [
    ("x", 50.0, 0.3), ("y", 123.4, 0.05), ("z", 17.3, 1.5), ("x", 800.7, 0.8),
    ("y", 312.25, 0.01),
])
def test_features_of_a_sine_on_top_of_gravity(axis: Axis, freq_hz: float,
                                              amplitude_g: float) -> None:
    model = Vibration(tones=[Tone(axis, freq_hz, amplitude_g, phase=0.3)], noise_g=0.0)
    ((features, ts),) = windows_of(samples(model, 1.0))
    index = "xyz".index(axis)
    rms = amplitude_g / math.sqrt(2)
    assert features.rms_g[index] == pytest.approx(rms, rel=0.01)
    # The 1 g of gravity on z is DC and gone.
    assert [r for i, r in enumerate(features.rms_g) if i != index] == pytest.approx([0, 0],
                                                                                   abs=1e-9)
    assert abs(features.dominant_hz - freq_hz) <= 1.0  # one bin of a 1 s window
    # A window holding a fraction of a cycle has a mean of its own, which shifts the peak.
    assert features.peak_g == pytest.approx(amplitude_g, rel=0.02)
    assert features.crest_factor == pytest.approx(math.sqrt(2), rel=0.03)
    assert features.velocity_rms_mm_s == pytest.approx(velocity_rms_mm_s(amplitude_g, freq_hz),
                                                       rel=0.02)
    assert ts == 1.0


def test_velocity_is_limited_to_the_band() -> None:
    slow = Vibration(tones=[Tone("x", 4.0, 0.5)], noise_g=0.0)
    ((below, _),) = windows_of(samples(slow, 2.0), window_s=2.0)
    assert below.dominant_hz == pytest.approx(4.0, abs=0.5)
    assert below.velocity_rms_mm_s < 0.01 * velocity_rms_mm_s(0.5, 4.0)
    ((wide, _),) = windows_of(samples(slow, 2.0), window_s=2.0, band=(2.0, 1000.0))
    assert wide.velocity_rms_mm_s == pytest.approx(velocity_rms_mm_s(0.5, 4.0), rel=0.02)


def test_velocity_of_two_tones_adds_in_quadrature() -> None:
    model = Vibration(tones=[Tone("y", 40.0, 0.2), Tone("y", 160.0, 0.4)], noise_g=0.0)
    ((features, _),) = windows_of(samples(model, 1.0))
    expected = math.hypot(velocity_rms_mm_s(0.2, 40.0), velocity_rms_mm_s(0.4, 160.0))
    assert features.velocity_rms_mm_s == pytest.approx(expected, rel=0.02)
    assert features.dominant_hz == 160.0


def test_overlapping_windows_and_their_timestamps() -> None:
    model = Vibration(noise_g=0.0)
    stream = SampleWindows(1000.0, 0.5, 0.5, 10.0, 1000.0)
    assert (stream.size, stream.hop) == (500, 250)
    flat = samples(model, 2.0, rate_hz=1000.0)
    stamps: list[float] = []
    for start in range(0, 2000, 90):  # bursts that do not line up with windows
        burst = flat[start * 3 : (start + 90) * 3]
        ts_end = 10.0 + (start + len(burst) // 3 - 1) / 1000.0
        stream.feed(ts_end, burst, lambda _, ts: stamps.append(round(ts, 9)))
    # The last sample of a window of samples 0..499 is sample 499, at 10.499 s.
    assert stamps == [10.499, 10.749, 10.999, 11.249, 11.499, 11.749, 11.999]


def test_a_window_too_short_for_a_spectrum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        SampleWindows(100.0, 0.1, 0.5, 10.0, 1000.0)


def test_samples_as_flat_buffer_or_triples() -> None:
    assert as_xyz(array("f", [1, 2, 3, 4, 5, 6])).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert as_xyz([(1.0, 2.0, 3.0)]).tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match="interleaved"):
        as_xyz([1.0, 2.0])
    assert as_xyz(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize(("machine_class", "velocity", "zone"), [
    ("I", 0.71, "A"), ("I", 0.72, "B"), ("I", 1.8, "B"), ("I", 4.5, "C"), ("I", 4.6, "D"),
    ("II", 1.12, "A"), ("II", 2.8, "B"), ("II", 7.0, "C"), ("II", 7.2, "D"),
    ("III", 1.7, "A"), ("III", 4.4, "B"), ("III", 11.2, "C"), ("III", 11.3, "D"),
    ("IV", 2.8, "A"), ("IV", 7.1, "B"), ("IV", 18.0, "C"), ("IV", 18.1, "D"),
])
def test_iso_10816_1_zones(machine_class: severity.MachineClass, velocity: float,
                           zone: str) -> None:
    assert severity.zone(velocity, machine_class) == zone


class FakeClock:
    def __init__(self) -> None:
        self.us = 0

    def __call__(self) -> float:
        return self.us / 1e6

    def sleep(self, seconds: float) -> None:
        self.us += round(seconds * 1e6)


async def offload(fn: Callable[[], None]) -> None:
    fn()


def adxl345_pipeline(tmp_path: Path) -> tuple[ADXL345, FakeClock, Pipeline]:
    clock = FakeClock()
    bus = SimI2CBus()
    bus.attach(0x53, ADXL345Sim(vibration=Vibration(), clock=clock))
    driver = ADXL345(bus, 0x53, RATE_HZ, 16, sleep=clock.sleep)
    seqs = SeqStore(tmp_path / "seq.json", offload)
    seqs.load()
    stages = TypeAdapter(cfg.Stages).validate_python([
        {"stage": "vibration", "machine_class": "II", "window_s": 1.0, "overlap": 0.5},
        {"stage": "batch", "max_readings": 10, "max_delay_s": 60},
    ])
    pipeline = Pipeline("pi-1", "pump", build_steps(stages), "gw/pi-1/telemetry/pump", 1,
                        seqs, MessageQueue(QueueConfig()))
    return driver, clock, pipeline


async def stream(driver: ADXL345, clock: FakeClock, pipeline: Pipeline, seconds: float,
                 every_s: float = 0.005) -> None:
    for _ in range(round(seconds / every_s)):
        clock.sleep(every_s)
        batch = driver.read_fifo()
        await pipeline.push_samples(clock(), batch.samples, batch.rate_hz, batch.overflow)


async def readings(pipeline: Pipeline) -> list[dict[str, Any]]:
    await pipeline.flush()
    queue = pipeline._queue
    out = []
    while queue.depth:
        message = await queue.take()
        queue.ack(message)
        out.extend(json.loads(message.payload)["readings"])
    return out


def test_adxl345_fifo_bursts_to_telemetry(tmp_path: Path) -> None:
    """The emulated motor: 0.3 g at 50 Hz on x, 0.1 g on y, 0.05 g at 120 Hz on z, noise."""
    driver, clock, pipeline = adxl345_pipeline(tmp_path)
    driver.init()
    assert pipeline.takes_samples

    async def scenario() -> list[dict[str, Any]]:
        await stream(driver, clock, pipeline, 3.0)
        return await readings(pipeline)

    out = asyncio.run(scenario())
    # Windows end at 1.0, 1.5, ... 3.0 s, give or take the drain that completed them.
    assert [round(r["ts"] * 2) / 2 for r in out] == [1.0, 1.5, 2.0, 2.5, 3.0]
    for reading in out:
        assert reading["accel_rms_g_x"] == pytest.approx(0.3 / math.sqrt(2), rel=0.01)
        assert reading["accel_rms_g_y"] == pytest.approx(0.1 / math.sqrt(2), rel=0.01)
        assert reading["accel_rms_g_z"] == pytest.approx(0.05 / math.sqrt(2), rel=0.05)
        assert reading["dominant_hz"] == pytest.approx(50.0, abs=1.0)
        assert reading["velocity_rms_mm_s"] == pytest.approx(velocity_rms_mm_s(0.3, 50.0),
                                                             rel=0.02)
        assert reading["zone"] == "C"
    assert pipeline.stats().pool.in_use == 0


def test_a_fifo_overrun_abandons_the_window_in_progress(tmp_path: Path) -> None:
    driver, clock, pipeline = adxl345_pipeline(tmp_path)
    driver.init()

    async def scenario() -> list[dict[str, Any]]:
        await stream(driver, clock, pipeline, 0.6)
        clock.sleep(0.1)  # the FIFO overflows: samples are lost
        await stream(driver, clock, pipeline, 1.2)
        return await readings(pipeline)

    out = asyncio.run(scenario())
    stats = pipeline.stats()
    assert stats.windows_discarded == 1
    # The first window starts after the gap (~0.7 s) and fills a second later.
    assert [round(r["ts"], 1) for r in out] == [1.7]


def test_a_malformed_burst_is_counted_and_the_stream_restarts(tmp_path: Path) -> None:
    _, _, pipeline = adxl345_pipeline(tmp_path)
    flat = samples(Vibration(noise_g=0.0), 1.5)

    async def scenario() -> list[dict[str, Any]]:
        await pipeline.push_samples(0.5, flat[: 1600 * 3], RATE_HZ)
        await pipeline.push_samples(0.6, [1.0, 2.0], RATE_HZ)
        await pipeline.push_samples(1.1, flat[1600 * 3 :], RATE_HZ)
        return await readings(pipeline)

    # Without the restart the first 1600 samples would have completed a window at 0.6 s.
    assert [r["ts"] for r in asyncio.run(scenario())] == [1.1]
    stats = pipeline.stats()
    assert (stats.failed, stats.windows_discarded) == (1, 1)
