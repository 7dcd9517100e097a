"""The effective config: the device file with the stored remote layers on top, validated
whole with the same models and messages as ``check-config``.

``settle`` is the one rule for start-up and SIGHUP (and ``edge-gateway config show``): the
file, then each stored layer that validates on it, the device's layer first (it may name
the groups whose layers count); a stored layer that does not (a stricter release, a file
edited under it) is set aside for this run, not taken out of the store: after a rollback to
the release that accepted it, or a SIGHUP that fixes the file, it runs again. Every remote
update is checked the same way before it is applied (``checked``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import file as configfile
from gateway.config.models import Config
from gateway.remote import store
from gateway.remote.layers import DEVICE, Layer, compose, local_only, refused_keys
from gateway.trust.keys import KeyLoadError, Keyring

REMOTE = "remote config"


@dataclass(frozen=True)
class Effective:
    """The effective config, with the settings it was built from and where each top-level
    key came from."""

    config: Config
    # The settings as written in the file and the layers, before defaults.
    data: dict[str, Any]
    # Per top-level key: "file", "group G v3" or "device v7".
    origins: dict[str, str]


def build(document: configfile.Document, layers: Mapping[str, Layer], base_dir: Path) -> Effective:
    """Raises ``configfile.ConfigError`` when the layers do not validate on this file."""
    if not layers:
        return Effective(document.config, document.data, dict.fromkeys(document.data, "file"))
    data, origins = compose(document.data, layers)
    return Effective(configfile.validate(data, REMOTE, base_dir), data, origins)


class Invalid(Exception):
    """Layers that do not lead to a config this device can run; ``FIELD: message``."""


def checked(
    document: configfile.Document, layers: Mapping[str, Layer], base_dir: Path
) -> tuple[Config, Keyring]:
    """The config ``layers`` lead to on ``document`` and the keys it trusts, or ``Invalid``:
    a layer sets a key no layer may, the whole does not validate, it trusts no key, or a
    trusted key does not load. Reads trusted key files: call it off the event loop."""
    for layer in layers.values():
        refused = refused_keys(layer.scope, layer.config) + local_only(layer.config)
        if refused:
            raise Invalid(f"{refused[0]}: cannot be set remotely")
    try:
        config = build(document, layers, base_dir).config
    except configfile.ConfigError as exc:
        raise Invalid(first_problem(exc)) from None
    if layers and not config.remote_config.trusted_keys:
        raise Invalid("remote_config.trusted_keys: cannot be emptied")
    try:
        keyring = Keyring.load(config.remote_config.trusted_keys)
    except KeyLoadError as exc:
        raise Invalid(f"remote_config.trusted_keys: {exc}") from None
    return config, keyring


@dataclass(frozen=True)
class SetAside:
    """A stored layer that does not validate on this file, and why, as ``config/state``
    says it: ``invalid config: FIELD: message``."""

    layer: Layer
    reason: str


@dataclass(frozen=True)
class Settled:
    config: Config
    keyring: Keyring
    # The stored layers that run, and those set aside for this run (device first).
    kept: Mapping[str, Layer] = field(default_factory=dict)
    set_aside: tuple[SetAside, ...] = ()

    @property
    def problem(self) -> str | None:
        """Why the device does not run the config it was given remotely, or None."""
        if not self.set_aside:
            return None
        first = self.set_aside[0]
        return f"{first.layer.scope} v{first.layer.version}: {first.reason}"

    def versions(self) -> dict[str, int]:
        return {scope: layer.version for scope, layer in sorted(self.kept.items())}


def settle(document: configfile.Document, stored: Mapping[str, Layer], base_dir: Path,
           file: str) -> Settled:
    """The config ``document`` runs with the ``stored`` layers that validate on it. Raises
    ``ConfigError`` only for the file itself (named ``file``): its own trusted keys do not
    load. Reads trusted key files: call it off the event loop."""
    try:
        config, keyring = document.config, Keyring.load(document.config.remote_config
                                                        .trusted_keys)
    except KeyLoadError as exc:
        issue = configfile.ConfigIssue(file, None, "remote_config.trusted_keys", str(exc))
        raise configfile.ConfigError([issue]) from None
    kept: dict[str, Layer] = {}
    set_aside: list[SetAside] = []
    for scope in sorted(stored, key=lambda s: (s != DEVICE, s)):
        layer = stored[scope]
        try:
            config, keyring = checked(document, {**kept, scope: layer}, base_dir)
        except Invalid as exc:
            set_aside.append(SetAside(layer, f"invalid config: {exc}"))
            continue
        kept[scope] = layer
    return Settled(config, keyring, kept, tuple(set_aside))


def load(path: Path) -> Effective:
    """``config show``: the file and the stored layers under its ``state_dir`` that run on
    it, read without changing anything. Raises ``ConfigError`` (``ValueError`` for a store
    file that is not one)."""
    document = configfile.load_document(path)
    stored = store.read(store.path_in(document.config.state_dir))
    base_dir = path.resolve().parent
    settled = settle(document, stored.layers, base_dir, str(path))
    return build(document, settled.kept, base_dir)


def first_problem(error: configfile.ConfigError) -> str:
    """``FIELD: message`` of the first issue, for a one-line reason on the state topic."""
    issue = error.issues[0]
    return f"{issue.field}: {issue.message}" if issue.field else issue.message
