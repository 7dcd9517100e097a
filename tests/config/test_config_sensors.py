"""The rules a sensor model holds for its fields together, and the MQTT section's: each on
its own line, in the order of the file's sensors; an ADXL345's FIFO limit is its driver's."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.adxl345 import DRAIN_BY_SAMPLES, FIFO_DEPTH, drain_problem
from gateway.cli import main

TEXT = """\
device_id: d
home_assistant: {enabled: true}
mqtt:
  brokers: ["mqtt://h"]
  password_file: pw
  backoff: {initial_s: 5, max_s: 1}
sensors:
  - name: m.a
    driver: adxl345
    bus: 1
    rate_hz: 3200
    interval_s: 0.05
    sim: {nack_rate: 0.1}
    health: {degrade_after_errors: 5, fail_after_errors: 2}
    pipeline:
      - {stage: vibration, machine_class: II, window_s: 0.004}
  - name: m_a
    driver: sht3x
    bus: sim
    interval_s: 1
    sim: {tones: []}
"""


def test_every_rule_broken_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(TEXT)
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:13: sensors.0.sim: emulator settings need bus: sim",
        f"{path}:14: sensors.0.health.fail_after_errors: must be at least degrade_after_errors",
        f"{path}:16: sensors.0.pipeline.0.window_s: 12.8 samples per window at 3200 Hz; "
        "at least 16 are needed",
        f"{path}:12: sensors.0.interval_s: the FIFO holds 32 samples, 0.01 s at 3200 Hz: "
        "drain it at least every 0.0078125 s",
        f"{path}:17: sensors.1.name: 'm_a' and 'm.a' are the same sensor to Home Assistant "
        "('m_a'): rename one",
        f"{path}:21: sensors.1.sim.tones: only an adxl345 has tones",
        f"{path}:5: mqtt.password_file: needs mqtt.username",
        f"{path}:6: mqtt.backoff.max_s: must be at least initial_s",
    ]


@pytest.mark.parametrize("rate_hz", [100, 800, 3200])
def test_the_fifo_is_drained_before_it_fills(rate_hz: int) -> None:
    # Draining at the limit leaves room in the FIFO; just past it is refused.
    limit = DRAIN_BY_SAMPLES / rate_hz
    assert DRAIN_BY_SAMPLES < FIFO_DEPTH
    assert drain_problem(rate_hz, limit) is None
    assert drain_problem(rate_hz, limit * 1.01) is not None
