"""The config a device starts on: its file with the stored layers that still hold on top.

Nothing remote may keep a device down. A stored layer can stop validating (a stricter
release, a file edited under it, a hand edit of the store): such a layer is taken out of
the store, a copy of the store kept beside it for inspection (``layers.json.invalid-TS``),
its version recorded as failed (so the retained envelope that brought it, delivered again
at connect, is ignored rather than tried again), and its scope reported ``rejected`` with
``invalid config: FIELD: message``. The device runs on its file and the layers that hold.
Exit status 2 stays for a bad local file: one whose own trusted keys do not load.

Blocking (the store, trusted key files): run it off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway import wire
from gateway.config import file as configfile
from gateway.config.models import Config
from gateway.remote import effective
from gateway.remote.layers import DEVICE, Applied, Layer
from gateway.remote.report import Outcome
from gateway.remote.store import LayerStore
from gateway.trust.keys import KeyLoadError, Keyring

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Start:
    """The config a device starts on: its file, the stored layers kept, and those set aside."""

    document: configfile.Document
    applied: Applied
    config: Config
    keyring: Keyring
    # The stored layers taken out, each as its scope's report.
    set_aside: tuple[Outcome, ...] = ()

    @property
    def problem(self) -> str | None:
        """Why the device does not run the config it was given remotely, or None."""
        if not self.set_aside:
            return None
        first = self.set_aside[0]
        return f"{first.scope} v{first.version}: {first.reason}"


def _file_keyring(document: configfile.Document, file: str) -> Keyring:
    try:
        return Keyring.load(document.config.remote_config.trusted_keys)
    except KeyLoadError as exc:
        issue = configfile.ConfigIssue(file, None, "remote_config.trusted_keys", str(exc))
        raise configfile.ConfigError([issue]) from None


def settle(path: Path, document: configfile.Document, store: LayerStore) -> Start:
    """Raises ``ConfigError`` only for the file itself."""
    base_dir = path.resolve().parent
    config, keyring = document.config, _file_keyring(document, str(path))
    stored = store.load()
    kept: dict[str, Layer] = {}
    set_aside: list[Outcome] = []
    # The device's layer first: it may name the groups whose layers count.
    for scope in sorted(stored.layers, key=lambda s: (s != DEVICE, s)):
        layer = stored.layers[scope]
        try:
            config, keyring = effective.checked(document, {**kept, scope: layer}, base_dir)
        except effective.Invalid as exc:
            set_aside.append(Outcome(scope, layer.version, wire.ConfigStatus.REJECTED,
                                     f"invalid config: {exc}"))
            continue
        kept[scope] = layer
    if not set_aside:
        return Start(document, stored, config, keyring)
    aside = store.copy_aside("invalid")
    failed = {**stored.failed, **{str(o.scope): int(o.version or 0) for o in set_aside}}
    applied = Applied(kept, failed)
    store.write(applied)
    for outcome in set_aside:
        log.error("config.remote_layer_set_aside", scope=outcome.scope,
                  version=outcome.version, reason=outcome.reason, copy=str(aside))
    return Start(document, applied, config, keyring, tuple(set_aside))
