"""Bundles made to fill the disk: a gzip bomb, a ~100-byte bundle with a 1 TiB sparse
member, 100,000 members, headers that lie about what follows, more than the disk holds,
and an install step that runs out of space. Each is refused before it writes (or, when the
disk fills anyway, stopped), and leaves nothing behind."""

from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.firmware import bundle, space
from gateway.firmware.bundle import BundleError, unpack
from gateway.firmware.install import Installer
from gateway.firmware.state import Release

TIB = 1 << 40


class Zeros(io.RawIOBase):
    """``size`` zero bytes, made as they are read."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def bomb(path: Path, size: int) -> Path:
    """One wheel of ``size`` zeros, compressed as it is streamed (1 GiB makes 1 MiB)."""
    info = tarfile.TarInfo("bomb-1-py3-none-any.whl")
    info.size = size
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        tar.addfile(info, io.BufferedReader(Zeros(size), 1 << 20))
    return path


def sparse(path: Path, real_size: int) -> Path:
    """A GNU sparse member that stands for ``real_size`` bytes and stores none."""
    info = tarfile.TarInfo("big-1-py3-none-any.whl")
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    # The real size at 483, base-256 (too large for octal); no map entries: all a hole.
    header[483:495] = b"\x80" + real_size.to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    path.write_bytes(gzip.compress(bytes(header) + bytes(1024), 9))
    return path


def test_a_gzip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = bomb(tmp_path / "bomb.tar.gz", 1 << 30)
    assert archive.stat().st_size < 1.5 * (1 << 20)
    with pytest.raises(BundleError) as refused:
        unpack(archive, tmp_path / "out")
    assert str(refused.value) == ("bad bundle: unpacks to more than 536870912 bytes "
                                  "(firmware.max_unpacked_bytes)")
    assert refused.value.permanent
    assert not (tmp_path / "out").exists()


def test_a_bundle_larger_than_the_free_space_is_no_space(
        tmp_path: Path, small_disk: Callable[[Path, str], Path]) -> None:
    disk = small_disk(tmp_path / "disk", "8m")
    archive = bomb(tmp_path / "bomb.tar.gz", 64 << 20)
    with pytest.raises(space.NoSpace) as full:
        unpack(archive, disk / "out")
    assert str(full.value) == "not enough space: need 64 MiB, have 8 MiB"
    assert not full.value.permanent
    assert list(disk.iterdir()) == []


def test_a_sparse_member_is_refused(tmp_path: Path) -> None:
    archive = sparse(tmp_path / "sparse.tar.gz", TIB)
    assert archive.stat().st_size < 200
    with tarfile.open(archive) as tar:
        member = tar.next()
        assert member is not None and member.issparse() and member.size == TIB
    with pytest.raises(BundleError) as refused:
        unpack(archive, tmp_path / "out", max_bytes=2 * TIB)
    assert str(refused.value) == "bad bundle: 'big-1-py3-none-any.whl': a sparse file"
    assert not (tmp_path / "out").exists()


def empty_members(count: int) -> bytes:
    """The tar of ``count`` empty wheels: one header, its name and checksum changed for
    each (``tarfile`` takes seconds to make 100,000)."""
    header = bytearray(tarfile.TarInfo("").tobuf(tarfile.GNU_FORMAT))
    header[148:156] = b" " * 8
    base = sum(header)
    blocks = []
    for n in range(count):
        name = f"w{n}-1-py3-none-any.whl".encode()
        header[:len(name)] = name
        header[148:156] = b"%06o\0 " % (base + sum(name))
        blocks.append(bytes(header))
        header[148:156] = b" " * 8
    return b"".join(blocks) + bytes(1024)


def test_a_bundle_of_100k_members_is_refused_at_the_limit(tmp_path: Path) -> None:
    members = empty_members(100_000)
    last = tarfile.TarInfo.frombuf(members[-1536:-1024], "utf-8", "surrogateescape")
    assert last.name == "w99999-1-py3-none-any.whl"  # its checksum holds too
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(gzip.compress(members, 1))
    with pytest.raises(BundleError) as refused:
        unpack(archive, tmp_path / "out")
    assert str(refused.value) == f"bad bundle: more than {bundle.MAX_MEMBERS} members"
    assert not (tmp_path / "out").exists()


def test_headers_that_lie_about_what_follows_get_no_more_than_they_say(
        tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    with tarfile.open(good, "w") as tar:
        info = tarfile.TarInfo("a-1-py3-none-any.whl")
        info.size = 4096
        tar.addfile(info, io.BytesIO(bytes(4096)))
    raw = good.read_bytes()
    # The header says 4 KiB and the archive ends after 1 KiB of it: refused, nothing kept.
    short = tmp_path / "short.tar.gz"
    short.write_bytes(gzip.compress(raw[:512 + 1024]))
    with pytest.raises(BundleError, match=r"^bad bundle: "):
        unpack(short, tmp_path / "short")
    assert not (tmp_path / "short").exists()
    # The header says 1 KiB and 4 KiB follow: the wheel gets the 1 KiB it said (what
    # follows does not read as a header: tarfile takes it for the end).
    long = tmp_path / "long.tar.gz"
    header = bytearray(raw[:512])
    header[124:136] = b"%011o\0" % 1024
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    long.write_bytes(gzip.compress(bytes(header) + b"\x01" * 4096 + bytes(1024)))
    [wheel] = unpack(long, tmp_path / "long")
    assert wheel.read_bytes() == b"\x01" * 1024


def test_a_disk_that_fills_while_unpacking_stops_the_copy(
        tmp_path: Path, small_disk: Callable[[Path, str], Path]) -> None:
    """3,000 one-byte wheels declare 3 KB, and take a 4 KiB page each."""
    disk = small_disk(tmp_path / "disk", "8m")
    archive = tmp_path / "pages.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for n in range(3000):
            info = tarfile.TarInfo(f"w{n}-1-py3-none-any.whl")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(space.NoSpace) as full:
        unpack(archive, disk / "out")
    assert str(full.value) == ("not enough space: the disk filled while unpacking the "
                               "bundle, have 0 MiB")
    assert list(disk.iterdir()) == []


def test_an_install_step_that_runs_out_of_space_is_no_space(tmp_path: Path,
                                                             venv_python: str) -> None:
    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("x-2.0-py3-none-any.whl")
        tar.addfile(info, io.BytesIO(b""))
    full = ["/bin/sh", "-c", "echo 'ERROR: Could not install packages due to an OSError: "
            "[Errno 28] No space left on device'; exit 1"]
    installer = Installer(tmp_path, tmp_path / "gw.yaml", 60, full, python=venv_python)
    release = Release("2.0", "https://example.net/b.tar.gz", "0" * 64, 1)
    with pytest.raises(space.NoSpace) as failed:
        asyncio.run(installer.install(release, archive, "b"))
    assert str(failed.value).startswith(
        "not enough space: the disk filled while running the installer, have ")
