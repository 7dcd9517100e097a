"""The effective config: the device file with the applied remote layers on top, validated
whole with the same models and messages as ``check-config``.

Used at start-up, on SIGHUP (a local edit is re-read and the remote layers go on top again,
so neither is lost silently), for every remote update before it is applied (``checked``:
the same rules for a stored layer and a new one), and by ``edge-gateway config show``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import file as configfile
from gateway.config.models import Config
from gateway.remote import store
from gateway.remote.layers import Layer, compose, local_only, refused_keys
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


def load(path: Path) -> Effective:
    """``config show``: the file and the layers applied under its ``state_dir``, read
    without changing anything. Raises ``ConfigError`` (``ValueError`` for a store file
    that is not one)."""
    document = configfile.load_document(path)
    applied = store.read(store.path_in(document.config.state_dir))
    return build(document, applied.layers, path.resolve().parent)


def first_problem(error: configfile.ConfigError) -> str:
    """``FIELD: message`` of the first issue, for a one-line reason on the state topic."""
    issue = error.issues[0]
    return f"{issue.field}: {issue.message}" if issue.field else issue.message
