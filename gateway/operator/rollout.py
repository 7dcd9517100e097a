"""``edge-gateway rollout``: a released manifest re-signed at each step's percentage while the
channel's devices are watched, halted (manifest ``halt: true``, exit 1) when too many of
those that should have taken the release failed, rolled back or stayed silent.

Which devices should answer is computed here with the devices' own formula
(``gateway.firmware.rollout``): a device is in the channel if its heartbeat or status says so
(or, saying nothing of its channel, it reported on this very release), and it is expected to
answer from the moment it is eligible and online, or as soon as it has reported on the
release at all. A device once expected stays expected: a release that bricks it takes it
offline, and that is exactly the silence to count. Devices already running a newer release
cannot take this one and are left out.

An expected device's outcome is ``committed`` (it reported so, or it runs the release),
``failed`` (``failed`` or ``rolled_back``), ``silent`` (no terminal report within the report
timeout of becoming expected; counted as failed), or ``pending``. The step's failure rate is
(failed + silent) / (committed + failed + silent) over every device eligible at the step's
percentage; it is judged only once that denominator reaches ``min_reports``, and the
rollout halts when it exceeds ``max_failure_rate``. A step is done when no eligible device is
pending and the soak time has passed since the last one was judged.

The manifest is read back from the broker and re-signed only if it verifies with the
operator's own key: whatever else sits on the topic could have been put there by anyone,
and re-signing it would make a forgery trusted. A manifest replaced on the topic by another
publisher while the rollout runs (an operator's ``release --halt``, say) stops the rollout
without another publish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from packaging.version import Version

from gateway import wire
from gateway.config.operator import BrokerAccess
from gateway.firmware.rollout import eligible
from gateway.operator.fleet import TERMINAL_STATES, Device, Fleet, parse_version
from gateway.operator.mqtt import Received, Session
from gateway.operator.release import Manifest
from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring, PrivateKey
from gateway.trust.payload import parse_firmware
from gateway.trust.rejection import Rejected

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2

MANIFEST_WAIT_S = 3.0
"""How long the retained manifest may take to arrive after the subscription's SUBACK."""

TICK_S = 0.2
"""How often time alone (silence deadlines, the soak) is looked at when nothing arrives."""


@dataclass(frozen=True)
class Plan:
    prefix: str
    channel: str
    version: Version
    steps: tuple[float, ...]
    soak_s: float
    max_failure_rate: float
    min_reports: int
    report_timeout_s: float
    settle_s: float

    @property
    def topic(self) -> str:
        return wire.manifest_topic(self.prefix, self.channel)


@dataclass(frozen=True)
class Tally:
    """Where one step stands: counts over the devices eligible at its percentage."""

    percent: float
    eligible: int = 0
    committed: int = 0
    failed: int = 0
    silent: int = 0
    failures: tuple[tuple[str, str], ...] = ()  # (device, why), failed and silent alike

    @property
    def judged(self) -> int:
        return self.committed + self.failed + self.silent

    @property
    def pending(self) -> int:
        return self.eligible - self.judged

    @property
    def failure_rate(self) -> float:
        return (self.failed + self.silent) / self.judged if self.judged else 0.0

    def halts(self, plan: Plan) -> bool:
        return self.judged >= plan.min_reports and self.failure_rate > plan.max_failure_rate

    def why(self, plan: Plan) -> str:
        return (f"{self.failed} failed and {self.silent} silent of {self.judged} reported: "
                f"failure rate {self.failure_rate:.0%} above {plan.max_failure_rate:.0%}")


@dataclass
class Watch:
    """The devices this release expects to hear from, each since when (monotonic)."""

    plan: Plan
    salt: str
    fleet: Fleet
    since: dict[str, float] = field(default_factory=dict)
    # The formula hashes; a tally runs every tick over the whole channel.
    _eligible: dict[tuple[float, str], bool] = field(default_factory=dict)

    def eligible(self, percent: float, device: str) -> bool:
        key = (percent, device)
        if key not in self._eligible:
            self._eligible[key] = eligible(percent, self.salt, device)
        return self._eligible[key]

    def _in_channel(self, device: Device) -> bool:
        if device.channel is not None:
            return device.channel == self.plan.channel
        return device.firmware is not None and device.firmware.about(self.plan.version)

    def members(self) -> list[Device]:
        """The channel's devices that can take this release."""
        found = []
        for device in self.fleet.devices.values():
            running = parse_version(device.running)
            if self._in_channel(device) and not (running and running > self.plan.version):
                found.append(device)
        return found

    def _outcome(self, device: Device) -> tuple[str, str] | None:
        """("committed" | "failed", why), or None while it has not said."""
        if parse_version(device.running) == self.plan.version:
            return "committed", ""
        report = device.firmware
        if report is None or not report.about(self.plan.version):
            return None
        if report.state not in TERMINAL_STATES:
            return None
        if report.state == wire.FirmwareState.COMMITTED:
            return "committed", ""
        return "failed", report.state + (f": {report.reason}" if report.reason else "")

    def tally(self, percent: float, now: float) -> Tally:
        counts = {"committed": 0, "failed": 0, "silent": 0}
        failures = []
        expected = 0
        for device in self.members():
            if not self.eligible(percent, device.id):
                continue
            outcome = self._outcome(device)
            if outcome is None and device.id not in self.since and not device.online:
                continue  # offline before it was ever asked: not a failure of this release
            since = self.since.setdefault(device.id, now)
            expected += 1
            if outcome is None:
                if now - since <= self.plan.report_timeout_s:
                    continue
                outcome = "silent", f"silent for {now - since:.0f} s" + (
                    f" (last said {device.firmware.state})"
                    if device.firmware is not None and device.firmware.about(self.plan.version)
                    else "")
            kind, why = outcome
            counts[kind] += 1
            if kind != "committed":
                failures.append((device.id, why))
        return Tally(percent, expected, counts["committed"], counts["failed"],
                     counts["silent"], tuple(sorted(failures)))


class Refused(Exception):
    """The rollout cannot start as asked; nothing was published (exit 2)."""


@dataclass
class Observed:
    """What the broker has sent so far, fed by one reader task; ``changed`` wakes the driver."""

    fleet: Fleet
    topic: str
    manifest: Received | None = None
    foreign: bool = False
    published: set[bytes] = field(default_factory=set)
    lost: Exception | None = None  # a BrokerError, or a bug in reading, raised by the driver
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, message: Received) -> None:
        if message.topic == self.topic:
            if self.manifest is None:
                self.manifest = message
            elif message.payload not in self.published:
                self.foreign = True
        else:
            self.fleet.take(message, time.time())
        self.changed.set()

    async def pump(self, mqtt: Session) -> None:
        try:
            while True:
                self.take(await mqtt.receive())
        except Exception as exc:
            self.lost = exc
            self.changed.set()

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost

    async def wait(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        """Let messages arrive for ``seconds`` or until ``until()``; raises a lost
        connection."""
        try:
            async with asyncio.timeout(seconds):
                while self.lost is None and not until():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pass
        self.check()


def released(observed: Observed, plan: Plan, key: PrivateKey) -> Manifest:
    """The release on the broker, if it is the one asked for and signed with ``key``."""
    topic = plan.topic
    if observed.manifest is None or not observed.manifest.payload:
        raise Refused(f"no manifest on {topic}: publish the release first "
                      "(edge-gateway release)")
    try:
        payload = parse_firmware(verify(observed.manifest.payload, Keyring([key.public]),
                                        max_bytes=1 << 20).payload)
    except Rejected as exc:
        hint = (f" (it is not signed by this key, kid {key.public.kid})"
                if exc.reason == "unknown key" else "")
        raise Refused(f"the manifest on {topic} is refused: {exc.reason}{hint}") from None
    if payload.channel != plan.channel:
        raise Refused(f"the manifest on {topic} is for channel {payload.channel}")
    if payload.version != plan.version:
        raise Refused(f"the manifest on {topic} releases {payload.version}, not "
                      f"{plan.version}: release {plan.version} first (edge-gateway release)")
    return Manifest.from_payload(payload)


class RolloutDisplay(Protocol):
    """What a rollout says as it goes; the command line passes ``rolloutview.RolloutView``
    (rich), and this module draws nothing itself."""

    def note(self, text: str) -> None:
        """An event, one line."""

    def show(self, tally: Tally, state: str) -> None:
        """Where the step stands: its row, redrawn."""

    def stop(self, reason: str, failures: tuple[tuple[str, str], ...] = ()) -> None:
        """Why the rollout ends early, and the devices that count against it."""


class Rollout:
    def __init__(self, plan: Plan, key: PrivateKey, view: RolloutDisplay) -> None:
        self.plan = plan
        self.key = key
        self.view = view
        self.reason: str | None = None  # why it ended early, one line

    async def run(self, broker: BrokerAccess) -> int:
        """The exit code; ``Refused`` before anything is published, ``BrokerError``."""
        fleet = Fleet(self.plan.prefix)
        observed = Observed(fleet, self.plan.topic)
        async with Session(broker) as mqtt:
            await mqtt.subscribe(self.plan.topic, *fleet.topics())
            reader = asyncio.create_task(observed.pump(mqtt))
            try:
                return await self._drive(mqtt, observed)
            finally:
                reader.cancel()
                await asyncio.wait([reader])

    async def _publish(self, mqtt: Session, observed: Observed, manifest: Manifest) -> None:
        envelope = manifest.signed(self.key)
        observed.published.add(envelope)
        await mqtt.publish_retained(self.plan.topic, envelope)

    async def _drive(self, mqtt: Session, observed: Observed) -> int:
        plan, view = self.plan, self.view
        await observed.wait(MANIFEST_WAIT_S, until=lambda: observed.manifest is not None)
        manifest = released(observed, plan, self.key)
        if manifest.halt:
            view.note(f"{plan.channel} {plan.version} was halted at {manifest.percent:g} %; "
                      "the rollout resumes it")
        await observed.wait(plan.settle_s)
        watch = Watch(plan, manifest.salt, observed.fleet)
        members = watch.members()
        view.note(f"{len(members)} devices of channel {plan.channel} can take "
                  f"{plan.version} ({sum(d.online is True for d in members)} online)")
        for percent in plan.steps:
            if percent < manifest.percent:
                view.note(f"{percent:g} %: skipped, the release is at {manifest.percent:g} % "
                          "already")
                continue
            manifest = manifest.at(percent)
            await self._publish(mqtt, observed, manifest)
            view.note(f"{percent:g} %: published on {plan.topic}")
            code = await self._step(mqtt, observed, watch, manifest)
            if code is not None:
                return code
        view.note(f"{plan.channel} {plan.version}: rollout complete at {manifest.percent:g} %")
        return EXIT_OK

    async def _step(self, mqtt: Session, observed: Observed, watch: Watch,
                    manifest: Manifest) -> int | None:
        """None when the step completed and soaked, else the exit code."""
        plan, view = self.plan, self.view
        settled_at: float | None = None
        while True:
            observed.check()
            now = time.monotonic()
            tally = watch.tally(manifest.percent, now)
            if observed.foreign:
                view.show(tally, "stopped")
                self.reason = (f"stopped: another publisher replaced the manifest on "
                               f"{plan.topic} (the rollout published nothing more)")
                view.stop(self.reason)
                return EXIT_FAILURE
            if tally.halts(plan):
                view.show(tally, "halted")
                await self._publish(mqtt, observed, manifest.at(manifest.percent, halt=True))
                self.reason = (f"halted at {manifest.percent:g} %: {tally.why(plan)}; "
                               f"the manifest on {plan.topic} now says halt: true")
                view.stop(self.reason, tally.failures)
                return EXIT_FAILURE
            if tally.pending:
                settled_at = None
                view.show(tally, "waiting")
            else:
                settled_at = now if settled_at is None else settled_at
                if now - settled_at >= plan.soak_s:
                    view.show(tally, "done")
                    view.note(f"{manifest.percent:g} %: done: {describe(tally)}")
                    if tally.judged < plan.min_reports:
                        view.note(f"{manifest.percent:g} %: only {tally.judged} reported, "
                                  f"fewer than --min-reports {plan.min_reports}: "
                                  "the failure rate was not judged")
                    return None
                view.show(tally, f"soaking {plan.soak_s - (now - settled_at):.0f} s")
            observed.changed.clear()
            try:
                async with asyncio.timeout(TICK_S):
                    await observed.changed.wait()
            except TimeoutError:
                pass


def describe(tally: Tally) -> str:
    return (f"eligible {tally.eligible}, committed {tally.committed}, failed {tally.failed}, "
            f"silent {tally.silent}")


def parse_steps(text: str) -> tuple[float, ...]:
    """``1,10,50,100``: rising percentages above 0 and at most 100; ``ValueError``."""
    steps: list[float] = []
    for part in text.split(","):
        try:
            percent = float(part)
        except ValueError:
            raise ValueError(f"not a percentage: {part.strip()!r}") from None
        if not 0 < percent <= 100:
            raise ValueError(f"{part.strip()}: a percentage above 0 and at most 100")
        if steps and percent <= steps[-1]:
            raise ValueError("steps must rise (raising the percentage only adds devices)")
        steps.append(percent)
    return tuple(steps)
