"""The device configuration's models, now in ``gateway.config.sensors`` (being split)."""

from gateway.config.sensors import *  # noqa: F403
