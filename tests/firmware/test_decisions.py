"""The firmware task's decisions, pure: what the record found at start means, and what a
manifest ``manifest.decide`` accepted does given the work under way."""

from __future__ import annotations

from gateway.firmware import decisions, manifest
from gateway.firmware.decisions import (
    Enter,
    Halt,
    Judge,
    NotEligible,
    Refuse,
    Resume,
    RollBack,
    Start,
    Wait,
    Work,
)
from gateway.firmware.download import Limits
from gateway.firmware.settings import Running, Settings
from gateway.firmware.state import Record, Release, Seen, Trial
from gateway.wire import FirmwareState

SETTINGS = Settings("dev-1", "gw", "stable", 10, 3, 1, Limits(), 0)
LAUNCHED = Running("1.0", "a", launched=True)
BY_HAND = Running("1.0", "a", launched=False)
RELEASE = Release("2.0", "https://example.net/2.0.tar.gz", "0" * 64, 100)
SEEN = Seen(1000.0, "2.0")


def test_at_start_a_trial_is_judged_by_the_slot_on_trial_only() -> None:
    trial = Trial("b", "a", 1, 3)
    record = Record(FirmwareState.AWAITING_HEALTH, version="2.0", active="b", trial=trial)
    assert decisions.on_start(record, SETTINGS, Running("2.0", "b", launched=True)) == Judge(
        trial)
    assert decisions.on_start(record, SETTINGS, Running("1.0", "b", launched=False)) == RollBack(
        f"the new slot did not run: {decisions.LAUNCHER_NEEDED}")


def test_at_start_work_is_resumed_only_when_it_still_may_go_on() -> None:
    downloading = Record(FirmwareState.DOWNLOADING, version="2.0", release=RELEASE)
    assert decisions.on_start(downloading, SETTINGS, LAUNCHED) == Resume(RELEASE)
    assert decisions.on_start(downloading, SETTINGS, BY_HAND) == Enter(
        FirmwareState.FAILED, f"cannot activate: {decisions.LAUNCHER_NEEDED}")
    halted = downloading.saw("stable", Seen(1000.0, "2.0", halted=True))
    assert decisions.on_start(halted, SETTINGS, LAUNCHED) == Enter(FirmwareState.IDLE, "halted")
    refused = Record(FirmwareState.INSTALLING, version="2.0", release=RELEASE, refused="2.0")
    assert decisions.on_start(refused, SETTINGS, LAUNCHED) == Enter(FirmwareState.IDLE)
    assert decisions.on_start(Record(FirmwareState.COMMITTED), SETTINGS, LAUNCHED) is None


def test_a_manifest_waits_while_a_release_installs_or_is_on_trial() -> None:
    act = manifest.Act(RELEASE, SEEN)
    on_trial = Record(FirmwareState.AWAITING_HEALTH)
    assert decisions.on_manifest(act, on_trial, Work(), False, LAUNCHED) == Wait()
    installing = Record(FirmwareState.INSTALLING, release=RELEASE)
    assert decisions.on_manifest(act, installing, Work(RELEASE), True, LAUNCHED) == Wait()
    # A record left installing by a process that is gone: nothing installs now.
    assert decisions.on_manifest(act, installing, Work(), False, LAUNCHED) == Start(RELEASE)
    assert decisions.on_manifest(manifest.Known(SEEN), on_trial, Work(), False,
                                 LAUNCHED) is None


def test_a_halt_stops_only_the_release_it_names() -> None:
    halt = manifest.Halt("2.0", Seen(1000.0, "2.0", halted=True))
    idle = Record()
    assert decisions.on_manifest(halt, idle, Work(RELEASE), True, LAUNCHED) == Halt("2.0")
    assert decisions.on_manifest(halt, idle, Work(None, RELEASE, SEEN), False,
                                 LAUNCHED) == Halt("2.0")
    other = Release("3.0", "https://example.net/3.0.tar.gz", "1" * 64, 100)
    assert decisions.on_manifest(halt, idle, Work(other), True, LAUNCHED) is None
    assert decisions.on_manifest(halt, idle, Work(), False, LAUNCHED) is None


def test_not_eligible_is_entered_once() -> None:
    verdict = manifest.NotEligible("2.0", SEEN)
    assert decisions.on_manifest(verdict, Record(), Work(), False, LAUNCHED) == NotEligible(
        "2.0", enter=True)
    already = Record(FirmwareState.NOT_ELIGIBLE, version="2.0")
    assert decisions.on_manifest(verdict, already, Work(), False, LAUNCHED) == NotEligible(
        "2.0", enter=False)


def test_a_release_at_work_or_waiting_for_its_retry_is_not_started_twice() -> None:
    act = manifest.Act(RELEASE, SEEN)
    idle = Record()
    assert decisions.on_manifest(act, idle, Work(RELEASE), True, LAUNCHED) is None
    assert decisions.on_manifest(act, idle, Work(None, RELEASE, SEEN), False, LAUNCHED) is None
    # A newer-issued manifest of the same release does not wait for the retry.
    newer = manifest.Act(RELEASE, Seen(2000.0, "2.0"))
    assert decisions.on_manifest(newer, idle, Work(None, RELEASE, SEEN), False,
                                 LAUNCHED) == Start(RELEASE)
    assert decisions.on_manifest(act, idle, Work(), False, BY_HAND) == Refuse(
        f"cannot activate: {decisions.LAUNCHER_NEEDED}", "2.0")
