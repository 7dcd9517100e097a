"""Configuration models of the pipeline stages (``sensors[].pipeline``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gateway.section import Section


class Calibrate(Section):
    """``value * scale + offset`` per quantity; quantities not named pass unchanged."""

    stage: Literal["calibrate"]
    offset: dict[str, float] = {}
    scale: dict[str, float] = {}


Stage = Annotated[Calibrate, Field(discriminator="stage")]
