"""Staged rollout, decided on the device and reproducible anywhere (docs/PROTOCOL.md
section 6.4).

A device's bucket is a hash of the release's salt and its id, so each release draws its own
cohort (the salt defaults to ``CHANNEL:VERSION``), the same device always lands in the same
bucket for a release, and raising the percentage only adds devices. The operator's
``rollout`` computes the same function to know which devices should answer.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000


def default_salt(channel: str, version: str) -> str:
    """The salt of a manifest that gives none."""
    return f"{channel}:{version}"


def bucket(salt: str, device_id: str) -> int:
    """The device's place in a rollout, 0 to 9999."""
    digest = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def eligible(percent: float, salt: str, device_id: str) -> bool:
    """Whether a rollout at ``percent`` includes the device."""
    return bucket(salt, device_id) < percent * 100
