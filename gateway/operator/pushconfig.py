"""``edge-gateway push-config``: a checked fragment signed into a config update, published
retained, and the devices' answers on ``P/D/config/state`` awaited and shown.

``config/state`` is retained too, so what a device said about an earlier update arrives
first at every subscription; it is told apart from the answer to this push by the retain
flag (this push's answer is published after we subscribed, so it arrives live), then by
scope, version and the ``kid`` of the key that signed it, never by time alone: a device
reports there only on envelopes whose signature verified, so every answer names its
version. A device ignores an update whose version it has already applied, without a word,
and only counts one below it or one signed by a key it does not trust: each ends in a
timeout, with a hint.

For a group, the devices to hear from are those whose retained status says online and names
the group (``P/+/status``), collected for a moment before the push, and any that come
online or answer for the group while we wait.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, TextIO

from gateway import wire
from gateway.config.operator import BrokerAccess
from gateway.operator.mqtt import Received, Session
from gateway.remote.layers import DEVICE, group_scope
from gateway.trust.envelope import sign
from gateway.trust.keys import PrivateKey

EXIT_OK, EXIT_FAILURE = 0, 1

SETTLE_S = 1.0
"""How long retained statuses are collected before a group push."""


@dataclass(frozen=True)
class Target:
    prefix: str
    device: str | None = None
    group: str | None = None

    @property
    def scope(self) -> str:
        return DEVICE if self.group is None else group_scope(self.group)

    @property
    def set_topic(self) -> str:
        if self.group is None:
            return wire.config_set_topic(self.prefix, str(self.device))
        return wire.group_config_set_topic(self.prefix, self.group)

    @property
    def address(self) -> dict[str, str]:
        return {"device": str(self.device)} if self.group is None else {"group": self.group}


@dataclass(frozen=True)
class Update:
    """What to push: the fragment, its version, who signs it and for how long it holds."""

    target: Target
    version: int
    config: dict[str, Any]
    key: PrivateKey
    ttl_s: float

    def envelope(self, issued_at: float) -> bytes:
        body = {"kind": "config", **self.target.address, "version": self.version,
                "issued_at": issued_at, "expires_at": issued_at + self.ttl_s,
                "config": self.config}
        return sign(json.dumps(body, separators=(",", ":"), allow_nan=False).encode(), self.key)

    def describe(self, issued_at: float) -> str:
        expires = datetime.fromtimestamp(issued_at + self.ttl_s, UTC).strftime("%Y-%m-%d %H:%M")
        return (f"pushed version {self.version} on {self.target.set_topic} "
                f"(kid {self.key.public.kid}, expires {expires} UTC)")


@dataclass(frozen=True)
class Answer:
    status: str
    reason: str | None = None

    @property
    def applied(self) -> bool:
        return self.status == wire.ConfigStatus.APPLIED

    def __str__(self) -> str:
        return self.status if self.reason is None else f"{self.status}: {self.reason}"


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(payload)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def answer(state: bytes, scope: str, version: int, kid: str) -> Answer | None:
    """A device's state as its answer to this push, or None when it is about another: the
    same scope and version, and the same key when the state names one (a device older
    than ``kid`` in its state does not)."""
    body = _json_object(state)
    if body is None or body.get("scope") != scope:
        return None
    if body.get("status") not in set(wire.ConfigStatus):
        return None
    said = body.get("version")
    if type(said) is not int or said != version or body.get("kid", kid) not in (kid, None):
        return None
    reason = body.get("reason")
    return Answer(body["status"], reason if isinstance(reason, str) else None)


def _applied_version(state: bytes, scope: str) -> int | None:
    """The version a device's retained state says it applied in ``scope``, or None."""
    body = _json_object(state)
    if (body is None or body.get("scope") != scope
            or body.get("status") != wire.ConfigStatus.APPLIED):
        return None
    version = body.get("version")
    return version if type(version) is int else None


def _device_of(topic: str, prefix: str, kind: str) -> str | None:
    """D in ``P/D/KIND``, or None for another topic."""
    found = wire.device_and_kind(topic, prefix)
    return found[0] if found is not None and found[1] == kind else None


async def push_device(broker: BrokerAccess, update: Update, timeout_s: float, out: TextIO) -> int:
    target = update.target
    device = str(target.device)
    had: int | None = None  # the version the device said it applied, before this push
    async with Session(broker) as mqtt:
        await mqtt.subscribe(wire.config_state_topic(target.prefix, device))
        pushed_at = time.time()
        await mqtt.publish_retained(target.set_topic, update.envelope(pushed_at))
        print(update.describe(pushed_at), file=out, flush=True)
        try:
            async with asyncio.timeout(timeout_s):
                result = None
                while result is None:
                    message = await mqtt.receive()
                    got = answer(message.payload, target.scope, update.version,
                                 update.key.public.kid)
                    if message.retained:
                        had = _applied_version(message.payload, target.scope) or had
                    else:
                        result = got
        except TimeoutError:
            hint = (f"it had applied version {had} already, and ignores a version it has "
                    f"and counts one below it; push a --version above {had}"
                    if had is not None and had >= update.version else
                    f"the update stays retained on {target.set_topic} for when it connects; "
                    "an update signed by a key it does not trust is only counted, in its "
                    "heartbeat's config_rejected")
            print(f"{device}: timeout: no answer within {timeout_s:g} s ({hint})", file=out)
            return EXIT_FAILURE
    print(f"{device}: {result}", file=out)
    return EXIT_OK if result.applied else EXIT_FAILURE


class Members:
    """The devices of a group this push waits for, and what each answered."""

    def __init__(self, target: Target, version: int, kid: str) -> None:
        self._target = target
        self._version = version
        self._kid = kid
        self.answers: dict[str, Answer | None] = {}
        self.pushed_at: float | None = None

    def take(self, message: Received) -> bool:
        """Note what ``message`` says; True if it changed anything."""
        prefix = self._target.prefix
        device = _device_of(message.topic, prefix, wire.STATUS)
        if device is not None:
            status = _json_object(message.payload) or {}
            groups = status.get("groups")
            member = isinstance(groups, list) and self._target.group in groups
            online = status.get("state") == wire.Presence.ONLINE
            if online and member and device not in self.answers:
                self.answers[device] = None
                return True
            return False
        device = _device_of(message.topic, prefix, wire.CONFIG_STATE)
        if device is None or self.pushed_at is None or message.retained:
            return False
        got = answer(message.payload, self._target.scope, self._version, self._kid)
        if got is None or self.answers.get(device) is not None:
            return False
        self.answers[device] = got
        return True

    @property
    def waiting(self) -> int:
        return sum(got is None for got in self.answers.values())


async def _read_for(mqtt: Session, seconds: float, take: Callable[[Received], bool]) -> None:
    try:
        async with asyncio.timeout(seconds):
            while True:
                take(await mqtt.receive())
    except TimeoutError:
        pass


class GroupDisplay(Protocol):
    """Where a group push shows the answers as they arrive: entered once the update is out
    and there are devices to wait for. The command line passes ``groupview.GroupView``
    (rich); this module draws nothing itself."""

    def __enter__(self) -> GroupDisplay: ...

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None: ...

    def show(self, answers: Mapping[str, Answer | None], final: bool = False) -> None:
        """Redraw; ``final``: those that have not answered are silent."""


async def push_group(broker: BrokerAccess, update: Update, timeout_s: float, out: TextIO,
                     display: GroupDisplay) -> int:
    target = update.target
    members = Members(target, update.version, update.key.public.kid)
    async with Session(broker) as mqtt:
        await mqtt.subscribe(wire.status_topic(target.prefix, wire.ANY_DEVICE),
                             wire.config_state_topic(target.prefix, wire.ANY_DEVICE))
        await _read_for(mqtt, SETTLE_S, members.take)
        members.pushed_at = time.time()
        await mqtt.publish_retained(target.set_topic, update.envelope(members.pushed_at))
        print(update.describe(members.pushed_at), file=out, flush=True)
        if not members.answers:
            print(f"group {target.group}: no device online names it in its status "
                  f"(the update stays retained on {target.set_topic} for when they connect)",
                  file=out)
            return EXIT_FAILURE
        with display as view:
            view.show(members.answers)
            try:
                async with asyncio.timeout(timeout_s):
                    while members.waiting:
                        if members.take(await mqtt.receive()):
                            view.show(members.answers)
            except TimeoutError:
                pass
            view.show(members.answers, final=True)
    counts: dict[str, int] = {}
    for got in members.answers.values():
        status = "silent" if got is None else got.status
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"group {target.group}: {summary} of {len(members.answers)}", file=out)
    applied = counts.get(wire.ConfigStatus.APPLIED)
    return EXIT_OK if applied == len(members.answers) else EXIT_FAILURE
