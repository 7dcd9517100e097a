"""Keys: kid as docs/PROTOCOL.md section 4.2 computes it, text forms, key files and the
keyring's errors."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import nacl.signing
import pytest

from gateway.trust.keys import (
    KeyLoadError,
    Keyring,
    PrivateKey,
    PublicKey,
    kid_of,
    read_private_key,
    read_public_key,
)


def test_kid_is_the_first_8_bytes_of_sha256_of_the_raw_public_key() -> None:
    key = PrivateKey.generate()
    raw = bytes(nacl.signing.SigningKey(bytes.fromhex(key.text())).verify_key)
    assert key.public.raw == raw
    assert key.public.kid == hashlib.sha256(raw).hexdigest()[:16] == kid_of(raw)
    assert len(key.public.kid) == 16


def test_text_forms_round_trip_and_tolerate_surrounding_whitespace() -> None:
    key = PrivateKey.generate()
    assert PrivateKey.from_text(key.text() + "\n").public == key.public
    assert PublicKey.from_text(f"  {key.public.text().upper()}\n") == key.public
    assert len(key.text()) == len(key.public.text()) == 64
    assert key.text() not in repr(key)
    assert key.public.kid in repr(key)


def test_a_signature_verifies_only_for_its_payload_and_key() -> None:
    key, other = PrivateKey.generate(), PrivateKey.generate()
    signature = key.sign(b"payload")
    assert len(signature) == 64
    assert key.public.verifies(b"payload", signature)
    assert not key.public.verifies(b"payloaD", signature)
    assert not other.public.verifies(b"payload", signature)
    assert not key.public.verifies(b"payload", signature[:63])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ab" * 31, "not a public key (64 hex characters)"),
        ("zz" * 32, "not a public key (64 hex characters)"),
        ("00" * 32, "not a valid Ed25519 public key"),  # a point of small order
        ("ff" * 32, "not a valid Ed25519 public key"),  # not a point at all
    ],
)
def test_what_is_not_a_public_key(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        PublicKey.from_text(text)
    assert str(caught.value) == message


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_keyring_from_keys_and_files(tmp_path: Path) -> None:
    a, b, c = (PrivateKey.generate() for _ in range(3))
    pub = write(tmp_path / "b.pub", b.public.text() + "\n")
    keyring = Keyring.load([a.public.text(), str(pub), a.public.text().upper()])
    assert len(keyring) == 2
    assert keyring.get(a.public.kid) == a.public
    assert keyring.get(b.public.kid) == b.public
    assert c.public.kid not in keyring
    assert keyring.get(c.public.kid) is None
    assert set(keyring) == {a.public, b.public}
    assert keyring == Keyring([b.public, a.public])
    assert Keyring.load([]) == Keyring([])


def test_keyring_errors_are_one_line_naming_the_file_or_entry(tmp_path: Path) -> None:
    missing = tmp_path / "gone.pub"
    cases = [
        (str(missing), f"cannot read key file {missing}: No such file or directory"),
        (str(tmp_path), f"cannot read key file {tmp_path}: a directory, not a regular file"),
        (str(write(tmp_path / "bad.pub", "hello\n")),
         f"key file {tmp_path / 'bad.pub'}: not a public key (64 hex characters)"),
        (str(write(tmp_path / "big.pub", "0" * 2000)),
         f"key file {tmp_path / 'big.pub'}: too large to be a key"),
        (str(write(tmp_path / "utf.pub", "é" * 32)),
         f"key file {tmp_path / 'utf.pub'}: not a key (64 hex characters)"),
        ("00" * 32, f"trusted key {'00' * 32}: not a valid Ed25519 public key"),
    ]
    for entry, message in cases:
        with pytest.raises(KeyLoadError) as caught:
            Keyring.load([entry])
        assert str(caught.value) == message


def test_key_files_round_trip_and_a_pub_file_is_no_signing_key(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    private = write(tmp_path / "op.key", key.text() + "\n")
    public = write(tmp_path / "op.pub", key.public.text() + "\n")
    assert read_private_key(private).public == key.public
    assert read_public_key(public) == key.public
    with pytest.raises(KeyLoadError, match=r"a \.pub file is a public key; use its \.key file"):
        read_private_key(public)
    with pytest.raises(KeyLoadError, match="not a private key"):
        read_private_key(write(tmp_path / "short.key", "abcd\n"))


def load_in_a_thread(entries: list[str]) -> BaseException | None:
    """``Keyring.load`` with a deadline: a path it opened and waited on fails the test
    instead of hanging it."""
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            Keyring.load(entries)
        except KeyLoadError as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"Keyring.load({entries}) is still waiting"
    return outcome[0]


def test_a_fifo_a_device_or_a_directory_is_refused_unopened(tmp_path: Path) -> None:
    # Opening a FIFO for reading waits for a writer: there is none here, so a load that
    # opened it would still be waiting; one that read /dev/zero would read no key.
    fifo = tmp_path / "trusted.pub"
    os.mkfifo(fifo)
    cases = [
        (fifo, "a FIFO"),
        (Path("/dev/zero"), "a character device"),
        (tmp_path, "a directory"),
    ]
    for path, kind in cases:
        error = load_in_a_thread([str(path)])
        assert str(error) == f"cannot read key file {path}: {kind}, not a regular file"
    # A link to a regular key file serves.
    key = PrivateKey.generate()
    link = tmp_path / "link.pub"
    link.symlink_to(write(tmp_path / "real.pub", key.public.text()))
    assert load_in_a_thread([str(link)]) is None
