"""The one exception of trust: an envelope or payload refused, with the reason a device reports.

A device must answer every message from the broker, forged or broken ones included, with a
state report rather than a crash; one exception type with a short, fixed-vocabulary reason
makes "anything else is a bug" checkable (the fuzz tests assert exactly that).
"""

from __future__ import annotations


class Rejected(Exception):
    """``reason`` is one line, e.g. ``bad signature`` or ``malformed payload: version: ...``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
