"""Which quantities a sensor's telemetry carries, known from its configuration alone.

A consumer that describes the telemetry ahead of the first message (Home Assistant's
discovery) must know them before any reading: they follow from the driver, and from a
``vibration`` stage, which turns an ADXL345's raw samples into window features and adds
the overall velocity and its severity zone to a WTVB01's readings. The other stages change
values, drop readings or group them, never the quantities. The driver table mirrors each
driver's ``read``; a Modbus device's quantities are its registers' names, in the order the
file lists them. Tests hold both to what the drivers and stages really produce.
"""

from __future__ import annotations

from gateway.config.models import ModbusSensor, Sensor
from gateway.config.stages import Vibration
from gateway.pipeline.vibration_stage import VELOCITY_AXES

AXES = ("x", "y", "z")


def _axes(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.format(axis) for axis in AXES)


DRIVER_QUANTITIES: dict[str, tuple[str, ...]] = {
    "sht3x": ("temperature_c", "humidity_rh"),
    "xymd02": ("temperature_c", "humidity_rh"),
    "bme280": ("temperature_c", "humidity_rh", "pressure_hpa"),
    "ds18b20": ("temperature_c",),
    "adxl345": _axes("accel_{}_g"),
    "wtvb01": (
        *_axes("accel_{}_g"),
        *_axes("velocity_{}_mm_s"),
        "temperature_c",
        *_axes("displacement_{}_um"),
        *_axes("frequency_{}_hz"),
    ),
}

ZONE = "zone"
"""The ISO 10816 severity zone, a letter A-D: the one quantity that is not a number."""

WINDOW_FEATURES = (
    *_axes("accel_rms_g_{}"),
    "accel_peak_g",
    "crest_factor",
    "dominant_hz",
    "velocity_rms_mm_s",
    ZONE,
)
"""What a vibration stage makes of each window of raw accelerometer samples."""

VELOCITY_SEVERITY = ("velocity_rms_mm_s", ZONE)
"""What a vibration stage adds to readings that carry velocity per axis (a WTVB01's);
readings of other sensors pass it unchanged."""


def quantities(sensor: Sensor) -> tuple[str, ...]:
    """The quantities ``sensor``'s telemetry readings carry, in a stable order."""
    if isinstance(sensor, ModbusSensor):
        raw = tuple(register.name for register in sensor.registers)
    else:
        raw = DRIVER_QUANTITIES[sensor.driver]
    if not any(isinstance(stage, Vibration) for stage in sensor.pipeline):
        return raw
    if sensor.driver == "adxl345":
        return WINDOW_FEATURES
    if set(VELOCITY_AXES) <= set(raw):
        return (*raw, *VELOCITY_SEVERITY)
    return raw
