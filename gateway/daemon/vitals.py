"""Whether this process is well enough to keep a new firmware release: the uplink connected,
every sensor ok since a good reading (but those not ok before the update), and the config
it was given remotely running: no stored layer set aside now. Asked at each check, not
fixed at start: a release that cannot run the fleet's config fails its trial (the release
before it runs the layer again), and one where a newer update or a SIGHUP cleared the layer
set aside can pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from gateway.sampling.health import SensorHealth, State
from gateway.uplink.supervisor import Uplink


class Vitals:
    def __init__(self, uplink: Uplink, health: Mapping[str, SensorHealth],
                 config_problem: Callable[[], str | None]) -> None:
        self._uplink = uplink
        self._health = health
        self._config_problem = config_problem

    def trial_problem(self, excused: frozenset[str]) -> str | None:
        """Why this process would fail a firmware trial now, or None."""
        if not self._uplink.up.is_set():
            return f"uplink not connected ({self._uplink.last_error or 'connecting'})"
        if (problem := self._config_problem()) is not None:
            return f"remote config layers invalid: {problem}"
        now = time.time()
        for name, health in sorted(self._health.items()):
            if name in excused:
                continue
            if health.last_ok_ts is None:
                return f"sensor {name}: no good reading yet"
            if (state := health.state(now)) is not State.OK:
                return f"sensor {name}: {state.value}"
        return None

    def unwell(self) -> frozenset[str]:
        now = time.time()
        return frozenset(name for name, health in self._health.items()
                         if health.last_ok_ts is None or health.state(now) is not State.OK)
