"""The envelope of docs/PROTOCOL.md sections 4.1 and 4.3: signed and verified with real keys,
refused for each reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import nacl.signing
import pytest

from gateway.trust.envelope import DEFAULT_MAX_BYTES, Verified, sign, verify
from gateway.trust.keys import Keyring, PrivateKey
from gateway.trust.rejection import Rejected

KEY = PrivateKey.generate()
OTHER = PrivateKey.generate()
STRANGER = PrivateKey.generate()
KEYRING = Keyring([KEY.public, OTHER.public])
PAYLOAD = b'{"kind": "config", "device": "dev-1",\n "version": 3}'


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def fields(envelope: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(envelope)
    return parsed


def encode(members: Any) -> bytes:
    return json.dumps(members).encode()


def reason(data: bytes, keyring: Keyring = KEYRING, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    with pytest.raises(Rejected) as caught:
        verify(data, keyring, max_bytes)
    return caught.value.reason


def test_round_trip_keeps_the_payload_bytes_exactly() -> None:
    for payload in (PAYLOAD, b"", bytes(range(256)), b"\xff\xfe not utf-8"):
        assert verify(sign(payload, KEY), KEYRING) == Verified(KEY.public.kid, payload)


def test_envelope_is_exactly_the_spec_members_checkable_without_this_code() -> None:
    envelope = fields(sign(PAYLOAD, KEY))
    assert list(envelope) == ["alg", "kid", "payload", "sig"]
    assert envelope["alg"] == "Ed25519"
    assert envelope["kid"] == KEY.public.kid
    assert "=" not in envelope["payload"] + envelope["sig"]
    payload = base64.urlsafe_b64decode(envelope["payload"] + "==")
    signature = base64.urlsafe_b64decode(envelope["sig"] + "==")
    assert payload == PAYLOAD
    nacl.signing.VerifyKey(KEY.public.raw).verify(payload, signature)  # raises if not


def test_size_is_checked_first_and_the_limit_is_inclusive() -> None:
    envelope = sign(PAYLOAD, KEY)
    padded = envelope + b" " * (1000 - len(envelope))
    assert verify(padded, KEYRING, max_bytes=1000).payload == PAYLOAD
    assert reason(padded + b" ", max_bytes=1000) == "too large"
    assert reason(b"\xff" * (DEFAULT_MAX_BYTES + 1)) == "too large"
    assert reason(b"[" * (DEFAULT_MAX_BYTES + 1)) == "too large"


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"\xff\xfe", b"NaN", b'{"alg": Infinity}', b"{'alg': 'Ed25519'}",
     '{"alg":"Ed25519"}'.encode("utf-16"), b"\xef\xbb\xbf{}", b'{"a": "\\ud800"}'],
)
def test_not_json(data: bytes) -> None:
    assert reason(data) == "not json"


def mutate(**changes: Any) -> bytes:
    envelope = fields(sign(PAYLOAD, KEY))
    for name, value in changes.items():
        if value is None:
            del envelope[name]
        else:
            envelope[name] = value
    return encode(envelope)


GOOD = fields(sign(PAYLOAD, KEY))


@pytest.mark.parametrize(
    "data",
    [
        encode([GOOD]),
        encode("Ed25519"),
        encode(None),
        mutate(sig=None),
        mutate(extra="x"),
        mutate(kid=123),
        mutate(payload=[GOOD["payload"]]),
        mutate(alg={"name": "Ed25519"}),
        b'{"alg":"Ed25519","alg":"Ed25519",' + encode(GOOD)[1:],
        mutate(kid=KEY.public.kid.upper()),
        mutate(kid=KEY.public.kid[:15]),
        mutate(payload=GOOD["payload"] + "="),
        mutate(payload=GOOD["payload"][:10] + " " + GOOD["payload"][10:]),
        mutate(payload=base64.b64encode(b"\xfb\xff" * 9).decode()),  # standard alphabet
        mutate(payload="AAAAA"),  # no whole byte in the last character
        mutate(sig=b64(b"\x00" * 63)),
        mutate(sig=b64(b"\x00" * 65)),
    ],
)
def test_malformed_envelope(data: bytes) -> None:
    assert reason(data) == "malformed envelope"


def test_non_canonical_trailing_bits_are_refused() -> None:
    # 64 bytes are 86 characters whose last one carries 2 bits and 4 unused ones.
    signature = GOOD["sig"]
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(signature[-1])
    assert last & 0b1111 == 0
    twin = signature[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[
        last | 1]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(signature + "==")
    assert reason(mutate(sig=twin)) == "malformed envelope"


@pytest.mark.parametrize("alg", ["EdDSA", "ed25519", "none", "HS256", ""])
def test_unsupported_alg_is_named_before_anything_about_the_key(alg: str) -> None:
    assert reason(mutate(alg=alg, kid=STRANGER.public.kid)) == "unsupported alg"


def test_unknown_key() -> None:
    assert reason(sign(PAYLOAD, STRANGER)) == "unknown key"
    assert reason(sign(PAYLOAD, KEY), keyring=Keyring([OTHER.public])) == "unknown key"
    assert reason(sign(PAYLOAD, KEY), keyring=Keyring([])) == "unknown key"


def test_tampered_payload_is_a_bad_signature() -> None:
    tampered = PAYLOAD.replace(b"3", b"4")
    assert reason(mutate(payload=b64(tampered))) == "bad signature"
    assert reason(mutate(payload=b64(PAYLOAD + b" "))) == "bad signature"


def test_kid_of_another_trusted_key_is_a_bad_signature() -> None:
    assert reason(mutate(kid=OTHER.public.kid)) == "bad signature"


def test_flipped_signature_bit_is_a_bad_signature() -> None:
    signature = bytearray(KEY.sign(PAYLOAD))
    signature[10] ^= 0x01
    assert reason(mutate(sig=b64(bytes(signature)))) == "bad signature"


def test_signature_of_another_key_under_our_kid_is_a_bad_signature() -> None:
    assert reason(mutate(sig=b64(STRANGER.sign(PAYLOAD)))) == "bad signature"
