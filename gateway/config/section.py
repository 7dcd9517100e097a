"""The base of every configuration model."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors, values are not coerced across types, models are immutable,
    and every float is finite (``gateway.config.fields`` says why).

    Validators are built on a model's first use, not at import: the file is validated by
    ``Config``'s alone, and a section's own is seldom needed (0.4 MiB spared).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True,
                              allow_inf_nan=False)
