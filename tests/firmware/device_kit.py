"""Real parts for the firmware tests: a loopback HTTP server for release bundles, the unit
(as systemd plays it), and a device made of the two with a subscriber on what it says."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from helpers import Broker, Received, Subscriber, device_config, write_config
from nacl.signing import SigningKey
from releases import manifest
from signing import public_hex, publish

# ----------------------------------------------------------------------------------------
# The releases

GOOD = "90.0.0"
UNHEALTHY = "90.1.0"
NO_IMPORT = "90.2.0"

@dataclass(frozen=True)
class Bundles:
    paths: dict[str, Path]


# ----------------------------------------------------------------------------------------
# The HTTP server


@dataclass
class Served:
    # A file is read as it is sent: the tests' process keeps no bundle in memory.
    data: bytes | Path
    # Send this many bytes of the first whole-file response, then drop the connection.
    cut_at: int | None = None
    # Pace whole-file responses (not ranged ones) to this many bytes per second.
    rate: float | None = None
    # Send no Content-Length: the body ends when the connection closes.
    no_length: bool = False
    # Answer a Range request with the whole file, as a server without ranges does.
    ranges: bool = True
    # Claim this Content-Length, whatever the body is.
    length: int | None = None
    # Send this many bytes of the first whole-file response, then nothing more (the
    # connection open) until the server closes.
    stall_at: int | None = None
    # Never answer a request: accept it and wait until the server closes.
    hang: bool = False
    cuts: int = 0
    stalls: int = 0


@dataclass
class Request:
    path: str
    range: str | None
    status: int = 0
    sent: int = 0
    # The response is over: all of it sent, or the client went away.
    over: bool = False


class FileServer:
    """``http.server`` in a thread; ``Range: bytes=N-`` answered with 206. It serves bytes,
    or files read as they are sent; with a certificate and its key, over TLS. On a free
    port, or on ``port``."""

    def __init__(self, tls: tuple[Path, Path] | None = None, port: int = 0) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[Request] = []
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._http.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
            self.scheme = "https"
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{path}"

    def add(self, path: str, data: bytes | Path, **options: Any) -> str:
        self.files[path] = Served(data, **options)
        return self.url(path)

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == f"/{path}"]

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        request = Request(handler.path, handler.headers.get("Range"))
        self.requests.append(request)
        served = self.files.get(handler.path.lstrip("/"))
        if served is None:
            request.status = 404
            handler.send_error(404)
            return
        if served.hang:
            self._closing.wait()
            request.over = True
            return
        data, start = served.data, 0
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        match = re.fullmatch(r"bytes=(\d+)-", request.range or "") if served.ranges else None
        if match:
            start = int(match[1])
            if start >= size:
                request.status = 416
                handler.send_error(416)
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            handler.send_response(200)
        request.status = 206 if match else 200
        if served.length is not None:
            handler.send_header("Content-Length", str(served.length))
        elif not served.no_length:
            handler.send_header("Content-Length", str(size - start))
        handler.end_headers()
        length = size - start
        if served.cut_at is not None and not match and served.cuts == 0:
            served.cuts += 1
            length = served.cut_at
        stall = served.stall_at is not None and not match and served.stalls == 0
        if stall:
            served.stalls += 1
            length = served.stall_at or 0
        source = data.open("rb") if isinstance(data, Path) else io.BytesIO(data)
        try:
            with source:
                source.seek(start)
                self._send(handler, source, length, None if match else served.rate, request)
            if stall:
                self._closing.wait()
        except OSError:
            handler.close_connection = True
        finally:
            request.over = True

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, source: BinaryIO, length: int,
              rate: float | None, request: Request) -> None:
        started = time.monotonic()
        # Paced, a tenth of a second's worth at a time: a drip at 1 B/s is one byte a second.
        step = 16384 if rate is None else max(1, min(16384, int(rate / 10)))
        while request.sent < length:
            if rate is not None:
                delay = started + request.sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            chunk = source.read(min(step, length - request.sent))
            handler.wfile.write(chunk)
            handler.wfile.flush()
            request.sent += len(chunk)

    def close(self) -> None:
        self._closing.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(10)


# ----------------------------------------------------------------------------------------
# The unit


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:  # fields after the name: state, ppid, pgrp, session
            members.append(int(entry.name))
    return members


class Unit:
    """Plays edge-gateway.service: ``edge-gateway launch -c FILE``, started again after it
    exits 75 or crashes (Restart=on-failure, RestartForceExitStatus=75), not after 0 or 2
    (RestartPreventExitStatus=2; a firmware restart normally stays in the process:
    ``launcher.relaunch``); whatever the process leaves behind is killed with it
    (KillMode=control-group: here, its session)."""

    RESTART_S = 0.3

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.config, self.log_path = config, log
        self.env = env
        self.pids: list[int] = []
        self.exits: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                with self.log_path.open("ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "gateway", "launch", "-c", str(self.config)],
                        stdout=log, stderr=log, start_new_session=True,
                        env={**self.env})
                self._proc = proc
                self.pids.append(proc.pid)
            code = proc.wait()
            for pid in _session_members(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.exits.append(code)
            if self._stopping or code in (0, 2):
                return
            time.sleep(self.RESTART_S)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def kill(self) -> int:
        """SIGKILL to the main process (the unit starts it again); its pid."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(30)
        if proc is not None:
            for pid in _session_members(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------------
# The device

CHANNEL = "stable"


def unit_env(**extra: str) -> dict[str, str]:
    """The daemon's environment: pip in a slot sees only the bundle (no find-links, no
    index from this machine's pip configuration)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k != "STATE_DIRECTORY"}
    return {**env, "PYTHONUNBUFFERED": "1", "PIP_CONFIG_FILE": os.devnull, **extra}


@dataclass
class Device:
    broker: Broker
    workdir: Path
    key: SigningKey
    id: str
    firmware: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = self.workdir / "state"
        self.path = self.workdir / f"{self.id}.yaml"
        self.settings = settings = device_config(
            self.broker.port, self.state_dir, device_id=self.id,
            remote_config={"trusted_keys": [public_hex(self.key)]},
            firmware={"channel": CHANNEL, "health_timeout_s": 8, "max_trial_boots": 2,
                      "progress_interval_s": 0.2, **self.firmware},
            heartbeat={"interval_s": 1},
            logging={"level": "info", "format": "json"},
        )
        write_config(self.path, settings)
        self.seen: list[Received] = []
        self.sub = Subscriber(self.broker.port, f"gw/{self.id}/#")
        self.unit = Unit(self.path, self.workdir / f"{self.id}.log", unit_env(**self.env))

    # -- life ----------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Started, online, and its first firmware report."""
        self.unit.start()
        return self.state(lambda s: True, timeout=30)

    def close(self) -> None:
        self.unit.stop()
        self.sub.close()

    def log(self) -> str:
        return self.unit.log_path.read_text()

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    # -- what it says --------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message within {timeout} s; firmware states "
                                   f"seen: {self.states_seen()}")
            try:
                message = self.sub.get(left)
            except Exception:
                continue
            self.seen.append(message)
            if predicate(message):
                return message

    def state(self, predicate: Callable[[dict[str, Any]], bool] | str,
              timeout: float = 60) -> dict[str, Any]:
        """The next firmware report that matches (a state's name, or a predicate)."""
        test = (lambda s: s["state"] == predicate) if isinstance(predicate, str) else predicate
        message = self.wait_for(
            lambda m: m.topic.endswith("/firmware/state") and test(m.json()), timeout)
        report: dict[str, Any] = message.json()
        return report

    def state_since(self, mark: int, timeout: float = 60) -> dict[str, Any]:
        """The first firmware report among the messages after the first ``mark`` seen,
        waited for if none came yet."""
        for message in self.seen[mark:]:
            if message.topic.endswith("/firmware/state"):
                report: dict[str, Any] = message.json()
                return report
        return self.state(lambda s: True, timeout)

    def next_boot(self, timeout: float = 60) -> str:
        """Waits for a daemon that was not online before to come online; its boot id."""
        booted = {m.json()["boot_id"] for m in self.seen if _online(m)}
        message = self.wait_for(lambda m: _online(m) and m.json()["boot_id"] not in booted,
                                timeout)
        boot: str = message.json()["boot_id"]
        return boot

    def states_seen(self) -> list[str]:
        """The firmware states reported so far, repeats in a row taken once."""
        states: list[str] = []
        for message in self.seen:
            if message.topic.endswith("/firmware/state"):
                name = message.json()["state"]
                if not states or states[-1] != name:
                    states.append(name)
        return states

    def heartbeat(self, predicate: Callable[[dict[str, Any]], bool] = lambda h: True,
                  timeout: float = 30) -> dict[str, Any]:
        message = self.wait_for(lambda m: m.topic.endswith("/heartbeat")
                                and predicate(m.json()), timeout)
        beat: dict[str, Any] = message.json()
        return beat

    def record(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads((self.state_dir / "firmware" / "state.json")
                                           .read_text())
        return found

    def current(self) -> str | None:
        link = self.state_dir / "current"
        return link.readlink().name if link.is_symlink() else None

    # -- what it is sent -----------------------------------------------------------------

    @property
    def manifest_topic(self) -> str:
        return f"gw/firmware/{CHANNEL}/manifest"

    def release(self, version: str, url: str, data: bytes | Path, **options: Any) -> None:
        """Publishes the signed manifest, retained, on the device's channel."""
        key = options.pop("key", self.key)
        channel = options.pop("channel", CHANNEL)
        publish(self.broker.port, self.manifest_topic,
                manifest(key, channel, version, url, data, **options))


def _online(message: Received) -> bool:
    return message.topic.endswith("/status") and message.json()["state"] == "online"


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return result


def fill(disk: Path, name: str = "ballast") -> Path:
    """A file that takes every free byte of ``disk``."""
    path = disk / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = bytes(65536)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError:
                if len(block) == 1:
                    break
                block = block[:len(block) // 2]
    finally:
        os.close(fd)
    return path
