"""The remote layers accepted and stored, so a restart rebuilds the same effective config and
an older version stays refused.

One small JSON file under ``state_dir/remote/``, written atomically after every change: per
scope the accepted version and its top-level keys, and the last version that was rolled back
(a retained envelope arrives again at every reconnect; a version that failed once is not
tried again until a newer one comes). It changes only when an update is applied or rolled
back: a stored layer that no longer validates is set aside for the run, not taken out
(``gateway.remote.startup``), so it stays here for inspection and for the release or file it
validates on. A corrupt file is set aside and the device runs on its local file, saying so
loudly: a device in a cabinet must come back up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog

from gateway.remote.layers import Applied, Layer
from gateway.statefile import Offload, read_json, set_aside, write_atomic

log = structlog.get_logger(__name__)


def _decode(data: Any) -> Applied:
    if not isinstance(data, dict):
        raise TypeError("not an object")
    layers = {
        scope: Layer(scope, int(entry["version"]), dict(entry["config"]))
        for scope, entry in data.get("layers", {}).items()
    }
    failed = {scope: int(version) for scope, version in data.get("failed", {}).items()}
    return Applied(layers, failed)


def _encode(applied: Applied) -> bytes:
    data = {
        "layers": {
            scope: {"version": layer.version, "config": dict(layer.config)}
            for scope, layer in applied.layers.items()
        },
        "failed": dict(applied.failed),
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def read(path: Path) -> Applied:
    """The applied layers in ``path`` (none if it does not exist); ``ValueError`` if it is
    not a store file."""
    try:
        data = read_json(path)
        return Applied() if data is None else _decode(data)
    except (UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def path_in(state_dir: Path) -> Path:
    """Where the applied layers are kept under ``state_dir``."""
    return state_dir / "remote" / "layers.json"


class LayerStore:
    """The applied layers on disk, written atomically; the one file of remote config's state."""

    def __init__(self, path: Path, offload: Offload) -> None:
        self._path = path
        self._offload = offload

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> Applied:
        """The applied layers; a corrupt file is set aside and none are applied."""
        try:
            return read(self._path)
        except ValueError as exc:
            aside = set_aside(self._path)
            log.error("remote.store_corrupt", file=str(self._path), moved_to=str(aside),
                      error=str(exc))
            return Applied()

    async def save(self, applied: Applied) -> None:
        """Write ``applied``, off the event loop."""
        payload = _encode(applied)
        await self._offload(lambda: write_atomic(self._path, payload))
