"""How ``rollout`` judges a step, from what devices published: which devices it expects an
answer from, what counts as failed or silent, and when the failure rate halts it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from packaging.version import Version

from gateway.firmware.rollout import default_salt, eligible
from gateway.operator.fleet import Fleet
from gateway.operator.mqtt import Received
from gateway.operator.rollout import Plan, Watch, parse_steps

V = Version("1.0.0")
SALT = default_salt("stable", "1.0.0")
PLAN = Plan(prefix="gw", channel="stable", version=V, steps=(100,), soak_s=1,
            max_failure_rate=0.2, min_reports=3, report_timeout_s=10, settle_s=1)


class Devices:
    def __init__(self) -> None:
        self.fleet = Fleet("gw")
        self.watch = Watch(PLAN, SALT, self.fleet)

    def put(self, device: str, kind: str, body: dict[str, Any], retained: bool = False) -> None:
        self.fleet.take(Received(f"gw/{device}/{kind}", json.dumps(body).encode(), retained),
                        0.0)

    def online(self, device: str, version: str = "0.9.0", channel: str = "stable") -> None:
        self.put(device, "status", {"state": "online", "version": version}, retained=True)
        self.put(device, "heartbeat", {"firmware": {"version": version, "channel": channel}})

    def state(self, device: str, state: str, version: str = "1.0.0",
              reason: str | None = None) -> None:
        self.put(device, "firmware/state", {"version": version, "state": state,
                                            "reason": reason, "progress": None})


def test_the_rate_is_judged_only_once_min_reports_devices_reported() -> None:
    fleet = Devices()
    for n in range(5):
        fleet.online(f"d{n}")
    fleet.state("d0", "rolled_back", reason="health check failed")
    fleet.state("d1", "failed", reason="sha256 mismatch")
    tally = fleet.watch.tally(100, now=1.0)
    assert (tally.eligible, tally.failed, tally.judged, tally.pending) == (5, 2, 2, 3)
    assert not tally.halts(PLAN)  # 100 % failed, but only 2 of the 3 needed reported
    fleet.state("d2", "committed")
    tally = fleet.watch.tally(100, now=1.0)
    assert tally.halts(PLAN)
    assert tally.failures == (("d0", "rolled_back: health check failed"),
                              ("d1", "failed: sha256 mismatch"))
    assert tally.why(PLAN) == ("2 failed and 0 silent of 3 reported: "
                               "failure rate 67% above 20%")


def test_the_rate_halts_only_above_the_maximum() -> None:
    fleet = Devices()
    for n in range(7):
        fleet.online(f"d{n}")
    fleet.state("d0", "rolled_back")
    for n in range(1, 5):
        fleet.state(f"d{n}", "committed")
    tally = fleet.watch.tally(100, now=1.0)
    assert (tally.failure_rate, tally.halts(PLAN)) == (0.2, False)
    fleet.state("d5", "failed")
    assert fleet.watch.tally(100, now=1.0).halts(PLAN)


def test_an_expected_device_without_an_outcome_turns_silent_after_the_timeout() -> None:
    fleet = Devices()
    fleet.online("d0")
    fleet.state("d0", "awaiting_health")
    assert fleet.watch.tally(100, now=100.0).pending == 1
    assert fleet.watch.tally(100, now=110.0).pending == 1
    # A bricked device: its last will says offline; it stays expected and falls silent.
    fleet.put("d0", "status", {"state": "offline", "reason": "connection lost"})
    tally = fleet.watch.tally(100, now=110.5)
    assert (tally.silent, tally.pending, tally.judged) == (1, 0, 1)
    assert tally.failures == (("d0", "silent for 10 s (last said awaiting_health)"),)
    fleet.state("d0", "committed")  # a late answer still counts
    assert fleet.watch.tally(100, now=200.0).committed == 1


def test_offline_devices_are_expected_only_with_an_outcome() -> None:
    fleet = Devices()
    fleet.put("away", "status", {"state": "offline", "reason": "shutdown"}, retained=True)
    fleet.put("away", "firmware/state", {"version": "0.9.0", "state": "committed"},
              retained=True)
    fleet.put("gone", "status", {"state": "offline"}, retained=True)
    fleet.put("gone", "firmware/state", {"version": "1.0.0", "state": "rolled_back"},
              retained=True)
    tally = fleet.watch.tally(100, now=1000.0)
    # "away" is in no known channel and never spoke of 1.0.0; "gone" rolled it back once.
    assert (tally.eligible, tally.failed, tally.silent) == (1, 1, 0)


def test_who_belongs_to_the_release() -> None:
    fleet = Devices()
    fleet.online("beta", channel="beta")
    fleet.online("newer", version="1.1.0")
    fleet.online("has-it", version="1.0.0")
    fleet.online("older-release-done")
    fleet.state("older-release-done", "committed", version="0.9.0")
    fleet.put("unnamed", "firmware/state", {"version": "1.0.0", "state": "downloading"})
    assert sorted(d.id for d in fleet.watch.members()) == [
        "has-it", "older-release-done", "unnamed"]
    tally = fleet.watch.tally(100, now=1.0)
    assert (tally.eligible, tally.committed, tally.pending) == (3, 1, 2)


def test_eligibility_is_the_devices_formula() -> None:
    fleet = Devices()
    names = [f"gw-{n}" for n in range(300)]
    for name in names:
        fleet.online(name)
    for percent in (1, 10, 33.3, 50, 100):
        expected = sum(eligible(percent, SALT, name) for name in names)
        assert fleet.watch.tally(percent, now=1.0).eligible == expected
    assert 0 < sum(eligible(10, SALT, n) for n in names) < 300


def test_steps() -> None:
    assert parse_steps("1,10,50,100") == (1, 10, 50, 100)
    assert parse_steps("0.5, 2.5") == (0.5, 2.5)
    for bad, message in (("10,5", "steps must rise"), ("0,10", "above 0"),
                         ("50,101", "at most 100"), ("1,,2", "not a percentage"),
                         ("10,10", "steps must rise")):
        with pytest.raises(ValueError, match=message):
            parse_steps(bad)
