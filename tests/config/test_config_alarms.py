"""``check-config`` refuses a broken alarm with its line: a quantity the sensor does not
produce (or that is not a number), ``above`` with ``below`` (or neither), a negative
hysteresis, a name used twice; and an anomaly stage anywhere but right after the vibration
stage of an ADXL345."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

TEXT = """\
device_id: d
mqtt:
  brokers: ["mqtt://h"]
sensors:
  - name: cabinet
    driver: sht3x
    bus: sim
    interval_s: 1
    alarms:
      - name: overheat
        quantity: temperature_c
        above: 40
        below: 5
      - name: wet
        quantity: pressure_hpa
        above: 1000
      - name: overheat
        quantity: humidity_rh
        above: 90
        hysteresis: -2
      - name: silent
        quantity: humidity_rh
  - name: pump
    driver: adxl345
    bus: sim
    rate_hz: 400
    interval_s: 0.05
    pipeline:
      - {stage: vibration, machine_class: II}
      - {stage: anomaly}
    alarms:
      - {name: drift, quantity: anomaly_score, above: 5}
      - {name: zone, quantity: zone, above: 1}
  - name: shaker
    driver: wtvb01
    port: sim
    interval_s: 1
    pipeline:
      - {stage: vibration, machine_class: II}
      - {stage: anomaly}
"""


def test_broken_alarms_each_on_their_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(TEXT)
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:20: sensors.0.alarms.2.hysteresis: Input should be greater than or equal to 0",
    ]
    path.write_text(TEXT.replace("        hysteresis: -2\n", ""))
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:13: sensors.0.alarms.0.below: give above or below, not both",
        f"{path}:15: sensors.0.alarms.1.quantity: this sensor does not produce "
        "'pressure_hpa' (it has temperature_c, humidity_rh)",
        f"{path}:17: sensors.0.alarms.2.name: duplicate alarm name 'overheat'",
        f"{path}:20: sensors.0.alarms.3.above: give above or below",
        f"{path}:32: sensors.1.alarms.1.quantity: 'zone' is not a number",
        f"{path}:39: sensors.2.pipeline.1.stage: an anomaly stage needs the raw samples of "
        "an adxl345",
    ]


def test_a_good_alarm_and_one_on_the_anomaly_score_pass(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    text = TEXT.split("    alarms:\n", 1)[0] + """\
    alarms:
      - {name: overheat, quantity: temperature_c, above: 40, hysteresis: 2, on_delay_s: 10,
         off_delay_s: 30, severity: critical}
      - {name: frost, quantity: temperature_c, below: 2}
  - name: pump
    driver: adxl345
    bus: sim
    rate_hz: 400
    interval_s: 0.05
    pipeline:
      - {stage: vibration, machine_class: II}
      - {stage: anomaly, learn_windows: 600, relearn: 2}
      - {stage: deadband, delta: {anomaly_score: 1}, max_silence_s: 60}
    alarms:
      - {name: drift, quantity: anomaly_score, above: 5, severity: info}
"""
    path.write_text(text)
    assert main(["check-config", str(path)]) == 0


AFTER_VIBRATION = "the anomaly stage must come right after a vibration stage"


@pytest.mark.parametrize(("pipeline", "message"), [
    ("[{stage: anomaly}, {stage: vibration, machine_class: II}]",
     "the vibration stage must be the first"),
    ("[{stage: vibration, machine_class: II}, {stage: ema, alpha: 0.5}, {stage: anomaly}]",
     AFTER_VIBRATION),
    ("[{stage: anomaly}]", AFTER_VIBRATION),
])
def test_the_anomaly_stage_comes_right_after_vibration(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], pipeline: str, message: str
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(f"""\
device_id: d
mqtt: {{brokers: ["mqtt://h"]}}
sensors:
  - {{name: pump, driver: adxl345, bus: sim, rate_hz: 400, interval_s: 0.05,
     pipeline: {pipeline}}}
""")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:5: sensors.0.pipeline: {message}"]
