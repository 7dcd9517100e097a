"""The firmware task in process: what the daemon gives it (a host that takes its reports,
answers for its health and counts the restarts it asks for) faked, a manifest as the uplink
hands it over, and a wait on the event loop with a deadline. The updater, its record on disk
and the download from a real HTTP server are the real ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Host:
    """``updater.Host``: the reports, parsed, in order; healthy unless ``problem`` says
    why not."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    restarts: int = 0
    problem: str | None = None

    def report(self, topic: str, payload: bytes) -> None:
        self.reports.append(json.loads(payload))

    def health(self, excused: frozenset[str]) -> str | None:
        return self.problem

    def unwell(self) -> frozenset[str]:
        return frozenset()

    def restart(self) -> None:
        self.restarts += 1


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes | None


async def until(condition: Callable[[], Any], what: str, within: float = 20) -> Any:
    """``condition()`` once it is true; AssertionError naming ``what`` after ``within`` s."""
    try:
        async with asyncio.timeout(within):
            while True:
                if result := condition():
                    return result
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None
