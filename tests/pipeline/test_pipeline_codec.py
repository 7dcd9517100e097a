"""The pipeline's telemetry encoder against ``json``."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline import codec
from gateway.pipeline.pool import Record

finite = st.floats(allow_nan=False, allow_infinity=False)
readings = st.lists(
    st.tuples(finite, st.dictionaries(st.text(min_size=1, max_size=12),
                                      st.floats(allow_nan=True, allow_infinity=True),
                                      max_size=6)),
    min_size=1, max_size=8,
)


def records(data: list[tuple[float, dict[str, float]]]) -> list[Record]:
    out = []
    for ts, values in data:
        record = Record()
        record.ts = ts
        record.values.update(values)
        out.append(record)
    return out


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10),
       st.integers(min_value=0, max_value=2**53), readings)
def test_same_payload_as_json_without_non_finite_values(
    device: str, sensor: str, seq: int, data: list[tuple[float, dict[str, float]]]
) -> None:
    encoder = codec.ReadingsEncoder()
    encoder.encode(records([(0.0, {"warm": 1.0})]))  # the buffer is reused, not appended to
    payload = codec.telemetry_message(codec.telemetry_head(device, sensor), seq,
                                      encoder.encode(records(data)))
    expected = [{"ts": ts, **{q: v for q, v in values.items() if math.isfinite(v)}}
                for ts, values in data]
    assert json.loads(payload) == json.loads(codec.telemetry(device, sensor, seq, expected))


def test_zone_and_out_of_range_are_written_when_set() -> None:
    (record,) = records([(5.5, {"velocity_rms_mm_s": 3.0, "accel_peak_g": 20.0})])
    record.zone = "C"
    record.out_of_range.append("accel_peak_g")
    assert json.loads(codec.ReadingsEncoder().encode([record])) == [
        {"ts": 5.5, "velocity_rms_mm_s": 3.0, "accel_peak_g": 20.0, "zone": "C",
         "out_of_range": ["accel_peak_g"]}]
