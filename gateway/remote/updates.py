"""The remote-configuration task: signed envelopes in, a new effective config applied (or
refused, or rolled back), and every outcome reported on the retained ``P/D/config/state``.

The rules are SPEC section 5's, in an order that keeps a flood cheap: the inbox already
dropped what was too large to keep; then the envelope's signature (no payload is parsed
before it verifies), the payload's kind, address, expiry and version, and last the
resulting config, validated whole. An envelope whose version equals the applied one (a
retained envelope delivered again at reconnect) changes nothing and reports nothing, and
neither does the version last rolled back. Rejections are logged at most once a minute
per reason, with the count of those left unlogged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

import structlog

from gateway.config import file as configfile
from gateway.config.models import Config
from gateway.remote import effective
from gateway.remote.layers import DEVICE, Layer, group_of, group_scope, refused_keys
from gateway.remote.store import Applied, LayerStore
from gateway.trust.envelope import verify
from gateway.trust.keys import KeyLoadError, Keyring
from gateway.trust.payload import ConfigPayload, parse_config
from gateway.trust.rejection import Rejected

log = structlog.get_logger(__name__)

LOG_INTERVAL_S = 60.0

Status = Literal["applied", "rejected", "rolled_back"]


class Message(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes | None: ...
    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class Outcome:
    scope: str | None
    version: int | None
    status: Status
    reason: str | None = None


class Refusal(Exception):
    def __init__(self, reason: str, scope: str | None = None, version: int | None = None):
        super().__init__(reason)
        self.reason, self.scope, self.version = reason, scope, version


def config_topics(config: Config) -> dict[str, str]:
    """The topics this device takes config from, and the scope of each."""
    prefix = config.mqtt.topic_prefix
    topics = {f"{prefix}/{config.device_id}/config/set": DEVICE}
    for group in config.groups:
        topics[f"{prefix}/group/{group}/config/set"] = group_scope(group)
    return topics


def state_topic(config: Config) -> str:
    return f"{config.mqtt.topic_prefix}/{config.device_id}/config/state"


def state_payload(outcome: Outcome, ts: float) -> bytes:
    body = {"scope": outcome.scope, "version": outcome.version, "status": outcome.status,
            "reason": outcome.reason, "ts": ts}
    return json.dumps(body, separators=(",", ":")).encode()


class RemoteConfig:
    def __init__(
        self,
        document: configfile.Document,
        base_dir: Path,
        store: LayerStore,
        applied: Applied,
        keyring: Keyring,
        apply: Callable[[Config, Keyring], Awaitable[str | None]],
        report: Callable[[Outcome], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._document = document
        self._base_dir = base_dir
        self._store = store
        self.applied = applied
        self._keyring = keyring
        self._apply = apply
        self._report = report
        self._clock = clock
        self._config = effective.build(document, applied.layers, base_dir).config
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def current(self, document: configfile.Document) -> effective.Effective:
        """The file just read (SIGHUP) with the applied layers on top; remembered as the
        base for the next update."""
        result = effective.build(document, self.applied.layers, self._base_dir)
        self._document = document
        return result

    def configured(self, config: Config, keyring: Keyring) -> None:
        """The daemon now runs ``config``: its groups and trusted keys count from now on."""
        self._config, self._keyring = config, keyring

    async def run(self, receive: Callable[[], Awaitable[Message]]) -> None:
        while True:
            message = await receive()
            outcome = await self.handle(message)
            if outcome is not None:
                self._report(outcome)

    async def handle(self, message: Message) -> Outcome | None:
        scope = config_topics(self._config).get(message.topic)
        try:
            update = self._accept(scope, message)
            if update is None:
                return None
            candidate, layers, keyring = update
        except Refusal as exc:
            self._log_rejection(exc.reason, message.topic)
            return Outcome(exc.scope or scope, exc.version, "rejected", exc.reason)
        assert scope is not None
        layer = layers[scope]
        problem = await self._apply(candidate, keyring)
        if problem is not None:
            self.applied = replace(self.applied, failed={**self.applied.failed,
                                                         scope: layer.version})
            await self._store.save(self.applied)
            log.error("config.rolled_back", scope=scope, version=layer.version, reason=problem)
            return Outcome(scope, layer.version, "rolled_back", problem)
        self.applied = replace(self.applied, layers=layers)
        await self._store.save(self.applied)
        log.info("config.applied", scope=scope, version=layer.version,
                 keys=sorted(layer.config))
        return Outcome(scope, layer.version, "applied")

    def _accept(
        self, scope: str | None, message: Message
    ) -> tuple[Config, dict[str, Layer], Keyring] | None:
        """The config an envelope leads to, None when it is the applied one again, or
        ``Refusal``."""
        if scope is None:
            raise Refusal("not addressed")
        if message.payload is None:
            raise Refusal("too large", scope)
        config = self._config
        try:
            verified = verify(message.payload, self._keyring,
                              config.remote_config.max_envelope_bytes)
            payload = parse_config(verified.payload)
            payload.check_expiry(self._clock())
        except Rejected as exc:
            raise Refusal(exc.reason, scope) from None
        version = payload.version
        if not self._addressed(scope, payload):
            raise Refusal("not addressed", scope, version)
        applied = self.applied.version(scope)
        if version == applied or version == self.applied.failed.get(scope):
            return None
        if version < applied:
            raise Refusal("stale version", scope, version)
        refused = refused_keys(scope, payload.config)
        if refused:
            raise Refusal(f"invalid config: {refused[0]}: cannot be set remotely", scope, version)
        layers = {**self.applied.layers, scope: Layer(scope, version, payload.config)}
        try:
            candidate = effective.build(self._document, layers, self._base_dir).config
        except configfile.ConfigError as exc:
            raise Refusal(f"invalid config: {effective.first_problem(exc)}", scope,
                          version) from None
        if not candidate.remote_config.trusted_keys:
            raise Refusal("invalid config: remote_config.trusted_keys: cannot be emptied",
                          scope, version)
        try:
            keyring = Keyring.load(candidate.remote_config.trusted_keys)
        except KeyLoadError as exc:
            raise Refusal(f"invalid config: remote_config.trusted_keys: {exc}", scope,
                          version) from None
        return candidate, layers, keyring

    def _addressed(self, scope: str, payload: ConfigPayload) -> bool:
        if scope == DEVICE:
            return payload.device == self._config.device_id and payload.group is None
        group = group_of(scope)
        return payload.group == group and payload.device is None and (
            group in self._config.groups)

    def _log_rejection(self, reason: str, topic: str) -> None:
        now = time.monotonic()
        last = self._logged_at.get(reason)
        if last is not None and now - last < LOG_INTERVAL_S:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        self._logged_at[reason] = now
        unlogged = self._unlogged.pop(reason, 0)
        extra = {"unlogged_since": unlogged} if unlogged else {}
        log.warning("config.rejected", reason=reason, topic=topic, **extra)

    def versions(self) -> Mapping[str, int]:
        return self.applied.versions()
