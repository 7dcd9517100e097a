"""Which quantities a sensor's telemetry carries, known from its configuration alone.

A consumer that describes the telemetry ahead of the first message (Home Assistant's
discovery) must know them before any reading, and so must the check of an alarm, which
may only watch a quantity its sensor produces: they follow from the driver, from a
``vibration`` stage, which turns an ADXL345's raw samples into window features and adds
the overall velocity and its severity zone to a WTVB01's readings, and from an
``anomaly`` stage, which adds a score and a state to each window. The other stages
change values, drop readings or group them, never the quantities. The driver table
mirrors each driver's ``read``; a Modbus device's quantities are its registers' names, in
the order the file lists them. Tests hold both to what the drivers and stages really
produce.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config.sensors import ModbusSensor, Sensor
from gateway.config.stages import Anomaly, Stage, Vibration

AXES = ("x", "y", "z")


def _axes(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.format(axis) for axis in AXES)


VELOCITY_AXES = _axes("velocity_{}_mm_s")
"""A WTVB01's velocity per axis, from which a vibration stage takes the overall one."""

DRIVER_QUANTITIES: dict[str, tuple[str, ...]] = {
    "sht3x": ("temperature_c", "humidity_rh"),
    "xymd02": ("temperature_c", "humidity_rh"),
    "bme280": ("temperature_c", "humidity_rh", "pressure_hpa"),
    "ds18b20": ("temperature_c",),
    "adxl345": _axes("accel_{}_g"),
    "wtvb01": (
        *_axes("accel_{}_g"),
        *VELOCITY_AXES,
        "temperature_c",
        *_axes("displacement_{}_um"),
        *_axes("frequency_{}_hz"),
    ),
}

ZONE = "zone"
"""The ISO 10816 severity zone, a letter A-D."""

ANOMALY_SCORE = "anomaly_score"
ANOMALY_STATE = "anomaly_state"
"""``learning`` while an anomaly stage learns its baseline, then ``ok``."""

LABELS = (ZONE, ANOMALY_STATE)
"""The quantities that are words, not numbers: no alarm can compare them."""

WINDOW_FEATURES = (
    *_axes("accel_rms_g_{}"),
    "accel_peak_g",
    "crest_factor",
    "dominant_hz",
    "velocity_rms_mm_s",
    ZONE,
)
"""What a vibration stage makes of each window of raw accelerometer samples."""

ANOMALY = (ANOMALY_SCORE, ANOMALY_STATE)
"""What an anomaly stage adds to each window's features."""

VELOCITY_SEVERITY = ("velocity_rms_mm_s", ZONE)
"""What a vibration stage adds to readings that carry velocity per axis (a WTVB01's);
readings of other sensors pass it unchanged."""


def produced(driver: str, raw: tuple[str, ...], pipeline: Sequence[Stage]
             ) -> tuple[str, ...]:
    """The quantities the readings of a ``driver`` reading ``raw`` carry through
    ``pipeline``, in a stable order."""
    if not any(isinstance(stage, Vibration) for stage in pipeline):
        return raw
    if driver == "adxl345":
        if any(isinstance(stage, Anomaly) for stage in pipeline):
            return (*WINDOW_FEATURES, *ANOMALY)
        return WINDOW_FEATURES
    if set(VELOCITY_AXES) <= set(raw):
        return (*raw, *VELOCITY_SEVERITY)
    return raw


def quantities(sensor: Sensor) -> tuple[str, ...]:
    """The quantities ``sensor``'s telemetry readings carry, in a stable order."""
    if isinstance(sensor, ModbusSensor):
        raw = tuple(register.name for register in sensor.registers)
    else:
        raw = DRIVER_QUANTITIES[sensor.driver]
    return produced(sensor.driver, raw, sensor.pipeline)
