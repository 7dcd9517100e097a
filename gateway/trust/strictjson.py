"""JSON as RFC 8259 has it, bounded: what may reach a device from the broker is read with this.

Python's ``json`` is lenient where a signed format must not be: it accepts ``NaN`` and
``Infinity``, keeps the last of two members of the same name (so two readers may disagree on
what a document says), guesses UTF-16 from bytes, and recurses until the interpreter's limit.
Here bytes must be UTF-8, a repeated name or nesting beyond ``max_depth`` is refused, and
every string must be encodable Unicode (no lone surrogates from ``\\ud800`` escapes), so what
is parsed can be logged, stored and sent on without a second failure.
"""

from __future__ import annotations

import json
from typing import Any


class NotJson(ValueError):
    """Not UTF-8 JSON text."""


class Refused(ValueError):
    """Valid JSON this reader will not use; the message is ``FIELD: problem``."""


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise Refused(f"{field_name(name)}: duplicate key")
        members[name] = value
    return members


def _constant(name: str) -> Any:
    raise NotJson(f"{name} is not JSON")


def loads(data: bytes, max_depth: int) -> Any:
    """The parsed value; raises ``NotJson`` or ``Refused``."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_members, parse_constant=_constant)
    except Refused:
        raise
    except RecursionError:
        raise Refused(f"(top level): nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError among them
        raise NotJson(str(exc)) from None
    _check(value, max_depth)
    return value


def _check(value: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise Refused(f"(top level): nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for name in item:
                    _check_text(name)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise NotJson("a string holds a lone surrogate") from None


def field_name(name: str | int) -> str:
    """A member name fit for a one-line reason: printable, at most 64 characters."""
    text = str(name)
    if not text.isprintable() or len(text) > 64:
        text = ascii(text)[1:-1][:64]
    return text
