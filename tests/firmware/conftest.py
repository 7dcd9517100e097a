"""Fixtures of the firmware tests: release bundles built once per session, an HTTP server
per module, devices (each with a Mosquitto of its own, so no retained manifest of one test
reaches the next), small disks (tmpfs mounts of a given size: the tests run as root), and
an interpreter that makes venvs without pip."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from device_kit import GOOD, NO_IMPORT, UNHEALTHY, Bundles, Device, FileServer
from helpers import Broker
from nacl.signing import SigningKey
from releases import NO_IMPORT_PATCH, UNHEALTHY_PATCH, build_releases, dependency_wheels


@pytest.fixture(scope="session")
def bundles(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    deps = dependency_wheels(request.config.cache.mkdir("firmware-wheels"))
    return Bundles(build_releases({
        GOOD: {},
        UNHEALTHY: {"drivers/sht3x.py": UNHEALTHY_PATCH},
        NO_IMPORT: {"gateway/daemon/__init__.py": NO_IMPORT_PATCH},
    }, deps, tmp_path_factory.mktemp("releases")))


@pytest.fixture(scope="session")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An ``Installer.python`` whose ``-m venv`` makes venvs without pip (ensurepip is most
    of a venv's time), for installers that do not need it."""
    python = tmp_path_factory.mktemp("venv-python") / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@" --without-pip\n')
    python.chmod(0o755)
    return str(python)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    server = FileServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def make_device(broker: Broker, tmp_path: Path, key: SigningKey,
                ) -> Iterator[Callable[..., Device]]:
    made: list[Device] = []

    def make(**options: Any) -> Device:
        device = Device(broker, tmp_path, key, f"fw-{os.getpid()}-{len(made)}", **options)
        made.append(device)
        return device

    try:
        yield make
    finally:
        for device in made:
            device.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[Path, str], Path]]:
    """``mount(DIR, "8m")``: a filesystem of that size at DIR, gone after the test."""
    mounted: list[Path] = []

    def mount(where: Path, size: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       check=True)
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", str(where)], check=True)

