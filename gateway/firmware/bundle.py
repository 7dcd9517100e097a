"""Unpacking a release bundle (docs/PROTOCOL.md section 6.2): a ``.tar.gz`` of wheels at its
top level.

Its sha256 was checked against a signed manifest, so it is what the operator built; it is
still unpacked as if it were not: only regular files named ``*.whl`` directly at the top
(a leading ``./`` is allowed), so no absolute path, ``..``, link, device node, sparse file
or nested directory ever reaches the disk, and each wheel is copied out byte by byte rather
than "extracted" with whatever metadata the archive carries.

Nor can it fill the disk: every header is read first, and the bundle is refused as soon as
it has more than ``MAX_MEMBERS`` members or declares more than ``max_bytes`` (a gzip bomb
declares what it expands to), before a byte is written; what it declares must be free on
the disk; and the copy counts what it writes against what the headers said. A refusal of
the bundle is ``BundleError`` (``permanent``: the same bytes are refused every time); a disk
too full for it is ``space.NoSpace``, and any other ``OSError`` is the disk's, not the
bundle's. Whatever the failure, nothing of it is left in ``into``.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from gateway.firmware import space
from gateway.firmware.failure import Failure

MAX_MEMBERS = 10_000
MAX_UNPACKED_BYTES = 512 << 20  # firmware.max_unpacked_bytes' default
CHUNK = 64 * 1024


class BundleError(Failure):
    """A bundle that is not valid for this device; the same bytes always are not."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, permanent=True)


def _wheel_name(member: tarfile.TarInfo) -> str:
    path = PurePosixPath(member.name)
    parts = [p for p in path.parts if p != "."]
    if path.is_absolute() or len(parts) != 1 or parts[0] == "..":
        raise BundleError(f"bad bundle: {member.name!r}: only wheels at the top level")
    if member.issparse():
        raise BundleError(f"bad bundle: {member.name!r}: a sparse file")
    if not member.isfile():
        raise BundleError(f"bad bundle: {member.name!r}: not a regular file")
    if not parts[0].endswith(".whl"):
        raise BundleError(f"bad bundle: {member.name!r}: not a wheel")
    return parts[0]


def _wheels(tar: tarfile.TarFile, max_bytes: int) -> list[tuple[tarfile.TarInfo, str]]:
    """Every member's header, each checked as it comes: a bundle too large, with too many
    members or anything but wheels is refused before the rest of it is decompressed."""
    wheels: list[tuple[tarfile.TarInfo, str]] = []
    declared = 0
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise BundleError(f"bad bundle: more than {MAX_MEMBERS} members")
        if member.isdir() and PurePosixPath(member.name).parts in ((), (".",)):
            continue  # the archive's own top directory entry, "./"
        name = _wheel_name(member)
        declared += member.size
        if declared > max_bytes:
            raise BundleError(f"bad bundle: unpacks to more than {max_bytes} bytes "
                              "(firmware.max_unpacked_bytes)")
        wheels.append((member, name))
    return wheels


def _copy(source: IO[bytes], target: Path, size: int) -> None:
    """``size`` bytes from ``source``; a member that would give more is refused."""
    written = 0
    with target.open("xb") as out:
        while chunk := source.read(min(CHUNK, size + 1 - written)):
            written += len(chunk)
            if written > size:
                raise BundleError(f"bad bundle: {target.name!r}: more than its header says")
            out.write(chunk)
    if written < size:
        raise BundleError(f"bad bundle: {target.name!r}: ends before its header says")


def unpack(archive: Path, into: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> list[Path]:
    """The bundle's wheels, copied into the empty directory ``into``; ``BundleError`` for
    anything else in it, an archive that does not read or unpacks to more than
    ``max_bytes``, ``space.NoSpace`` when it does not fit, ``OSError`` from the disk."""
    into.mkdir(parents=True)
    try:
        return _unpack(archive, into, max_bytes)
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)
        raise


def _unpack(archive: Path, into: Path, max_bytes: int) -> list[Path]:
    wheels: list[Path] = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _wheels(tar, max_bytes)
            space.require(into, sum(member.size for member, _ in members))
            for member, name in members:
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                target = into / name
                with source:
                    _copy(source, target, member.size)
                wheels.append(target)
    except FileExistsError as exc:
        raise BundleError(f"bad bundle: {Path(str(exc.filename)).name!r} twice") from None
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BundleError(f"bad bundle: {exc}") from None
    except OSError as exc:
        if space.is_full(exc):
            raise space.filled(into, "unpacking the bundle") from None
        raise
    if not wheels:
        raise BundleError("bad bundle: no wheels in it")
    return wheels
