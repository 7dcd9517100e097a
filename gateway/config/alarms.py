"""Alarm models (``sensors[].alarms``): a threshold on one quantity of a sensor.

An alarm is raised when its quantity stays beyond ``above`` (or ``below``) for
``on_delay_s``, and cleared when it stays back past the threshold by ``hysteresis`` for
``off_delay_s``. The rules that need the sensor (the quantity must be one it produces)
or the whole list (names unique) are checked with the sensor, in ``problems``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config.fields import DAY_S, Location, Problem, TopicName
from gateway.config.section import Section
from gateway.config.stages import Quantity

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")

class Alarm(Section):
    name: TopicName
    quantity: Quantity
    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(0.0, ge=0)
    on_delay_s: float = Field(0.0, ge=0, le=DAY_S)
    off_delay_s: float = Field(0.0, ge=0, le=DAY_S)
    severity: Severity = "warning"

    @property
    def threshold(self) -> float:
        """The limit it watches, ``above`` or ``below``."""
        limit = self.above if self.above is not None else self.below
        assert limit is not None, "checked by problems"
        return limit


def problems(alarms: list[Alarm], produced: tuple[str, ...], labels: tuple[str, ...]
             ) -> list[Problem]:
    """What a sensor's ``alarms`` get wrong, located inside the sensor: ``produced`` are
    the quantities its readings carry, ``labels`` those of them that are not numbers."""
    found: list[Problem] = []
    seen: set[str] = set()
    for index, alarm in enumerate(alarms):
        at: Location = ("alarms", index)
        if alarm.name in seen:
            found.append(((*at, "name"), f"duplicate alarm name {alarm.name!r}"))
        seen.add(alarm.name)
        if alarm.quantity not in produced:
            found.append(((*at, "quantity"),
                          f"this sensor does not produce {alarm.quantity!r} "
                          f"(it has {', '.join(q for q in produced if q not in labels)})"))
        elif alarm.quantity in labels:
            found.append(((*at, "quantity"), f"{alarm.quantity!r} is not a number"))
        if alarm.above is not None and alarm.below is not None:
            found.append(((*at, "below"), "give above or below, not both"))
        elif alarm.above is None and alarm.below is None:
            found.append(((*at, "above"), "give above or below"))
    return found
