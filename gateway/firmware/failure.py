"""Why an update of one release did not go through, and whether it ever could.

A version is refused for good only for what will not change: the bundle's bytes (a sha256
mismatch after a complete download, a bundle that is not valid, a size the server does not
have) or what the release itself says (it does not import, it refuses this device's
configuration). Everything about the device and the way there (out of space, a killed or
timed-out install step, the network, the state directory) may be different next time: the
version stays eligible and is tried again after ``Backoff``, at once after a restart or a
newer manifest. Any step raises ``Failure`` with ``permanent`` saying which.
"""

from __future__ import annotations

from dataclasses import dataclass


class Failure(Exception):
    """Why an attempt at a release failed (``reason``, as reported) and whether the
    version is refused for it (``permanent``) or tried again."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next try after ``failures`` transient failures in a row:
    ``first_s``, doubling, at most ``max_s``."""

    first_s: float = 60.0
    max_s: float = 3600.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` transient failures in a row."""
        doublings = min(max(failures - 1, 0), 32)  # past the cap long before, and no overflow
        return float(min(self.max_s, self.first_s * 2 ** doublings))
