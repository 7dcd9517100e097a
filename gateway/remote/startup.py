"""The config a device starts on: its file with the stored layers that validate on it.

Nothing remote may keep a device down, and nothing the operator chose may be lost silently.
The store holds what was accepted remotely and start-up never rewrites it: a stored layer
that no longer validates (a stricter release, a file edited under it, a hand edit of the
store) is set aside for this run (``effective.settle``); the reconfigurer logs it and
reports its scope ``rejected`` with ``invalid config: FIELD: message`` once the uplink
connects. The layer
stays in the store, so the release that accepted it (after a rollback) or a file fixed by
SIGHUP runs it again, and the retained envelope that brought it, delivered again at
connect, is the applied version: ignored. Exit status 2 stays for a bad local file: one
whose own trusted keys do not load.

Blocking (the store, trusted key files): run it off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import file as configfile
from gateway.remote import effective
from gateway.remote.layers import Applied
from gateway.remote.store import LayerStore


@dataclass(frozen=True)
class Start:
    """The config a device starts on: its file, the stored layers kept, and those set aside."""

    document: configfile.Document
    # What the store holds: the layers accepted remotely and the versions rolled back.
    stored: Applied
    running: effective.Settled


def settle(path: Path, document: configfile.Document, store: LayerStore) -> Start:
    """Raises ``ConfigError`` only for the file itself."""
    stored = store.load()
    return Start(document, stored,
                 effective.settle(document, stored.layers, path.resolve().parent, str(path)))
