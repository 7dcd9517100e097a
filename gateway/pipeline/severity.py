"""Vibration severity zones of ISO 10816-1 from velocity RMS (mm/s, 10-1000 Hz).

A: newly commissioned; B: fine for unrestricted long-term operation; C: tolerable for a
limited period only; D: severe enough to cause damage. The boundaries depend on the
machine class; a value on a boundary belongs to the better zone.
"""

from __future__ import annotations

from typing import Literal

MachineClass = Literal["I", "II", "III", "IV"]

# Upper limits of zones A, B and C in mm/s (ISO 10816-1, Annex B).
ZONE_LIMITS_MM_S: dict[MachineClass, tuple[float, float, float]] = {
    "I": (0.71, 1.8, 4.5),
    "II": (1.12, 2.8, 7.1),
    "III": (1.8, 4.5, 11.2),
    "IV": (2.8, 7.1, 18.0),
}

ZONES = "ABCD"


def zone(velocity_rms_mm_s: float, machine_class: MachineClass) -> str:
    for name, limit in zip(ZONES, ZONE_LIMITS_MM_S[machine_class], strict=False):
        if velocity_rms_mm_s <= limit:
            return name
    return "D"


def worse(a: str | None, b: str | None) -> str | None:
    """The more severe of two zones, either of which may be unknown."""
    if a is None:
        return b
    if b is None:
        return a
    # The zone letters sort in order of severity.
    return max(a, b)
