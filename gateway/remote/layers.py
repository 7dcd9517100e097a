"""The effective config: the local file, then each group's layer in ``groups`` order, then
the device's layer, each replacing the top-level keys it carries (docs/PROTOCOL.md
section 5.2).

Composition is a pure function of the file's settings and the applied layers, so the order
in which a group and a device update arrived cannot change the result, and ``config show``
can name where each top-level key came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.trust.keys import HEX_KEY

DEVICE = "device"

# Keys that name the device and where its state lives: a remote update cannot move them.
NEVER_REMOTE = frozenset({"device_id", "state_dir"})

# Keys that name a command to run or a local file to read: whoever holds a signing key must
# not be able to make a device run a program or read its files (a key path in
# ``remote_config.trusted_keys`` too; a key written inline is fine). Null is fine: it names
# nothing.
LOCAL_ONLY = (
    ("firmware", "installer"),
    ("mqtt", "password_file"),
    ("mqtt", "tls", "ca_file"),
    ("mqtt", "tls", "cert_file"),
    ("mqtt", "tls", "key_file"),
)


@dataclass(frozen=True)
class Layer:
    """One scope's applied update: its version and the top-level keys it replaces."""

    scope: str  # "device" or "group:G"
    version: int
    config: Mapping[str, Any]

    @property
    def origin(self) -> str:
        """Where its keys come from, as ``config show`` names it."""
        if self.scope == DEVICE:
            return f"device v{self.version}"
        return f"group {group_of(self.scope)} v{self.version}"


def group_scope(group: str) -> str:
    """The scope of group ``group``: ``group:G``."""
    return f"group:{group}"


def group_of(scope: str) -> str:
    """The group a ``group:G`` scope names."""
    return scope.removeprefix("group:")


def refused_keys(scope: str, config: Mapping[str, Any]) -> list[str]:
    """Top-level keys this scope may not set: a group's layer cannot move a device between
    groups (the device's own layer can), and no layer can rename the device or its state."""
    refused = NEVER_REMOTE if scope == DEVICE else NEVER_REMOTE | {"groups"}
    return sorted(refused & config.keys())


def local_only(config: Mapping[str, Any]) -> list[str]:
    """The dotted keys of ``config`` (a layer's top-level keys) that only the device's own
    file may set."""
    found = []
    for path in LOCAL_ONLY:
        value: Any = config
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            found.append(".".join(path))
    remote = config.get("remote_config")
    keys = remote.get("trusted_keys") if isinstance(remote, Mapping) else None
    if isinstance(keys, list):
        found.extend(f"remote_config.trusted_keys.{index}" for index, entry in enumerate(keys)
                     if isinstance(entry, str) and not HEX_KEY.fullmatch(entry.strip()))
    return found


def compose(
    file: Mapping[str, Any], layers: Mapping[str, Layer]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The effective settings and the origin of each top-level key (``file``,
    ``group G v3``, ``device v7``)."""
    data = dict(file)
    origins = dict.fromkeys(data, "file")
    device = layers.get(DEVICE)
    groups = data.get("groups", [])
    if device is not None and "groups" in device.config:
        groups = device.config["groups"]
    ordered = [layers.get(group_scope(g)) for g in groups if isinstance(g, str)]
    for layer in [*ordered, device]:
        if layer is not None:
            data.update(layer.config)
            origins.update(dict.fromkeys(layer.config, layer.origin))
    return data, origins


@dataclass(frozen=True)
class Applied:
    """The layers a device has applied, by scope, and per scope the version rolled back last."""

    layers: Mapping[str, Layer] = field(default_factory=dict)
    # Per scope, the highest version that was rolled back.
    failed: Mapping[str, int] = field(default_factory=dict)

    def version(self, scope: str) -> int:
        """The version applied in ``scope``; 0 before any."""
        layer = self.layers.get(scope)
        return layer.version if layer is not None else 0

    def versions(self) -> dict[str, int]:
        """The applied version per scope, as the heartbeat's ``config_version`` says it."""
        return {scope: layer.version for scope, layer in sorted(self.layers.items())}
