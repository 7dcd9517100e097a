"""Ed25519 keys as the operator writes them and a device trusts them.

Every key is written as 64 hex characters: the raw 32-byte public key (in a ``.pub`` file or
straight in ``remote_config.trusted_keys``), the 32-byte seed in a private ``.key`` file.
Hex fits on one YAML line and needs no parser beyond ``bytes.fromhex``; PEM or OpenSSH
formats would bring a library and choices nobody here needs. A key's ``kid``
(docs/PROTOCOL.md section 4.2) is the hex of the first 8 bytes of sha256 over the raw public
key, so an envelope names its key without carrying it. libsodium (PyNaCl) does the curve
arithmetic.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing

from gateway.regularfile import read_regular

HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
"""A key as text: 32 bytes in hex (surrounding whitespace is allowed and dropped)."""

MAX_KEY_FILE_BYTES = 1024
"""A key file is one line; a larger file is the wrong file, not read to its end."""


class KeyLoadError(Exception):
    """A key that cannot be used; the message is one line naming the file or entry."""


def kid_of(raw_public_key: bytes) -> str:
    """The ``kid`` naming a public key: the hex of the first 8 bytes of its sha256."""
    return hashlib.sha256(raw_public_key).digest()[:8].hex()


class PublicKey:
    """A key that verifies: a point on the curve, not just any 32 bytes."""

    __slots__ = ("_verify_key", "kid", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32 or not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
            raise ValueError("not a valid Ed25519 public key")
        self.raw = raw
        self.kid = kid_of(raw)
        self._verify_key = nacl.signing.VerifyKey(raw)

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Raises ``ValueError`` with a message fit to follow the key's name."""
        text = text.strip()
        if not HEX_KEY.fullmatch(text):
            raise ValueError("not a public key (64 hex characters)")
        return cls(bytes.fromhex(text))

    def text(self) -> str:
        """The key as it is written: 64 hex characters."""
        return self.raw.hex()

    def verifies(self, payload: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature over exactly ``payload``."""
        try:
            self._verify_key.verify(payload, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey(kid={self.kid})"


class PrivateKey:
    """A signing key; its seed never appears in a repr or a log line."""

    __slots__ = ("_signing_key", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._signing_key = nacl.signing.SigningKey(seed)
        self.public = PublicKey(bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls) -> PrivateKey:
        """A new key from the system's random source."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_text(cls, text: str) -> PrivateKey:
        """Raises ``ValueError`` with a message fit to follow the key's name."""
        text = text.strip()
        if not HEX_KEY.fullmatch(text):
            raise ValueError("not a private key (64 hex characters of the seed)")
        return cls(bytes.fromhex(text))

    def text(self) -> str:
        """The seed as it is written in a ``.key`` file: 64 hex characters."""
        return bytes(self._signing_key).hex()

    def sign(self, payload: bytes) -> bytes:
        """The 64-byte Ed25519 signature over ``payload``."""
        return self._signing_key.sign(payload).signature

    def __repr__(self) -> str:
        return f"PrivateKey(kid={self.public.kid})"


def _read_key_file(path: Path) -> str:
    try:
        data = read_regular(path, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyLoadError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyLoadError(f"key file {path}: too large to be a key")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyLoadError(f"key file {path}: not a key (64 hex characters)") from None


def read_public_key(path: Path) -> PublicKey:
    """The public key in a ``.pub`` file; ``KeyLoadError`` naming the file."""
    try:
        return PublicKey.from_text(_read_key_file(path))
    except ValueError as exc:
        raise KeyLoadError(f"key file {path}: {exc}") from None


def read_private_key(path: Path) -> PrivateKey:
    # Both halves of a pair are 64 hex characters; the name is what tells them apart.
    """The signing key in a ``.key`` file; ``KeyLoadError`` naming the file."""
    if path.suffix == ".pub":
        raise KeyLoadError(f"key file {path}: a .pub file is a public key; use its .key file")
    try:
        return PrivateKey.from_text(_read_key_file(path))
    except ValueError as exc:
        raise KeyLoadError(f"key file {path}: {exc}") from None


class Keyring:
    """The public keys a device trusts, by ``kid``: one trust root for config and firmware."""

    __slots__ = ("_by_kid",)

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        self._by_kid = {key.kid: key for key in keys}

    @classmethod
    def load(cls, entries: Iterable[str]) -> Keyring:
        """From ``remote_config.trusted_keys``: each entry a key in hex or a key file's path.

        Relative paths are taken as they are (the config loader anchors them at the
        config file's directory). A path that is not a regular file (a FIFO, a device, a
        directory) is refused unopened. Raises ``KeyLoadError``. The files are read here:
        the daemon calls this off its event loop.
        """
        keys = []
        for entry in entries:
            if HEX_KEY.fullmatch(entry.strip()):
                try:
                    keys.append(PublicKey.from_text(entry))
                except ValueError as exc:
                    raise KeyLoadError(f"trusted key {entry.strip()}: {exc}") from None
            else:
                keys.append(read_public_key(Path(entry)))
        return cls(keys)

    def get(self, kid: str) -> PublicKey | None:
        """The trusted key named ``kid``, or None."""
        return self._by_kid.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(self._by_kid.values())

    def __len__(self) -> int:
        return len(self._by_kid)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keyring) and other._by_kid == self._by_kid

    def __hash__(self) -> int:
        return hash(frozenset(self._by_kid))

    def __repr__(self) -> str:
        return f"Keyring({', '.join(self._by_kid)})"
