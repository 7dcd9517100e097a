"""Fetching a release bundle over http(s): resumable, bounded, off the event loop.

A ``Download`` runs in a thread of its own (urllib blocks), appending to a file under
``state_dir/firmware/download/``. After a cut (the connection lost, a stall longer than the
read timeout) it resumes with one ``Range`` request from the bytes it has, and a restart of
the daemon resumes the same way from the file on disk; a server that ignores the range sends
the whole file again. It never takes more than the manifest's ``size``: a ``Content-Length``
or ``Content-Range`` that says more is refused before the body, and a body that runs over is
cut at the first byte too many. Telemetry must not notice: one 64 KiB chunk is buffered at a
time, and the file is synced every MiB, so an SD card never holds a long queue of dirty
pages that the queue's SQLite commits would wait behind.

Failures that waiting cannot fix (too large, a server with another size, an unsatisfiable
range) are ``permanent``; the rest are retried, with backoff when no byte came, and after
``attempts`` such failures in a row reported as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

from gateway import __version__

CHUNK = 64 * 1024
SYNC_EVERY = 1 << 20
READ_TIMEOUT_S = 10.0
ATTEMPTS = 5
BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(Exception):
    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


class Stopped(Exception):
    """``stop`` was called: the file keeps what came, for a later resume."""


class _Cut(Exception):
    """The transfer ended early; worth another request."""


class Download:
    def __init__(self, url: str, path: Path, size: int, *,
                 read_timeout_s: float = READ_TIMEOUT_S, attempts: int = ATTEMPTS) -> None:
        self.url, self.path, self.size = url, path, size
        self._timeout = read_timeout_s
        self._attempts = attempts
        self._stop = threading.Event()
        # Written by the downloading thread only; read by anyone for progress.
        self.received = self._have()
        self.requests = 0
        self.ranged = 0

    def stop(self) -> None:
        self._stop.set()

    def _have(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def run(self) -> None:
        """Blocking: returns with ``size`` bytes in ``path``, or raises ``DownloadError`` or
        ``Stopped``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        failures = 0
        while (have := self._have()) != self.size:
            if have > self.size:
                self.path.unlink()
                have = 0
            try:
                self._fetch(have)
            except _Cut as exc:
                if self._stop.is_set():
                    raise Stopped from None
                failures = 0 if self._have() > have else failures + 1
                if failures >= self._attempts:
                    raise DownloadError(f"download failed: {exc}", permanent=False) from None
                if failures and self._stop.wait(
                        min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (failures - 1))):
                    raise Stopped from None

    def _fetch(self, offset: int) -> None:
        headers = {"User-Agent": f"edge-gateway/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            self.ranged += 1
        self.requests += 1
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self._timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416:
                raise DownloadError(f"the server has fewer than {self.size} bytes",
                                    permanent=True) from None
            raise _Cut(f"HTTP {exc.code} {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Cut(_describe(exc)) from None
        with response:
            start = self._start(response, offset)
            self._receive(response, start)

    def _start(self, response: http.client.HTTPResponse, offset: int) -> int:
        """Where this response's body goes in the file; refuses a size that is not ours."""
        length = response.headers.get("Content-Length")
        if response.status == 206 and offset:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match[1]) != offset:
                raise _Cut(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
            total = match[3]
            if total != "*" and int(total) != self.size:
                raise self._wrong_size(int(total))
            if int(match[2]) >= self.size:
                raise self._wrong_size(int(match[2]) + 1)
            return offset
        if response.status != 200:
            raise _Cut(f"HTTP {response.status}")
        if length is not None and length.isdigit() and int(length) != self.size:
            raise self._wrong_size(int(length))
        return 0  # the whole file again: the server ignored the range, or none was asked

    def _wrong_size(self, total: int) -> DownloadError:
        if total > self.size:
            return DownloadError(f"larger than the manifest's {self.size} bytes", permanent=True)
        return DownloadError(f"the server has {total} bytes, the manifest says {self.size}",
                             permanent=True)

    def _receive(self, response: http.client.HTTPResponse, start: int) -> None:
        total = start
        unsynced = 0
        with self.path.open("r+b" if start else "wb") as file:
            file.truncate(start)
            file.seek(start)
            try:
                while not self._stop.is_set():
                    # One byte past the size is enough to know the body runs over.
                    chunk = response.read(min(CHUNK, self.size + 1 - total))
                    if not chunk:
                        break
                    if total + len(chunk) > self.size:
                        raise DownloadError(f"larger than the manifest's {self.size} bytes",
                                            permanent=True)
                    file.write(chunk)
                    total += len(chunk)
                    self.received = total
                    unsynced += len(chunk)
                    if unsynced >= SYNC_EVERY:
                        file.flush()
                        os.fsync(file.fileno())
                        unsynced = 0
            except (OSError, http.client.HTTPException) as exc:
                raise _Cut(_describe(exc)) from None
            finally:
                with contextlib.suppress(OSError):
                    file.flush()
                    os.fsync(file.fileno())
        if self._stop.is_set():
            raise Stopped
        if total < self.size:
            raise _Cut(f"connection closed after {total} of {self.size} bytes")


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
