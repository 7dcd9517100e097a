"""Fetching a release bundle over http(s): resumable, bounded, off the event loop.

A ``Download`` runs in a thread of its own (urllib blocks), appending to a file under
``state_dir/firmware/download/``. After a cut (the connection lost, a stall) it resumes with
one ``Range`` request from the bytes it has, and a restart of the daemon resumes the same way
from the file on disk; a server that ignores the range sends the whole file again. It never
takes more than the manifest's ``size``: a ``Content-Length`` or ``Content-Range`` that says
more is refused before the body, and a body that runs over is cut at the first byte too
many. Telemetry must not notice: at most one 64 KiB chunk is buffered at a time, and the
file is synced every MiB, so an SD card never holds a long queue of dirty pages that the
queue's SQLite commits would wait behind.

Nothing a server or the network does can hold it: no byte for ``stall_timeout_s`` is a cut;
the whole download has a deadline, ``ALLOWANCE_S`` plus the bytes still missing at
``min_rate_bytes_s``; and ``stop`` takes effect at once. Each read takes what has come (one
``recv``), and the deadline and ``stop`` shut the connection's socket down from their own
thread, which ends a blocked connect or read there and then (a duplicate of every socket
the request opens is kept for that). A name lookup is bounded by the resolver's timeout.

Failures that waiting cannot fix (too large, a server with another size, an unsatisfiable
range) are ``permanent``; the rest (network errors, stalls, the deadline) are not: they are
retried, with backoff when no byte came, and after ``attempts`` such failures in a row
reported as they are. A full disk is ``space.NoSpace``, never retried here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import re
import socket
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gateway import __version__
from gateway.firmware import space
from gateway.firmware.failure import Failure

CHUNK = 64 * 1024
SYNC_EVERY = 1 << 20
ATTEMPTS = 5
BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# Time the deadline allows beyond the bytes at the minimum rate: connecting, a few cuts.
ALLOWANCE_S = 60.0

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_STOPPED, _DEADLINE = "stopped", "deadline"


@dataclass(frozen=True)
class Limits:
    """How long a download may take: at least ``min_rate_bytes_s`` on average (plus
    ``allowance_s``), and never ``stall_timeout_s`` without a byte."""

    min_rate_bytes_s: float = 2048.0
    stall_timeout_s: float = 30.0
    allowance_s: float = ALLOWANCE_S

    def deadline_s(self, missing: int) -> float:
        """The time allowed for ``missing`` more bytes."""
        return self.allowance_s + missing / self.min_rate_bytes_s


class DownloadError(Failure):
    """A download that did not bring the bundle; ``permanent`` when the server's answer
    says it never will (another size, a body larger than the manifest's)."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason, permanent=permanent)


class Stopped(Exception):
    """``stop`` was called: the file keeps what came, for a later resume."""


class _Cut(Exception):
    """The transfer ended early; worth another request."""


class _Line:
    """The sockets of the request under way, which another thread may shut down: that ends
    a blocked connect, TLS handshake or read in the downloading thread at once. Each is
    watched through a duplicate, so it is still the same socket after the TLS wrapper or
    urllib has given up the original object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._cut = False

    def connect(self, address: tuple[str, int], timeout: float | None = None,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        """``socket.create_connection``, with every socket watched before it connects."""
        host, port = address
        error: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, where in socket.getaddrinfo(host, port,
                                                                type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                self._watch(sock)
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(where)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return sock
        raise error

    def _watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._cut:
                raise OSError("the download was cut")
            self._watched.append(sock.dup())

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for sock in self._watched:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """The request is over: its duplicates closed."""
        with self._lock:
            watched, self._watched = self._watched, []
        for sock in watched:
            sock.close()


class _Plain(http.client.HTTPConnection):
    def __init__(self, host: str, *, line: _Line, **options: Any) -> None:
        super().__init__(host, **options)
        self._create_connection = line.connect


class _Tls(http.client.HTTPSConnection):
    def __init__(self, host: str, *, line: _Line, **options: Any) -> None:
        super().__init__(host, **options)
        self._create_connection = line.connect


class _PlainHandler(urllib.request.HTTPHandler):
    def __init__(self, line: _Line) -> None:
        super().__init__()
        self._line = line

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_Plain, line=self._line), req)


class _TlsHandler(urllib.request.HTTPSHandler):
    def __init__(self, line: _Line) -> None:
        # Made per download: the system's trust store as it is now.
        self._tls = ssl.create_default_context()
        super().__init__(context=self._tls)
        self._line = line

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_Tls, line=self._line), req, context=self._tls)


class Download:
    """The bundle at ``url`` into ``path``, ``size`` bytes exactly, resumed from what
    ``path`` holds; ``run`` in a thread, ``stop`` from another."""

    def __init__(self, url: str, path: Path, size: int, *, limits: Limits = Limits(),
                 attempts: int = ATTEMPTS) -> None:
        self.url, self.path, self.size = url, path, size
        self._limits = limits
        self._attempts = attempts
        self._halted = threading.Event()
        self._why: str | None = None
        self._line = _Line()
        self._deadline_s = 0.0
        # Written by the downloading thread only; read by anyone for progress.
        self.received = self._have()
        self.requests = 0
        self.ranged = 0

    def stop(self) -> None:
        """Ends ``run`` (with ``Stopped``) at once, from any thread."""
        self._halt(_STOPPED)

    def _halt(self, why: str) -> None:
        if self._why is None:
            self._why = why
        self._halted.set()
        self._line.cut()

    def _check(self) -> None:
        if self._why == _STOPPED:
            raise Stopped
        if self._why == _DEADLINE:
            raise DownloadError(
                f"too slow: {self.received} of {self.size} bytes within "
                f"{self._deadline_s:g} s (at least {self._limits.min_rate_bytes_s:g} B/s)",
                permanent=False)

    def _have(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def run(self) -> None:
        """Blocking: returns with ``size`` bytes in ``path``, or raises ``DownloadError``,
        ``space.NoSpace`` or ``Stopped``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._deadline_s = self._limits.deadline_s(max(self.size - self._have(), 0))
        timer = threading.Timer(self._deadline_s, self._halt, (_DEADLINE,))
        timer.daemon = True
        timer.start()
        try:
            self._run()
        finally:
            timer.cancel()
            timer.join()

    def _run(self) -> None:
        failures = 0
        while (have := self._have()) != self.size:
            self._check()
            if have > self.size:
                self.path.unlink()
                have = 0
            try:
                self._fetch(have)
            except _Cut as exc:
                self._check()
                failures = 0 if self._have() > have else failures + 1
                if failures >= self._attempts:
                    raise DownloadError(f"download failed: {exc}", permanent=False) from None
                if failures:
                    self._halted.wait(min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (failures - 1)))
        self.received = self.size

    def _fetch(self, offset: int) -> None:
        headers = {"User-Agent": f"edge-gateway/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            self.ranged += 1
        self.requests += 1
        request = urllib.request.Request(self.url, headers=headers)
        opener = urllib.request.build_opener(_PlainHandler(self._line),
                                             _TlsHandler(self._line))
        try:
            try:
                response = opener.open(request, timeout=self._limits.stall_timeout_s)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 416:
                    raise DownloadError(f"the server has fewer than {self.size} bytes",
                                        permanent=True) from None
                raise _Cut(f"HTTP {exc.code} {exc.reason}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._check()
                raise _Cut(self._describe(exc)) from None
            with response:
                start = self._start(response, offset)
                self._receive(response, start)
        finally:
            self._line.release()

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
        try:
            with self.path.open("r+b" if start else "wb") as file:
                file.truncate(start)
                file.seek(start)
                try:
                    total = self._copy(response, file, start)
                finally:
                    # What came is kept for a resume: on disk before anything else happens.
                    file.flush()
                    os.fsync(file.fileno())
        except OSError as exc:
            if space.is_full(exc):
                raise space.filled(self.path.parent, "downloading") from None
            raise
        if total < self.size:
            raise _Cut(f"connection closed after {total} of {self.size} bytes")

    def _copy(self, response: http.client.HTTPResponse, file: IO[bytes], start: int) -> int:
        total = start
        unsynced = 0
        while True:
            try:
                # What has come, up to a chunk: one byte past the size is enough to know
                # the body runs over.
                chunk = response.read1(min(CHUNK, self.size + 1 - total))
            except (OSError, http.client.HTTPException) as exc:
                self._check()
                raise _Cut(self._describe(exc)) from None
            self._check()
            if not chunk:
                return total
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

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
            exc = exc.reason
        if isinstance(exc, TimeoutError):
            return f"stalled: no byte for {self._limits.stall_timeout_s:g} s"
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def sha256_of(path: Path) -> str:
    """The file's sha256, in hex."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()

