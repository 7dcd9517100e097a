"""``edge-gateway keygen``: a new Ed25519 key pair as two files, never over an existing one.

The private key is created with ``O_EXCL`` and mode 0600 from its first byte, so it is never
readable by others, not even for a moment, and an old key (which devices may still trust)
is never replaced by accident. If the public key cannot be written, the private key just
made is removed again: a pair is written whole or not at all.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.trust.keys import PrivateKey


@dataclass(frozen=True)
class KeyPairFiles:
    key: PrivateKey
    private_path: Path
    public_path: Path


def pair_paths(prefix: Path) -> tuple[Path, Path]:
    return prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")


def _create(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask only takes bits away; this says exactly what we mean
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_pair(prefix: Path) -> KeyPairFiles:
    """Raises ``FileExistsError`` naming the file when either is there, else ``OSError``."""
    private_path, public_path = pair_paths(prefix)
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
    key = PrivateKey.generate()
    _create(private_path, key.text() + "\n", 0o600)
    try:
        _create(public_path, key.public.text() + "\n", 0o644)
    except BaseException:
        private_path.unlink()
        raise
    return KeyPairFiles(key, private_path, public_path)
