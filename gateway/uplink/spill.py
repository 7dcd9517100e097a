"""The disk tier of the queue: messages in a SQLite file (WAL), oldest first.

Synchronous and single-threaded by design: the queue calls it from one dedicated
worker thread, never from the event loop. Rows are keyed by the queue's message key,
so their order is the order the messages were queued in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.statefile import set_aside

log = structlog.get_logger(__name__)

# Accounting per row beyond topic and payload: key, sensor, qos and SQLite's own overhead.
ROW_OVERHEAD = 48

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    key INTEGER PRIMARY KEY,
    sensor TEXT NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
)
"""
# A file written before messages could be retained lacks the column; its rows are not.
ADD_RETAIN = "ALTER TABLE messages ADD COLUMN retain INTEGER NOT NULL DEFAULT 0"



@dataclass(frozen=True, slots=True)
class Row:
    """A queued message as the disk tier stores it."""

    key: int
    sensor: str
    topic: str
    qos: int
    payload: bytes
    retain: bool = False


def row_size(topic: str, payload: bytes) -> int:
    """What a row counts against the disk bound, in bytes."""
    return len(topic) + len(payload) + ROW_OVERHEAD


class SpillStore:
    """The queue's SQLite tier: rows by key, within ``max_bytes``. Blocking: one worker
    thread uses it."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._db: sqlite3.Connection | None = None
        self.count = 0
        self.bytes = 0
        self.last_key = 0

    def open(self) -> None:
        """Open the file, or, if it is not a usable queue file, set it aside and start an
        empty one: a device must come back up after a power cut, not loop on an error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            aside = set_aside(self.path, companions=("-wal", "-shm"))
            log.error("queue.corrupt", file=str(self.path), moved_to=str(aside), error=str(exc))
            self._open()

    def _open(self) -> None:
        # Used from one worker thread only, which is not the thread that created it.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL survives a process crash; a power cut may lose
            # the last transactions, never corrupt the file.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
            if "retain" not in columns:
                db.execute(ADD_RETAIN)
            count, size, last = db.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(max(key), 0) FROM messages"
            ).fetchone()
        except sqlite3.Error:
            db.close()
            raise
        self._db = db
        self.count, self.bytes, self.last_key = count, size, last

    @property
    def db(self) -> sqlite3.Connection:
        """The open database; raises if the store is not open."""
        if self._db is None:
            raise RuntimeError("spill store is not open")
        return self._db

    def room(self) -> int:
        """Bytes left under ``max_bytes``."""
        return self.max_bytes - self.bytes

    def append(self, rows: list[Row], evict: bool) -> tuple[int, list[tuple[int, str]]]:
        """Store ``rows`` in order; with ``evict``, delete the oldest rows to make room.

        Returns how many of ``rows`` were stored (a prefix) and the key and sensor of
        each row evicted, for the drop counters.
        """
        sizes = [row_size(r.topic, r.payload) for r in rows]
        evicted: list[tuple[int, str]] = []
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            need = sum(sizes) - self.room()
            while evict and need > 0 and self.count:
                # As many of the oldest rows as make room, and not one more.
                oldest = self.db.execute(
                    "SELECT key, sensor, size FROM messages ORDER BY key LIMIT 64"
                ).fetchall()
                upto = 0
                for key, sensor, size in oldest:
                    if need <= 0:
                        break
                    evicted.append((key, sensor))
                    need -= size
                    self.bytes -= size
                    self.count -= 1
                    upto = key
                self.db.execute("DELETE FROM messages WHERE key <= ?", (upto,))
            stored = 0
            for row, size in zip(rows, sizes, strict=True):
                if size > self.room():
                    break
                self.db.execute(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (row.key, row.sensor, row.topic, row.qos, row.payload, size,
                     int(row.retain)),
                )
                self.count += 1
                self.bytes += size
                # A rewound message comes back with its old key: keep the high-water mark.
                self.last_key = max(self.last_key, row.key)
                stored += 1
        return stored, evicted

    def load(self, after_key: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows with a key above ``after_key``, oldest first."""
        rows = self.db.execute(
            "SELECT key, sensor, topic, qos, payload, retain FROM messages WHERE key > ? "
            "ORDER BY key LIMIT ?",
            (after_key, limit),
        ).fetchall()
        return [Row(k, s, t, q, bytes(p), bool(r)) for k, s, t, q, p, r in rows]

    def delete(self, keys: Iterable[int]) -> None:
        """Delete the rows with these keys (those already gone are skipped)."""
        keys = list(keys)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                gone = self.db.execute(
                    f"DELETE FROM messages WHERE key IN ({marks}) RETURNING size", chunk
                ).fetchall()
                self.count -= len(gone)
                self.bytes -= sum(size for (size,) in gone)

    def close(self) -> None:
        """Close the database; the file keeps the rows."""
        if self._db is not None:
            self._db.close()
            self._db = None
