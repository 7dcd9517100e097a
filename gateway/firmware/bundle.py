"""Unpacking a release bundle (SPEC section 5): a ``.tar.gz`` of wheels at its top level.

Its sha256 was checked against a signed manifest, so it is what the operator built; it is
still unpacked as if it were not: only regular files named ``*.whl`` directly at the top
(a leading ``./`` is allowed), so no absolute path, ``..``, link, device node or nested
directory ever reaches the disk, and each wheel is copied out byte by byte rather than
"extracted" with whatever metadata the archive carries.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath


class BundleError(Exception):
    pass


def _wheel_name(member: tarfile.TarInfo) -> str:
    path = PurePosixPath(member.name)
    parts = [p for p in path.parts if p != "."]
    if path.is_absolute() or len(parts) != 1 or parts[0] == "..":
        raise BundleError(f"bad bundle: {member.name!r}: only wheels at the top level")
    if not member.isfile():
        raise BundleError(f"bad bundle: {member.name!r}: not a regular file")
    if not parts[0].endswith(".whl"):
        raise BundleError(f"bad bundle: {member.name!r}: not a wheel")
    return parts[0]


def unpack(archive: Path, into: Path) -> list[Path]:
    """The bundle's wheels, copied into the empty directory ``into``; ``BundleError`` for
    anything else in it or an archive that does not read."""
    into.mkdir(parents=True)
    wheels: list[Path] = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isdir() and PurePosixPath(member.name).parts in ((), (".",)):
                    continue  # the archive's own top directory entry, "./"
                name = _wheel_name(member)
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                target = into / name
                with source, target.open("xb") as out:
                    shutil.copyfileobj(source, out)
                wheels.append(target)
    except FileExistsError as exc:
        raise BundleError(f"bad bundle: {Path(str(exc.filename)).name!r} twice") from None
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BundleError(f"bad bundle: {exc}") from None
    except OSError as exc:
        raise BundleError(f"cannot unpack the bundle: {exc}") from None
    if not wheels:
        raise BundleError("bad bundle: no wheels in it")
    return wheels
