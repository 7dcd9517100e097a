"""The tree stays readable: no module of the gateway or its drivers grows past 400 lines.

A module that long holds more than one concern (issue 19): split it by concern rather than
raise the limit.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400


def test_no_module_above_the_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in ("gateway", "drivers")
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert len(sizes) > 100, "the modules were not found"
    offenders = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert offenders == {}, f"modules above {MAX_LINES} lines: {offenders}"
