"""The base of every configuration model."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors, values are not coerced across types, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
