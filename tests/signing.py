"""The envelope of docs/PROTOCOL.md section 4.1, written here from that text with PyNaCl
alone, so the device's verifier is tested against an independent signer (and can be fed
forgeries of every kind)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def kid(key: SigningKey) -> str:
    return hashlib.sha256(bytes(key.verify_key)).digest()[:8].hex()


def public_hex(key: SigningKey) -> str:
    return bytes(key.verify_key).hex()


def config_payload(version: int, config: dict[str, Any], device: str | None = None,
                   group: str | None = None, ttl_s: float = 3600, age_s: float = 0,
                   kind: str = "config") -> bytes:
    issued = time.time() - age_s
    body: dict[str, Any] = {"kind": kind, "version": version, "issued_at": issued,
                            "expires_at": issued + ttl_s, "config": config}
    if device is not None:
        body["device"] = device
    if group is not None:
        body["group"] = group
    return json.dumps(body).encode()


def envelope(key: SigningKey, payload: bytes, *, alg: str = "Ed25519",
             key_id: str | None = None, signed: bytes | None = None) -> bytes:
    """``signed``: the bytes the signature covers, when a test wants them to differ."""
    sig = key.sign(payload if signed is None else signed).signature
    return json.dumps({"alg": alg, "kid": key_id or kid(key), "payload": b64(payload),
                       "sig": b64(sig)}).encode()


def publish(port: int, topic: str, payload: bytes, retain: bool = True) -> None:
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-s"]
    if retain:
        args.append("-r")
    subprocess.run(args, input=payload, check=True, timeout=10)


def clear_retained(port: int, topic: str) -> None:
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-r",
                    "-n"], check=True, timeout=10)


def write_public(path: Path, key: SigningKey) -> Path:
    path.write_text(public_hex(key) + "\n")
    return path
