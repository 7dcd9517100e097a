"""The effective config: the local file, then each group's layer in ``groups`` order, then
the device's layer, each replacing the top-level keys it carries (SPEC section 5).

Composition is a pure function of the file's settings and the applied layers, so the order
in which a group and a device update arrived cannot change the result, and ``config show``
can name where each top-level key came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEVICE = "device"

# Keys that name the device and where its state lives: a remote update cannot move them.
NEVER_REMOTE = frozenset({"device_id", "state_dir"})


@dataclass(frozen=True)
class Layer:
    scope: str  # "device" or "group:G"
    version: int
    config: Mapping[str, Any]

    @property
    def origin(self) -> str:
        if self.scope == DEVICE:
            return f"device v{self.version}"
        return f"group {group_of(self.scope)} v{self.version}"


def group_scope(group: str) -> str:
    return f"group:{group}"


def group_of(scope: str) -> str:
    return scope.removeprefix("group:")


def refused_keys(scope: str, config: Mapping[str, Any]) -> list[str]:
    """Top-level keys this scope may not set: a group's layer cannot move a device between
    groups (the device's own layer can), and no layer can rename the device or its state."""
    refused = NEVER_REMOTE if scope == DEVICE else NEVER_REMOTE | {"groups"}
    return sorted(refused & config.keys())


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
