"""The checks the operator's commands share, each written once: a signing key that loads,
``rich`` for a command that draws a table, an envelope size the devices accept, and a broker
that can be used. Each failure is its command's one line (``Failed``).

Only the operator's commands import this module; what it needs of the operator's side and
of ``gateway.trust`` it imports when a check runs.
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.cli.common import EXIT_INVALID, Failed

if TYPE_CHECKING:
    from gateway.trust.keys import PrivateKey

T = TypeVar("T")


def private_key(path: Path) -> PrivateKey:
    from gateway.trust.keys import KeyLoadError, read_private_key

    try:
        return read_private_key(path)
    except KeyLoadError as exc:
        raise Failed(f"edge-gateway: {exc}", EXIT_INVALID) from None


def require_rich(command: str) -> None:
    """For a command that draws with rich, an optional dependency of the operator's side."""
    try:
        import rich  # noqa: F401  (the command's tables)
    except ImportError:
        raise Failed(f"edge-gateway: {command} needs rich: "
                     "pip install 'edge-gateway[operator]'") from None


def warn_of_size(size: int) -> None:
    """A warning, not a refusal: a device may have raised its limit."""
    from gateway.trust.envelope import DEFAULT_MAX_BYTES

    if size > DEFAULT_MAX_BYTES:
        print(f"edge-gateway: warning: the envelope is {size} bytes; devices refuse more than "
              f"remote_config.max_envelope_bytes ({DEFAULT_MAX_BYTES} by default)",
              file=sys.stderr)


def over_broker(session: Coroutine[Any, Any, T]) -> T:
    """Runs a command's session with the broker; a broker that cannot be used fails it."""
    import asyncio

    from gateway.operator.mqtt import BrokerError

    try:
        return asyncio.run(session)
    except BrokerError as exc:
        raise Failed(f"edge-gateway: {exc}") from None
