"""Configuration models of the pipeline stages (``sensors[].pipeline``).

Per-quantity settings are maps from quantity name to number; a quantity a stage does not
name passes through it unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from gateway.config.fields import Interval
from gateway.config.section import Section

Quantity = Annotated[str, Field(min_length=1)]


class Calibrate(Section):
    """``value * scale + offset`` per quantity."""

    stage: Literal["calibrate"]
    offset: dict[Quantity, float] = {}
    scale: dict[Quantity, float] = {}


class Range(Section):
    """Plausibility bounds per quantity, inclusive. ``drop`` removes an out-of-range
    quantity from its reading (a reading left empty is dropped); ``flag`` keeps it and
    names it in the reading's ``out_of_range`` list."""

    stage: Literal["range"]
    min: dict[Quantity, float] = {}
    max: dict[Quantity, float] = {}
    action: Literal["drop", "flag"] = "drop"

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if not self.min and not self.max:
            raise ValueError("give min or max for at least one quantity")
        for quantity, low in self.min.items():
            if quantity in self.max and self.max[quantity] < low:
                raise ValueError(f"{quantity}: max is below min")
        return self


class Median(Section):
    """Each value replaced by the median of its last ``window`` values: one spike shorter
    than half the window never reaches the output."""

    stage: Literal["median"]
    window: int = Field(ge=3, le=99)

    @model_validator(mode="after")
    def _odd(self) -> Self:
        if self.window % 2 == 0:
            raise ValueError("window must be odd, so the median is one of the values")
        return self


class Ema(Section):
    """Exponential moving average: ``y = alpha * x + (1 - alpha) * y_previous``."""

    stage: Literal["ema"]
    alpha: float = Field(gt=0, le=1)


class Deadband(Section):
    """A reading passes when a quantity named in ``delta`` moved by more than its delta
    since the last reading that passed, or ``max_silence_s`` after that reading."""

    stage: Literal["deadband"]
    delta: dict[Quantity, Annotated[float, Field(ge=0)]] = Field(min_length=1)
    max_silence_s: Interval


class Average(Section):
    """One reading per ``every`` readings: the mean of each quantity over them."""

    stage: Literal["average"]
    every: int = Field(ge=2, le=10_000)


class Downsample(Section):
    """Every ``every``-th reading passes; the others are dropped."""

    stage: Literal["downsample"]
    every: int = Field(ge=2, le=10_000)


class Vibration(Section):
    """Vibration features per window of accelerometer samples, and the ISO 10816-1
    severity zone of the velocity RMS for a machine class (I small machines up to 15 kW,
    II medium, III large on rigid foundations, IV large on soft foundations)."""

    stage: Literal["vibration"]
    machine_class: Literal["I", "II", "III", "IV"]
    # Long windows cost memory on a small Pi: 3 axes x rate x window_s doubles, a few times.
    window_s: float = Field(1.0, gt=0, le=10)
    overlap: float = Field(0.5, ge=0, le=0.9)
    band_low_hz: float = Field(10.0, gt=0)
    band_high_hz: float = Field(1000.0, gt=0)

    @model_validator(mode="after")
    def _band(self) -> Self:
        if self.band_high_hz <= self.band_low_hz:
            raise ValueError("band_high_hz must be above band_low_hz")
        return self


class Anomaly(Section):
    """A learned baseline of the vibration stage's window features (log RMS per axis,
    peak, crest factor, dominant frequency, and the energy of ``bands`` log-spaced bands
    of the spectrum within the vibration stage's band), and each window's distance from
    it. ``learn_windows`` defaults to an hour of windows; raising ``relearn`` (or any
    other change of the settings) learns anew."""

    stage: Literal["anomaly"]
    learn_windows: int | None = Field(None, ge=50, le=1_000_000)
    bands: int = Field(8, ge=2, le=32)
    relearn: int = Field(0, ge=0)


class Batch(Section):
    """Readings grouped into one telemetry message, sent when it holds ``max_readings``
    or its first reading is ``max_delay_s`` old."""

    stage: Literal["batch"]
    max_readings: int = Field(ge=1, le=1000)
    max_delay_s: Interval


Stage = Annotated[
    Calibrate | Range | Median | Ema | Deadband | Average | Downsample | Vibration | Anomaly
    | Batch,
    Field(discriminator="stage"),
]


def check_order(stages: list[Stage]) -> list[Stage]:
    """Raw samples enter at the vibration stage and messages leave at the batch stage,
    so each may appear once, vibration first and batch last; an anomaly stage reads the
    spectrum of the window the vibration stage just analysed, so it comes right after."""
    names: list[str] = [stage.stage for stage in stages]
    for name, index in (("vibration", 0), ("batch", len(names) - 1)):
        if names.count(name) > 1:
            raise ValueError(f"at most one {name} stage")
        if name in names and names.index(name) != index:
            raise ValueError(f"the {name} stage must be the {'first' if index == 0 else 'last'}")
    if names.count("anomaly") > 1:
        raise ValueError("at most one anomaly stage")
    if "anomaly" in names and names[: names.index("anomaly")] != ["vibration"]:
        raise ValueError("the anomaly stage must come right after a vibration stage")
    return stages


Stages = Annotated[list[Stage], AfterValidator(check_order)]
