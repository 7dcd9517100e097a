"""Each stage's semantics on hand-computed cases, one stage at a time."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from gateway.config import stages as cfg
from gateway.pipeline import stages
from gateway.pipeline.batch import Batch
from gateway.pipeline.pool import Pool, Record
from gateway.pipeline.vibration_stage import Vibration

STAGES = TypeAdapter(cfg.Stages)


def config(**fields: Any) -> Any:
    (stage,) = STAGES.validate_python([fields])
    return stage


def record(pool: Pool[Record], ts: float = 0.0, **values: float) -> Record:
    rec = pool.acquire()
    rec.ts = ts
    rec.values.update(values)
    return rec


def run(stage: stages.Step, pool: Pool[Record], readings: list[tuple[float, dict[str, float]]]
        ) -> list[tuple[float, dict[str, float]] | None]:
    """What ``stage`` hands on for each reading (None when it holds or drops it); what it
    hands on goes back to the pool, as the next stage would see to."""
    out: list[tuple[float, dict[str, float]] | None] = []
    for ts, values in readings:
        passed = stage.process(record(pool, ts, **values), pool)
        if passed is None:
            out.append(None)
        else:
            out.append((passed.ts, dict(passed.values)))
            pool.release(passed)
    return out


@pytest.fixture
def pool() -> Pool[Record]:
    return Pool(Record, 8)


def test_calibrate_scales_then_offsets_named_quantities_only(pool: Pool[Record]) -> None:
    stage = stages.Calibrate(config(stage="calibrate", scale={"temperature_c": 2},
                                    offset={"temperature_c": 1, "humidity_rh": -5}))
    out = run(stage, pool, [(1.0, {"temperature_c": 20.0, "humidity_rh": 50.0,
                                   "pressure_hpa": 1000.0})])
    assert out == [(1.0, {"temperature_c": 41.0, "humidity_rh": 45.0, "pressure_hpa": 1000.0})]


def test_range_drop_removes_the_quantity_and_drops_an_emptied_reading(
    pool: Pool[Record],
) -> None:
    stage = stages.Range(config(stage="range", min={"temperature_c": -40},
                                max={"temperature_c": 85, "humidity_rh": 100}))
    out = run(stage, pool, [
        (1.0, {"temperature_c": 85.0, "humidity_rh": 40.0}),
        (2.0, {"temperature_c": 85.5, "humidity_rh": 40.0}),
        (3.0, {"temperature_c": -41.0}),
    ])
    assert out == [(1.0, {"temperature_c": 85.0, "humidity_rh": 40.0}),
                   (2.0, {"humidity_rh": 40.0}), None]
    assert pool.in_use == 0


def test_range_flag_keeps_the_value_and_names_it(pool: Pool[Record]) -> None:
    stage = stages.Range(config(stage="range", max={"humidity_rh": 100}, action="flag"))
    passed = stage.process(record(pool, 1.0, humidity_rh=104.0, temperature_c=20.0), pool)
    assert passed is not None
    assert passed.values == {"humidity_rh": 104.0, "temperature_c": 20.0}
    assert passed.out_of_range == ["humidity_rh"]


def test_median_rejects_a_spike_shorter_than_half_the_window(pool: Pool[Record]) -> None:
    stage = stages.Median(config(stage="median", window=3))
    values = [1.0, 100.0, 2.0, 3.0, 4.0, -50.0, 5.0]
    out = run(stage, pool, [(float(i), {"t": v}) for i, v in enumerate(values)])
    # Windows: [1] [1 100] [1 100 2] [100 2 3] [2 3 4] [3 4 -50] [4 -50 5]; before the
    # window fills, the lower median of what was seen.
    assert [o[1]["t"] for o in out if o] == [1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 4.0]


def test_median_keeps_one_window_per_quantity(pool: Pool[Record]) -> None:
    stage = stages.Median(config(stage="median", window=3))
    out = run(stage, pool, [(0.0, {"a": 5.0}), (1.0, {"b": 7.0}), (2.0, {"a": 1.0, "b": 9.0}),
                            (3.0, {"a": 3.0, "b": 8.0})])
    assert [o[1] for o in out if o] == [{"a": 5.0}, {"b": 7.0}, {"a": 1.0, "b": 7.0},
                                        {"a": 3.0, "b": 8.0}]


def test_ema(pool: Pool[Record]) -> None:
    stage = stages.Ema(config(stage="ema", alpha=0.5))
    out = run(stage, pool, [(0.0, {"t": 10.0}), (1.0, {"t": 20.0}), (2.0, {"t": 20.0})])
    assert [o[1]["t"] for o in out if o] == [10.0, 15.0, 17.5]


def test_ema_alpha_one_is_the_input(pool: Pool[Record]) -> None:
    stage = stages.Ema(config(stage="ema", alpha=1))
    out = run(stage, pool, [(0.0, {"t": 10.0}), (1.0, {"t": -3.0})])
    assert [o[1]["t"] for o in out if o] == [10.0, -3.0]


def test_deadband_passes_changes_beyond_delta_or_after_max_silence(pool: Pool[Record]) -> None:
    stage = stages.Deadband(config(stage="deadband", delta={"t": 0.5}, max_silence_s=60))
    out = run(stage, pool, [
        (0.0, {"t": 20.0}),    # first reading
        (10.0, {"t": 20.4}),   # 0.4 from 20.0: held
        (20.0, {"t": 20.6}),   # 0.6 from 20.0: passes
        (30.0, {"t": 20.1}),   # 0.5 is not beyond 0.5: held
        (79.0, {"t": 20.6}),   # 59 s since 20.0: held
        (80.0, {"t": 20.6}),   # 60 s: passes
        (81.0, {"t": 20.6, "h": 99.0}),  # h is not named: held
    ])
    assert [o[0] if o else None for o in out] == [0.0, None, 20.0, None, None, 80.0, None]


def test_deadband_passes_on_zone_change_and_on_a_clock_stepped_back(pool: Pool[Record]) -> None:
    stage = stages.Deadband(config(stage="deadband", delta={"v": 1}, max_silence_s=60))
    first = record(pool, 100.0, v=1.0)
    first.zone = "A"
    assert stage.process(first, pool) is first
    changed = record(pool, 101.0, v=1.0)
    changed.zone = "B"
    assert stage.process(changed, pool) is changed
    stepped_back = record(pool, 50.0, v=1.0)
    stepped_back.zone = "B"
    assert stage.process(stepped_back, pool) is stepped_back


def test_deadband_flush_hands_on_only_the_newest_held_reading(pool: Pool[Record]) -> None:
    stage = stages.Deadband(config(stage="deadband", delta={"t": 1}, max_silence_s=60))
    run(stage, pool, [(0.0, {"t": 1.0}), (1.0, {"t": 1.1}), (2.0, {"t": 1.2})])
    assert pool.in_use == 1
    held = stage.flush(pool)
    assert held is not None
    assert (held.ts, held.values) == (2.0, {"t": 1.2})
    assert stage.flush(pool) is None


def test_average_of_every_n_readings(pool: Pool[Record]) -> None:
    stage = stages.Average(config(stage="average", every=3))
    out = run(stage, pool, [(0.0, {"t": 1.0, "h": 10.0}), (1.0, {"t": 2.0}),
                            (2.0, {"t": 6.0, "h": 20.0}), (3.0, {"t": 5.0})])
    assert out == [None, None, (2.0, {"t": 3.0, "h": 15.0}), None]
    partial = stage.flush(pool)
    assert partial is not None
    assert (partial.ts, partial.values) == (3.0, {"t": 5.0})
    assert stage.flush(pool) is None


def test_average_keeps_the_worst_zone_and_every_flag(pool: Pool[Record]) -> None:
    stage = stages.Average(config(stage="average", every=2))
    first = record(pool, 0.0, v=9.0)
    first.zone = "D"
    first.out_of_range.append("v")
    assert stage.process(first, pool) is None
    second = record(pool, 1.0, v=1.0)
    second.zone = "A"
    out = stage.process(second, pool)
    assert out is not None
    assert (out.values, out.zone, out.out_of_range) == ({"v": 5.0}, "D", ["v"])


def test_downsample_passes_the_first_of_every_n(pool: Pool[Record]) -> None:
    stage = stages.Downsample(config(stage="downsample", every=3))
    out = run(stage, pool, [(float(i), {"t": float(i)}) for i in range(7)])
    assert [o[0] for o in out if o] == [0.0, 3.0, 6.0]
    assert pool.in_use == 0


def test_vibration_stage_rates_a_wtvb01_reading(pool: Pool[Record]) -> None:
    stage = Vibration(config(stage="vibration", machine_class="II"))
    passed = stage.process(record(pool, 0.0, velocity_x_mm_s=1.0, velocity_y_mm_s=-2.5,
                                  velocity_z_mm_s=0.3, temperature_c=30.0), pool)
    assert passed.values["velocity_rms_mm_s"] == 2.5
    assert passed.values["temperature_c"] == 30.0
    assert passed.zone == "B"
    partial = stage.process(record(pool, 1.0, velocity_x_mm_s=9.0), pool)
    assert "velocity_rms_mm_s" not in partial.values
    assert partial.zone is None


class Sent:
    def __init__(self) -> None:
        self.groups: list[list[float]] = []

    def __call__(self, records: list[Record]) -> None:
        self.groups.append([r.ts for r in records])


def test_batch_sends_at_max_readings_and_at_max_delay(pool: Pool[Record]) -> None:
    sent = Sent()
    batch = Batch(3, 5.0, pool, sent)
    for ts in (0.0, 1.0, 2.0, 10.0, 14.9, 15.0, 16.0):
        batch.add(record(pool, ts))
    assert sent.groups == [[0.0, 1.0, 2.0], [10.0, 14.9]]
    assert batch.deadline() == 20.0
    batch.expire(19.9)
    assert len(sent.groups) == 2
    batch.expire(20.0)
    assert sent.groups[2:] == [[15.0, 16.0]]
    assert batch.deadline() is None
    assert pool.in_use == 0


def test_batch_ends_a_group_when_the_clock_steps_back(pool: Pool[Record]) -> None:
    sent = Sent()
    batch = Batch(10, 60.0, pool, sent)
    batch.add(record(pool, 1000.0))
    batch.add(record(pool, 10.0))
    batch.flush()
    assert sent.groups == [[1000.0], [10.0]]


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"stage": "median", "window": 4}, "odd"),
        ({"stage": "median", "window": 1}, "greater than or equal to 3"),
        ({"stage": "ema", "alpha": 0}, "greater than 0"),
        ({"stage": "ema", "alpha": 1.5}, "less than or equal to 1"),
        ({"stage": "range", "min": {"t": 5}, "max": {"t": 4}}, "max is below min"),
        ({"stage": "range", "action": "drop"}, "at least one quantity"),
        ({"stage": "deadband", "delta": {}, "max_silence_s": 60}, "at least 1 item"),
        ({"stage": "deadband", "delta": {"t": -1}, "max_silence_s": 60}, "greater than or equal"),
        ({"stage": "vibration", "machine_class": "V"}, "'I', 'II', 'III' or 'IV'"),
        ({"stage": "vibration", "machine_class": "I", "band_low_hz": 1000, "band_high_hz": 10},
         "band_high_hz"),
        ({"stage": "batch", "max_readings": 0, "max_delay_s": 1}, "greater than or equal to 1"),
        ({"stage": "average", "every": 4, "extra": 1}, "Extra inputs"),
        ({"stage": "smooth"}, "does not match any of the expected tags"),
    ],
)
def test_invalid_stage_settings_are_rejected(stage: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        STAGES.validate_python([stage])


@pytest.mark.parametrize(
    ("stages_", "message"),
    [
        ([{"stage": "ema", "alpha": 0.5}, {"stage": "vibration", "machine_class": "I"}],
         "vibration stage must be the first"),
        ([{"stage": "batch", "max_readings": 2, "max_delay_s": 1}, {"stage": "ema", "alpha": 1}],
         "batch stage must be the last"),
        ([{"stage": "batch", "max_readings": 2, "max_delay_s": 1}] * 2, "at most one batch"),
    ],
)
def test_stage_order_is_checked(stages_: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        STAGES.validate_python(stages_)
