"""The one owner of the running config: the device file's document, the applied remote
layers, the effective config and the keyring. Start-up, SIGHUP and remote updates all change
it here, one at a time, and nowhere else.

A remote update is decided by ``gateway.remote.decide`` (pure), then the config it leads to
is checked whole (``effective.checked``: the models, the trusted keys, off the event loop),
then applied part by part (``Parts.change``, the daemon's parts); a new sensor that gives no
good reading or broker settings that do not connect within ``remote_config.apply_timeout_s``
put the previous config back, and that version is not tried again. A SIGHUP re-reads the
file and puts the applied layers back on top; the document it read becomes the base of the
next update only once it is applied, never when it was refused. The inbox's bounds follow
``remote_config`` at every change.

Outcomes of envelopes a trusted key signed, and the stored layers set aside at start, go to
the retained ``config/state`` (``gateway.remote.report``); junk is only counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import structlog

from gateway import wire
from gateway.config import file as configfile
from gateway.config.models import Config
from gateway.remote import effective
from gateway.remote.decide import Accept, Ignore, Message, Refuse, TrustState, decide
from gateway.remote.report import Junk, Outcome, state_payload, state_topic
from gateway.remote.startup import Start
from gateway.remote.store import LayerStore
from gateway.trust.keys import KeyLoadError, Keyring
from gateway.uplink.inbox import Inbox

log = structlog.get_logger(__name__)


class Parts(Protocol):
    """The running parts of the daemon, changed to a config (``gateway.daemon.parts``)."""

    async def start(self, config: Config, keyring: Keyring) -> None: ...

    async def change(self, old: Config, new: Config, keyring: Keyring,
                     timeout_s: float | None) -> str | None:
        """Change what differs; with ``timeout_s``, wait for what is new to work and name
        what did not."""


class Reports(Protocol):
    def publish_retained(self, topic: str, payload: bytes) -> None: ...


def fixed_changed(new: Config, running: Config) -> list[str]:
    """Settings that live as long as the process: the identity and the state location
    (changing them under a running queue and seq store would mix or lose data), and
    whether the queue has a disk tier at all (its bounds resize live)."""
    changed = [key for key in ("device_id", "state_dir") if getattr(new, key) !=
               getattr(running, key)]
    if (new.queue.disk_max_bytes == 0) != (running.queue.disk_max_bytes == 0):
        changed.append("queue.disk_max_bytes (turning the disk tier on or off)")
    return changed


class Reconfigurer:
    def __init__(self, path: Path, start: Start, store: LayerStore, inbox: Inbox,
                 reports: Reports, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._base_dir = path.resolve().parent
        self._document = start.document
        self._applied = start.applied
        self._config = start.config
        self._keyring = start.keyring
        self._set_aside = start.set_aside
        self._store = store
        self._inbox = inbox
        self._reports = reports
        self._clock = clock
        self._lock = asyncio.Lock()
        self.junk = Junk()

    @property
    def config(self) -> Config:
        return self._config

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def versions(self) -> dict[str, int]:
        return self._applied.versions()

    async def start(self, parts: Parts) -> None:
        """Start the parts on the config settled at start, and report the stored layers
        set aside (retained: the uplink sends them once it connects)."""
        async with self._lock:
            self._bound(self._config)
            await parts.start(self._config, self._keyring)
        for outcome in self._set_aside:
            self._report(outcome)

    async def reload(self, parts: Parts) -> bool:
        """SIGHUP: the file again, with the applied layers on top. An invalid result is
        logged, changes nothing and is forgotten. True once applied."""
        async with self._lock:
            try:
                document = await asyncio.to_thread(configfile.load_document, self._path)
                config = (await asyncio.to_thread(effective.build, document,
                                                  self._applied.layers, self._base_dir)).config
            except configfile.ConfigError as exc:
                for issue in exc.issues:
                    log.error("config.reload_rejected", error=str(issue))
                return False
            fixed = fixed_changed(config, self._config)
            if fixed:
                log.error("config.reload_rejected", error=f"{', '.join(fixed)}: needs a restart")
                return False
            try:
                keyring = await asyncio.to_thread(Keyring.load,
                                                  config.remote_config.trusted_keys)
            except KeyLoadError as exc:
                log.error("config.reload_rejected", error=f"remote_config.trusted_keys: {exc}")
                return False
            self._document = document
            await self._change(parts, config, keyring, None)
        log.info("config.reloaded", sensors=len(config.sensors))
        return True

    async def run(self, receive: Callable[[], Awaitable[Message]], parts: Parts) -> None:
        """The remote-config task: every envelope from the inbox, until cancelled."""
        while True:
            message = await receive()
            outcome = await self.handle(message, parts)
            if outcome is not None:
                self._report(outcome)

    async def handle(self, message: Message, parts: Parts) -> Outcome | None:
        """What became of an envelope, when it is worth reporting."""
        async with self._lock:
            trust = TrustState.of(self._config, self._keyring, self._applied)
            decision = decide(message, trust, self._clock())
            if isinstance(decision, Ignore):
                return None
            if isinstance(decision, Refuse):
                return self._refused(decision, message.topic)
            return await self._accept(decision, parts)

    def _refused(self, refusal: Refuse, topic: str) -> Outcome | None:
        if not refusal.verified:
            self.junk.count(refusal.reason.value, topic)
            return None
        log.warning("config.rejected", reason=str(refusal), scope=refusal.scope,
                    version=refusal.version, kid=refusal.kid, verified=True)
        return Outcome(refusal.scope, refusal.version, wire.ConfigStatus.REJECTED, str(refusal),
                       refusal.kid)

    async def _accept(self, accept: Accept, parts: Parts) -> Outcome:
        layer, kid = accept.layer, accept.kid
        scope, version = layer.scope, layer.version
        layers = {**self._applied.layers, scope: layer}
        try:
            config, keyring = await asyncio.to_thread(effective.checked, self._document,
                                                      layers, self._base_dir)
        except effective.Invalid as exc:
            reason = f"invalid config: {exc}"
            log.warning("config.rejected", reason=reason, scope=scope, version=version,
                        kid=kid, verified=True)
            return Outcome(scope, version, wire.ConfigStatus.REJECTED, reason, kid)
        fixed = fixed_changed(config, self._config)
        if fixed:
            problem: str | None = f"{', '.join(fixed)}: needs a restart"
        else:
            previous, previous_keys = self._config, self._keyring
            problem = await self._change(parts, config, keyring,
                                         config.remote_config.apply_timeout_s)
            if problem is not None:
                await self._change(parts, previous, previous_keys, None)
        if problem is not None:
            self._applied = replace(self._applied, failed={**self._applied.failed,
                                                           scope: version})
            await self._store.save(self._applied)
            log.error("config.rolled_back", scope=scope, version=version, reason=problem)
            return Outcome(scope, version, wire.ConfigStatus.ROLLED_BACK, problem, kid)
        self._applied = replace(self._applied, layers=layers)
        await self._store.save(self._applied)
        log.info("config.applied", scope=scope, version=version, keys=sorted(layer.config))
        return Outcome(scope, version, wire.ConfigStatus.APPLIED, None, kid)

    async def _change(self, parts: Parts, config: Config, keyring: Keyring,
                      timeout_s: float | None) -> str | None:
        old, self._config, self._keyring = self._config, config, keyring
        self._bound(config)
        return await parts.change(old, config, keyring, timeout_s)

    def _bound(self, config: Config) -> None:
        remote = config.remote_config
        self._inbox.limit(remote.inbox_size, remote.max_envelope_bytes)

    def _report(self, outcome: Outcome) -> None:
        self._reports.publish_retained(state_topic(self._config),
                                       state_payload(outcome, self._clock()))
