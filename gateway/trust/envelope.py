"""The signed envelope (docs/PROTOCOL.md sections 4.1 and 4.3): signing, and verifying
whatever arrives from a broker.

Anyone who can publish on the broker can send a device anything, so verification is ordered
cheapest first and parses nothing it does not have to: the size limit before any parsing,
then the envelope's own small JSON, then the signature. The payload is opaque bytes here; it
is parsed (``payload``) only once its signature verifies.

The envelope is an object with exactly the members ``alg``, ``kid``, ``payload`` and ``sig``,
all strings; ``kid`` is 16 lowercase hex characters, ``payload`` and ``sig`` are base64url in
the canonical form (no padding, no whitespace, unused bits zero), ``sig`` 64 bytes. The
reasons, in the order they are checked:

- ``too large``: more than ``max_bytes``;
- ``not json``: not UTF-8 JSON text;
- ``malformed envelope``: JSON, but not the object above (extra or missing members, other
  types, a repeated member, a bad ``kid`` or base64url, a signature of the wrong length);
- ``unsupported alg``: ``alg`` other than ``Ed25519``;
- ``unknown key``: no trusted key has this ``kid``;
- ``bad signature``: the named key did not sign these payload bytes.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from gateway.trust import strictjson
from gateway.trust.keys import Keyring, PrivateKey
from gateway.trust.rejection import Rejected

ALG = "Ed25519"
DEFAULT_MAX_BYTES = 65536
MEMBERS = frozenset({"alg", "kid", "payload", "sig"})
SIGNATURE_BYTES = 64

_KID = re.compile(r"[0-9a-f]{16}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Verified:
    """A payload that a trusted key signed, and that key's ``kid``."""

    kid: str
    payload: bytes


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    if len(text) % 4 == 1 or not _BASE64URL.fullmatch(text):
        raise Rejected("malformed envelope")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _encode(raw) != text:  # unused bits set: two spellings of one value
        raise Rejected("malformed envelope")
    return raw


def sign(payload: bytes, key: PrivateKey) -> bytes:
    """The envelope, compact JSON, carrying ``payload`` byte for byte."""
    envelope = {
        "alg": ALG,
        "kid": key.public.kid,
        "payload": _encode(payload),
        "sig": _encode(key.sign(payload)),
    }
    return json.dumps(envelope, separators=(",", ":")).encode("ascii")


def verify(data: bytes, keyring: Keyring, max_bytes: int = DEFAULT_MAX_BYTES) -> Verified:
    """The signed payload, or ``Rejected`` with one of the reasons above; nothing else."""
    if len(data) > max_bytes:
        raise Rejected("too large")
    try:
        envelope = strictjson.loads(data, max_depth=1)
    except strictjson.NotJson:
        raise Rejected("not json") from None
    except strictjson.Refused:
        raise Rejected("malformed envelope") from None
    if (
        not isinstance(envelope, dict)
        or envelope.keys() != MEMBERS
        or not all(isinstance(value, str) for value in envelope.values())
    ):
        raise Rejected("malformed envelope")
    if envelope["alg"] != ALG:
        raise Rejected("unsupported alg")
    kid: str = envelope["kid"]
    if not _KID.fullmatch(kid):
        raise Rejected("malformed envelope")
    payload = _decode(envelope["payload"])
    signature = _decode(envelope["sig"])
    if len(signature) != SIGNATURE_BYTES:
        raise Rejected("malformed envelope")
    key = keyring.get(kid)
    if key is None:
        raise Rejected("unknown key")
    if not key.verifies(payload, signature):
        raise Rejected("bad signature")
    return Verified(kid, payload)
