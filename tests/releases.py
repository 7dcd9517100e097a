"""Release bundles and firmware manifests, made in the tests as an operator makes them.

A bundle (docs/PROTOCOL.md section 6.2) is a ``.tar.gz`` with wheels at its top level: this
repository's source copied aside with another version (and, for a broken release, a patch),
built with ``pip wheel --no-deps``, next to the wheels of every dependency, which are built
once and kept in the pytest cache (keyed by the dependency list and the interpreter).
Manifests are signed with ``signing.py``'s independent signer.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from signing import envelope

REPO = Path(__file__).resolve().parents[1]
SOURCE_ITEMS = ("pyproject.toml", "README.md", "gateway", "drivers")

# A release whose SHT3x driver never reads: it starts, but fails the health gate.
UNHEALTHY_PATCH = '''
from drivers.errors import SensorTimeout as _Timeout


def _never(self: SHT3x) -> dict[str, float]:
    raise _Timeout("a release that cannot read an SHT3x (made by the tests)")


SHT3x.read = _never  # type: ignore[method-assign]
'''
# A release whose daemon raises at import: `check-config` works, `run` dies at once.
NO_IMPORT_PATCH = ('raise RuntimeError("a release that cannot import its daemon '
                   '(made by the tests)")\n')


def dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(project["project"]["dependencies"])


def dependency_wheels(cache: Path) -> Path:
    """A directory of the dependencies' wheels, built once per dependency list and Python."""
    key = hashlib.sha256(json.dumps([sorted(dependencies()), sys.version,
                                     sys.platform]).encode()).hexdigest()[:16]
    folder = cache / f"deps-{key}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "-w", str(folder), *dependencies()],
        capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (folder / ".complete").touch()
    return folder


def set_version(tree: Path, version: str) -> None:
    """Wherever this tree keeps its version: pyproject's static ``version`` and/or a literal
    ``__version__`` in gateway/__init__.py."""
    changed = False
    pyproject = tree / "pyproject.toml"
    text, count = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{version}"',
                          pyproject.read_text(), count=1)
    if count:
        pyproject.write_text(text)
        changed = True
    init = tree / "gateway" / "__init__.py"
    text, count = re.subn(r'(?m)^__version__ = "[^"]*"$', f'__version__ = "{version}"',
                          init.read_text())
    if count:
        init.write_text(text)
        changed = True
    assert changed, "found no version to set in pyproject.toml or gateway/__init__.py"


def _source_copy(into: Path, version: str, patches: Mapping[str, str]) -> Path:
    tree = into / "project"  # not "src": setuptools takes that for a src layout
    tree.mkdir(parents=True)
    for item in SOURCE_ITEMS:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, tree / item,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, tree / item)
    set_version(tree, version)
    for path, code in patches.items():
        with (tree / path).open("a") as file:
            file.write("\n" + code)
    return tree


def build_releases(variants: Mapping[str, Mapping[str, str]], deps: Path, workdir: Path,
                   ) -> dict[str, Path]:
    """One bundle per version (its patches applied), built in parallel:
    ``{version: bundle path}``."""
    builds = {}
    for version, patches in variants.items():
        root = workdir / f"build-{version}"
        tree = _source_copy(root, version, patches)
        out = root / "wheel"
        builds[version] = (out, subprocess.Popen(
            [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
             "--no-deps", "-w", str(out), str(tree)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    bundles = {}
    for version, (out, proc) in builds.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output.decode()
        bundle = workdir / f"edge-gateway-{version}.tar.gz"
        make_bundle(bundle, [*out.glob("*.whl"), *deps.glob("*.whl")])
        bundles[version] = bundle
    return bundles


def make_bundle(path: Path, wheels: list[Path]) -> None:
    """``tar czf`` of the wheels at the top level (the wheels are compressed already)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for wheel in wheels:
            tar.add(wheel, arcname=wheel.name)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def firmware_payload(channel: str, version: str, url: str, digest: str, size: int, *,
                     percent: float = 100, salt: str | None = None, halt: bool = False,
                     ttl_s: float = 3600, age_s: float = 0) -> bytes:
    issued = time.time() - age_s
    rollout: dict[str, Any] = {"percent": percent}
    if salt is not None:
        rollout["salt"] = salt
    body: dict[str, Any] = {"kind": "firmware", "channel": channel, "version": version,
                            "url": url, "sha256": digest, "size": size, "rollout": rollout,
                            "halt": halt, "issued_at": issued, "expires_at": issued + ttl_s}
    return json.dumps(body).encode()


def manifest(key: SigningKey, channel: str, version: str, url: str, data: bytes | Path,
             **options: Any) -> bytes:
    """The signed envelope of a release whose artifact is ``data`` or the file it names
    (size and sha256 from it unless ``size``/``digest`` say otherwise)."""
    if isinstance(data, Path):
        with data.open("rb") as file:
            size, digest = data.stat().st_size, hashlib.file_digest(file, "sha256").hexdigest()
    else:
        size, digest = len(data), sha256(data)
    size = options.pop("size", size)
    digest = options.pop("digest", digest)
    return envelope(key, firmware_payload(channel, version, url, digest, size, **options))
