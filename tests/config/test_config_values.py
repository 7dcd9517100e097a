"""Values a signed layer could set: every float finite, every duration at most its bound.

JSON's ``1e999`` reads as infinity and YAML writes ``.inf`` and ``.nan``; a sensor whose
``interval_s`` is infinite would never sample again while its health said ``ok``.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from gateway.cli import main
from gateway.config import alarms, fields, models, mqtt, sensors, stages
from gateway.config.file import ConfigError, parse, validate
from gateway.config.section import Section

# Every float setting of every section, set (floats written as floats, integers as ints).
FULL: dict[str, Any] = {
    "device_id": "dev-1",
    "mqtt": {
        "brokers": ["mqtt://127.0.0.1:1883"],
        "connect_timeout_s": 5.0,
        "backoff": {"initial_s": 0.5, "max_s": 30.0},
        "max_publish_rate": 50.0,
        "shutdown_flush_s": 2.0,
    },
    "queue": {"spill_after_s": 1.5},
    "heartbeat": {"interval_s": 30.0},
    "remote_config": {"apply_timeout_s": 20.0},
    "firmware": {"health_timeout_s": 60.0, "install_timeout_s": 600.0,
                 "progress_interval_s": 2.0, "min_rate_bytes_s": 4096.0,
                 "stall_timeout_s": 20.0},
    "sensors": [
        {
            "name": "room", "driver": "sht3x", "bus": "sim", "interval_s": 1.5,
            "health": {"stale_after_intervals": 4.0, "retry_max_s": 120.0},
            "sim": {"nack_rate": 0.1, "corrupt_crc_rate": 0.1, "no_answer_rate": 0.1},
            "pipeline": [
                {"stage": "calibrate", "offset": {"temperature_c": -0.5},
                 "scale": {"temperature_c": 1.5}},
                {"stage": "range", "min": {"temperature_c": -40.0},
                 "max": {"temperature_c": 85.0}},
                {"stage": "ema", "alpha": 0.5},
                {"stage": "deadband", "delta": {"temperature_c": 0.5}, "max_silence_s": 60.0},
                {"stage": "batch", "max_readings": 5, "max_delay_s": 10.0},
            ],
            "alarms": [
                {"name": "hot", "quantity": "temperature_c", "above": 40.0, "hysteresis": 2.0,
                 "on_delay_s": 10.0, "off_delay_s": 30.0},
                {"name": "cold", "quantity": "temperature_c", "below": 2.0},
            ],
        },
        {
            "name": "motor", "driver": "adxl345", "bus": "sim", "rate_hz": 800,
            "interval_s": 0.02,
            "sim": {"tones": [{"axis": "x", "freq_hz": 50.0, "amplitude_g": 0.3}]},
            "pipeline": [{"stage": "vibration", "machine_class": "II", "window_s": 1.0,
                          "overlap": 0.5, "band_low_hz": 10.0, "band_high_hz": 400.0}],
        },
        {"name": "line", "driver": "xymd02", "port": "sim", "interval_s": 5.0,
         "timeout_s": 0.5},
    ],
}


def float_leaves(data: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(data, dict):
        items: Any = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        if isinstance(data, float):
            yield path
        return
    for key, value in items:
        yield from float_leaves(value, (*path, key))


def replaced(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    data = copy.deepcopy(FULL)
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


def holds_float(annotation: object) -> bool:
    if annotation is float:
        return True
    return any(holds_float(arg) for arg in typing.get_args(annotation))


def sections(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from sections(arg)


def float_fields() -> set[str]:
    """The names of the float fields of every section model, by walking the models."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [models.Config]
    for module in (models, mqtt, sensors, stages, alarms):
        todo += [m for m in vars(module).values()
                 if isinstance(m, type) and issubclass(m, Section) and m is not Section]
    while todo:
        model = todo.pop()
        if model in seen or isinstance(model, types.GenericAlias):
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            if holds_float(info.annotation):
                names.add(name)
            todo += sections(info.annotation)
    return names


def test_the_full_config_is_valid_and_names_every_float_field() -> None:
    validate(FULL, "layer")
    written = {path[-1] if isinstance(path[-1], str) else "" for path in float_leaves(FULL)}
    # Maps of quantity to number: the leaf's parent key is the setting.
    written |= {path[-2] for path in float_leaves(FULL) if isinstance(path[-2], str)}
    assert float_fields() <= written


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_no_float_setting_takes_inf_or_nan(value: float) -> None:
    paths = list(float_leaves(FULL))
    assert len(paths) > 30
    for path in paths:
        with pytest.raises(ConfigError) as caught:
            validate(replaced(path, value), "layer")
        [issue] = caught.value.issues
        assert issue.message == "must be a finite number", path
        assert issue.field.endswith(".".join(str(p) for p in path[-1:])), (path, issue.field)


def test_a_signed_layer_with_an_infinite_interval_is_refused() -> None:
    # What JSON's 1e999 reads as, in a remote layer (no file lines to give).
    data = replaced(("sensors", 0, "interval_s"), float("inf"))
    with pytest.raises(ConfigError) as caught:
        validate(data, "remote")
    assert [str(issue) for issue in caught.value.issues] == [
        "remote: sensors.0.sht3x.interval_s: must be a finite number"]


def test_check_config_gives_the_line_of_an_infinite_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("device_id: dev-1\nmqtt:\n  brokers: [mqtt://127.0.0.1:1883]\n"
                    "sensors:\n  - name: room\n    driver: sht3x\n    bus: sim\n"
                    "    interval_s: .inf\nheartbeat:\n  interval_s: .nan\n")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:8: sensors.0.interval_s: must be a finite number",
        f"{path}:10: heartbeat.interval_s: must be a finite number",
    ]


BOUNDED = [
    (("sensors", 0, "interval_s"), fields.DAY_S),
    (("sensors", 0, "health", "retry_max_s"), fields.DAY_S),
    (("sensors", 0, "pipeline", 3, "max_silence_s"), fields.DAY_S),
    (("sensors", 0, "pipeline", 4, "max_delay_s"), fields.DAY_S),
    (("heartbeat", "interval_s"), fields.DAY_S),
    (("queue", "spill_after_s"), fields.DAY_S),
    (("mqtt", "backoff", "initial_s"), fields.DAY_S),
    (("firmware", "install_timeout_s"), fields.DAY_S),
    (("sensors", 0, "alarms", 0, "on_delay_s"), fields.DAY_S),
    (("sensors", 0, "alarms", 0, "off_delay_s"), fields.DAY_S),
    (("mqtt", "connect_timeout_s"), fields.HOUR_S),
    (("mqtt", "shutdown_flush_s"), fields.HOUR_S),
    (("remote_config", "apply_timeout_s"), fields.HOUR_S),
    (("firmware", "health_timeout_s"), fields.HOUR_S),
    (("firmware", "progress_interval_s"), fields.HOUR_S),
    (("firmware", "stall_timeout_s"), fields.HOUR_S),
]


@pytest.mark.parametrize(("path", "bound"), BOUNDED)
def test_durations_are_bounded(path: tuple[str | int, ...], bound: float) -> None:
    data = replaced(path, bound)
    if path == ("mqtt", "backoff", "initial_s"):
        data["mqtt"]["backoff"]["max_s"] = bound
    validate(data, "layer")
    text = yaml.safe_dump(replaced(path, bound + 1), sort_keys=False)
    with pytest.raises(ConfigError) as caught:
        parse(text, "gw.yaml")
    [issue] = caught.value.issues
    assert issue.field == ".".join(map(str, path))
    assert issue.message == f"Input should be less than or equal to {bound:g}"
    assert issue.line is not None
