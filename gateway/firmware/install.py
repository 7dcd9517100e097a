"""Installing a verified bundle into the slot that is not running.

The slot is emptied, the bundle's wheels unpacked into it (``bundle``), a venv created with
the interpreter that runs the daemon (``python -m venv``), and the installer run in it:
by default ``VENV/bin/pip install --no-index --find-links BUNDLE edge-gateway==VERSION``
(``firmware.installer`` replaces it; ``{bundle}``, ``{venv}`` and ``{version}`` are filled
in). Then the new release must import (``VENV/bin/python -I -c "import gateway.cli"``, what its
``check-config`` needs; a failure is ``release does not import: `` and the traceback's last
line), and last its own ``check-config`` reads this device's file: a release that refuses
the configuration is never activated (the unit does not restart a daemon that exits 2).
Each step is a subprocess with a timeout, killed with its children when it runs over or
the update is cancelled; the unpacked wheels are removed once installed. A step that runs
out of disk space (it says ``No space left on device``, or it failed with the disk all but
full) fails with ``space.NoSpace``, as unpacking does.

What the release's bytes decide (a bundle that is not valid, ``bundle.BundleError``; an
installer or a release that rejects them, ``InstallError``) is permanent; what the device
decides (a step killed, timed out or not started, the disk full, the interpreter's venv) is
transient (``failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.firmware import bundle, slots, space
from gateway.firmware.failure import Failure
from gateway.firmware.state import Release

# How long a killed stray install step may take to be gone (a zombie lingers until reaped).
STRAY_WAIT_S = 5.0
DEFAULT_INSTALLER = ("{venv}/bin/pip", "install", "--no-index", "--find-links", "{bundle}",
                     "edge-gateway=={version}")
CHECK_TIMEOUT_S = 120.0
OUTPUT_TAIL_BYTES = 8192
# pip on a device: no questions, no cache growing in the state directory, no self-check.
PIP_ENV = {"PIP_NO_INPUT": "1", "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
# What a step says when the disk is full (strerror of ENOSPC and EDQUOT); a step may say
# only that it failed (`python -m venv` when ensurepip ran out): then less than this free.
FULL_DISK = ("No space left on device", "Disk quota exceeded")
FULL_BELOW_BYTES = 4 << 20


class InstallError(Failure):
    """An install step that failed: permanent when the installer or the release rejected
    the bundle, transient when the step could not start, ran over or was killed."""

    def __init__(self, reason: str, *, permanent: bool = True) -> None:
        super().__init__(reason, permanent=permanent)


def fill(template: Sequence[str], bundle_dir: Path, venv: Path, version: str) -> list[str]:
    """The installer's command line: ``template`` with its placeholders filled in."""
    values = {"{bundle}": str(bundle_dir), "{venv}": str(venv), "{version}": version}
    argv = []
    for arg in template:
        for placeholder, value in values.items():
            arg = arg.replace(placeholder, value)
        argv.append(arg)
    return argv


@dataclass
class Installer:
    """Installs verified bundles into the slots of ``state_dir``, checked against the
    device's config file."""

    state_dir: Path
    config_path: Path
    timeout_s: float
    template: Sequence[str] = DEFAULT_INSTALLER
    python: str = field(default_factory=lambda: sys.executable)
    max_unpacked_bytes: int = bundle.MAX_UNPACKED_BYTES

    async def install(self, release: Release, archive: Path, slot: str) -> None:
        """The release in ``slot``'s venv, ready to run; a ``Failure`` says why not:
        ``InstallError``, ``bundle.BundleError``, or ``space.NoSpace`` when the disk
        filled."""
        root = slots.slot_dir(self.state_dir, slot)
        await asyncio.to_thread(_clear, root)
        wheels = root / "bundle"
        await asyncio.to_thread(bundle.unpack, archive, wheels, self.max_unpacked_bytes)
        venv = slots.venv_of(self.state_dir, slot)
        await _run("python -m venv", [self.python, "-m", "venv", str(venv)], self.timeout_s,
                   root, permanent=False)
        await _run("the installer", fill(self.template, wheels, venv, release.version),
                   self.timeout_s, root)
        command = slots.command_of(self.state_dir, slot)
        if not os.access(command, os.X_OK):
            raise InstallError(f"the installer left no {command}")
        try:
            await _run("import", [str(venv / "bin" / "python"), "-I", "-c", "import gateway.cli"],
                       CHECK_TIMEOUT_S, root)
        except _StepFailed as exc:
            raise InstallError(f"release does not import: {exc.last}") from None
        try:
            await _run("check-config", [str(command), "check-config", str(self.config_path)],
                       CHECK_TIMEOUT_S, root)
        except InstallError as exc:
            raise InstallError(f"{release.version} refuses this device: {exc}",
                               permanent=exc.permanent) from None
        await asyncio.to_thread(shutil.rmtree, wheels, ignore_errors=True)

    async def discard(self, slot: str) -> None:
        """Frees the space a failed install took."""
        await asyncio.to_thread(_clear, slots.slot_dir(self.state_dir, slot))


def _clear(root: Path) -> None:
    """Empties a slot, first ending any process still at work in it: an install step left
    running by a daemon that was killed (outside systemd nothing kills its children, and a
    step runs in a session of its own) would go on writing into the new install."""
    marker = os.fsencode(root)
    strays = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
                strays.append(entry)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to see
    deadline = time.monotonic() + STRAY_WAIT_S
    while any(p.exists() for p in strays) and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(root, ignore_errors=True)


class _StepFailed(InstallError):
    def __init__(self, reason: str, *, permanent: bool, last: str) -> None:
        super().__init__(reason, permanent=permanent)
        self.last = last


async def _run(name: str, argv: Sequence[str], timeout_s: float, disk: Path, *,
               permanent: bool = True) -> None:
    """Runs ``argv`` to completion within ``timeout_s``; ``InstallError`` with the last line
    it wrote when it fails, ``permanent`` when it exited by itself with a status, transient
    when it could not start, ran over or was killed; ``space.NoSpace`` when it failed for
    want of space on ``disk``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, **PIP_ENV}, start_new_session=True)
    except OSError as exc:
        raise InstallError(f"{name}: cannot start {argv[0]}: {exc.strerror or exc}",
                           permanent=False) from None
    assert proc.stdout is not None
    tail = b""
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await proc.stdout.read(4096):
                tail = (tail + chunk)[-OUTPUT_TAIL_BYTES:]
            code = await proc.wait()
    except TimeoutError:
        raise InstallError(f"{name} did not finish within {timeout_s:g} s",
                           permanent=False) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
    if code < 0:
        raise InstallError(f"{name} was killed by {_signal_name(-code)}", permanent=False)
    if code != 0:
        said = tail.decode(errors="replace")
        if (any(full in said for full in FULL_DISK)
                or space.free_bytes(disk) < FULL_BELOW_BYTES):
            raise space.filled(disk, f"running {name}")
        lines = [line.strip() for line in said.splitlines()]
        last = next((line for line in reversed(lines) if line), "no output")
        raise _StepFailed(f"{name} exited {code}: {last}", permanent=permanent, last=last)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
