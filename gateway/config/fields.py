"""Field types the configuration models share: names that go into topics, paths, and
durations with an upper bound.

A signed remote layer can set any of these, so a value must be harmless as well as
well-formed: ``Section`` refuses inf and nan for every float (JSON's ``1e999`` reads as
infinity, YAML has ``.inf``), and a duration is bounded, so that no setting can leave a
sensor or a timer waiting for ever while its health still says ``ok``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""Names that appear in topics: no MQTT wildcards, separators or whitespace."""

TopicName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]

FilePath = Annotated[Path, Field(strict=False)]
"""A path as YAML writes it, a string; relative ones are anchored by the loader."""

DAY_S = 86400.0
HOUR_S = 3600.0

Interval = Annotated[float, Field(gt=0, le=DAY_S)]
"""Seconds between two things that recur (samples, heartbeats, retries): at most a day."""

Timeout = Annotated[float, Field(gt=0, le=HOUR_S)]
"""Seconds a step may take before it is given up: at most an hour."""

Location = tuple[str | int, ...]

Problem = tuple[Location, str]
"""A rule that spans fields, broken: where (as pydantic writes a location) and why."""
