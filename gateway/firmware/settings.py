"""What the firmware task is told: its settings, taken from the config at every reload, and
what this process runs, fixed for its life.

Both are plain values shared by the task's parts (the decisions, the job, the trial), so
none of them reads the config or the environment itself. The topics come from
``gateway.wire``, which the operator's ``release`` and ``rollout`` use too: a device and the
tool that publishes its manifests cannot spell them differently.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import wire
from gateway.config.models import Config
from gateway.firmware.download import Limits


@dataclass(frozen=True)
class Settings:
    """The firmware settings the task follows: the channel, the trial's bounds, how often a
    download reports progress, the download's limits and the space an update leaves free."""

    device_id: str
    topic_prefix: str
    channel: str
    health_timeout_s: float
    max_trial_boots: int
    progress_interval_s: float
    limits: Limits
    reserve_bytes: int

    @classmethod
    def of(cls, config: Config) -> Settings:
        """The settings a config gives."""
        firmware = config.firmware
        return cls(config.device_id, config.mqtt.topic_prefix, firmware.channel,
                   firmware.health_timeout_s, firmware.max_trial_boots,
                   firmware.progress_interval_s,
                   Limits(firmware.min_rate_bytes_s, firmware.stall_timeout_s),
                   firmware.reserve_bytes)

    @property
    def manifest_topic(self) -> str:
        """The followed channel's manifest topic."""
        return wire.manifest_topic(self.topic_prefix, self.channel)

    @property
    def state_topic(self) -> str:
        """This device's firmware state topic."""
        return wire.firmware_state_topic(self.topic_prefix, self.device_id)


@dataclass(frozen=True)
class Running:
    """What this process runs: its version, its slot (None: the base install), and whether
    the launcher started it (only then can a release be activated)."""

    version: str
    slot: str | None
    launched: bool
