"""``edge-gateway sign``: a payload file wrapped in the signed envelope, byte for byte.

The payload is signed as it is on disk, without parsing or re-encoding, because the
signature covers exactly the bytes a device will read (docs/PROTOCOL.md section 4.1). This
is the low-level tool: it does not check what the payload says.
"""

from __future__ import annotations

from pathlib import Path

from gateway.trust.envelope import sign
from gateway.trust.keys import read_private_key


def sign_file(payload_path: Path, key_path: Path) -> bytes:
    """The envelope; raises ``KeyLoadError`` for the key, ``OSError`` for the payload."""
    key = read_private_key(key_path)
    return sign(payload_path.read_bytes(), key)
