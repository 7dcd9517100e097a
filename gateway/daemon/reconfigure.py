"""The one owner of the running config: the device file's document, the stored remote
layers, and what runs on the file (``effective.Settled``: the effective config, the keyring,
the layers kept and those set aside). Start-up, SIGHUP and remote updates all change it here,
one at a time, and nowhere else.

Start-up and SIGHUP follow one rule (``effective.settle``): the file, then each stored layer
that validates on it; one that does not is set aside for the run, logged and reported
``rejected``, and stays stored. A SIGHUP is never refused for a layer set aside: it sets the
layer aside again, and reports only what changed (a layer newly set aside, ``rejected``; one
the fixed file runs again, ``applied``). The document a SIGHUP read becomes the base of the
next update only once it is applied, never when it was refused.

A remote update is decided by ``gateway.remote.decide`` (pure) against the stored layers (the
retained envelope of a layer set aside is the applied version: ignored), then the config it
leads to on the layers that run is checked whole (``effective.checked``, off the event loop),
then applied part by part (``Parts.change``, the daemon's parts); a new sensor that gives no
good reading or broker settings that do not connect within ``remote_config.apply_timeout_s``
put the previous config back, and that version is not tried again. An applied update
replaces its scope's stored layer, set aside or not. The inbox's bounds follow
``remote_config`` at every change.

Outcomes of envelopes a trusted key signed, and of stored layers set aside or run again, go
to the retained ``config/state`` (``gateway.remote.report``); junk is only counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import structlog

from gateway import wire
from gateway.config import file as configfile
from gateway.config.models import Config
from gateway.remote import effective
from gateway.remote.decide import (
    Accept,
    Ignore,
    Message,
    Refuse,
    TrustState,
    decide,
    reported,
)
from gateway.remote.effective import SetAside, Settled
from gateway.remote.report import Junk, Outcome, state_payload, state_topic
from gateway.remote.startup import Start
from gateway.remote.store import LayerStore
from gateway.trust.keys import Keyring
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


def set_aside_changes(was: Sequence[SetAside], now: Settled) -> list[Outcome]:
    """What ``config/state`` should say of the stored layers set aside once the layers that
    run are ``now``: each newly set aside (or for another reason) rejected, each set aside
    before that runs now applied."""
    outcomes = [Outcome(a.layer.scope, a.layer.version, wire.ConfigStatus.REJECTED, a.reason)
                for a in now.set_aside if a not in was]
    outcomes += [Outcome(a.layer.scope, a.layer.version, wire.ConfigStatus.APPLIED)
                 for a in was if now.kept.get(a.layer.scope) == a.layer]
    return outcomes


class Reconfigurer:
    def __init__(self, path: Path, start: Start, store: LayerStore, inbox: Inbox,
                 reports: Reports, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._base_dir = path.resolve().parent
        self._document = start.document
        self._stored = start.stored
        self._running = start.running
        self._store = store
        self._inbox = inbox
        self._reports = reports
        self._clock = clock
        self._lock = asyncio.Lock()
        self.junk = Junk()

    @property
    def config(self) -> Config:
        return self._running.config

    @property
    def keyring(self) -> Keyring:
        return self._running.keyring

    def versions(self) -> dict[str, int]:
        """The versions of the layers that run (not of those set aside)."""
        return self._running.versions()

    def problem(self) -> str | None:
        """Why the device does not run the config it was given remotely now, or None."""
        return self._running.problem

    async def start(self, parts: Parts) -> None:
        """Start the parts on the config settled at start, and report the stored layers
        set aside (retained: the uplink sends them once it connects)."""
        async with self._lock:
            self._bound(self._running.config)
            await parts.start(self._running.config, self._running.keyring)
        self._announce(set_aside_changes((), self._running))

    async def reload(self, parts: Parts) -> bool:
        """SIGHUP: the file again, with the stored layers that validate on it on top. A
        file that does not validate, or that changes what needs a restart, is logged,
        changes nothing and is forgotten. True once applied."""
        async with self._lock:
            try:
                document = await asyncio.to_thread(configfile.load_document, self._path)
                running = await asyncio.to_thread(effective.settle, document,
                                                  self._stored.layers, self._base_dir,
                                                  str(self._path))
            except configfile.ConfigError as exc:
                for issue in exc.issues:
                    log.error("config.reload_rejected", error=str(issue))
                return False
            fixed = fixed_changed(running.config, self._running.config)
            if fixed:
                log.error("config.reload_rejected", error=f"{', '.join(fixed)}: needs a restart")
                return False
            self._document = document
            was = self._running.set_aside
            await self._change(parts, running, None)
        self._announce(set_aside_changes(was, running))
        log.info("config.reloaded", sensors=len(running.config.sensors))
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
            running = self._running
            trust = TrustState.of(running.config, running.keyring, self._stored)
            decision = decide(message, trust, self._clock())
            if isinstance(decision, Ignore):
                return None
            if isinstance(decision, Refuse):
                return self._refused(decision, message.topic)
            return await self._accept(decision, parts)

    def _refused(self, refusal: Refuse, topic: str) -> Outcome | None:
        if not reported(refusal, self._stored):
            self.junk.count(refusal.reason.value, topic)
            return None
        log.warning("config.rejected", reason=str(refusal), scope=refusal.scope,
                    version=refusal.version, kid=refusal.kid, verified=True)
        return Outcome(refusal.scope, refusal.version, wire.ConfigStatus.REJECTED, str(refusal),
                       refusal.kid)

    async def _accept(self, accept: Accept, parts: Parts) -> Outcome:
        layer, kid = accept.layer, accept.kid
        scope, version = layer.scope, layer.version
        previous = self._running
        # On the layers that run: never on one set aside, which this one replaces if it is
        # of the same scope.
        layers = {**previous.kept, scope: layer}
        try:
            config, keyring = await asyncio.to_thread(effective.checked, self._document,
                                                      layers, self._base_dir)
        except effective.Invalid as exc:
            reason = f"invalid config: {exc}"
            log.warning("config.rejected", reason=reason, scope=scope, version=version,
                        kid=kid, verified=True)
            return Outcome(scope, version, wire.ConfigStatus.REJECTED, reason, kid)
        fixed = fixed_changed(config, previous.config)
        if fixed:
            problem: str | None = f"{', '.join(fixed)}: needs a restart"
        else:
            aside = tuple(a for a in previous.set_aside if a.layer.scope != scope)
            problem = await self._change(parts, Settled(config, keyring, layers, aside),
                                         config.remote_config.apply_timeout_s)
            if problem is not None:
                await self._change(parts, previous, None)
        if problem is not None:
            self._stored = replace(self._stored, failed={**self._stored.failed,
                                                         scope: version})
            await self._store.save(self._stored)
            log.error("config.rolled_back", scope=scope, version=version, reason=problem)
            return Outcome(scope, version, wire.ConfigStatus.ROLLED_BACK, problem, kid)
        self._stored = replace(self._stored, layers={**self._stored.layers, scope: layer})
        await self._store.save(self._stored)
        log.info("config.applied", scope=scope, version=version, keys=sorted(layer.config))
        return Outcome(scope, version, wire.ConfigStatus.APPLIED, None, kid)

    async def _change(self, parts: Parts, running: Settled,
                      timeout_s: float | None) -> str | None:
        old, self._running = self._running.config, running
        self._bound(running.config)
        return await parts.change(old, running.config, running.keyring, timeout_s)

    def _bound(self, config: Config) -> None:
        remote = config.remote_config
        self._inbox.limit(remote.inbox_size, remote.max_envelope_bytes)

    def _announce(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status == wire.ConfigStatus.REJECTED:
                log.error("config.remote_layer_set_aside", scope=outcome.scope,
                          version=outcome.version, reason=outcome.reason,
                          store=str(self._store.path))
            else:
                log.info("config.remote_layer_runs_again", scope=outcome.scope,
                         version=outcome.version)
            self._report(outcome)

    def _report(self, outcome: Outcome) -> None:
        self._reports.publish_retained(state_topic(self._running.config),
                                       state_payload(outcome, self._clock()))
