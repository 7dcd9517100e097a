"""The daemon's logging pays for no library it does not use.

structlog imports rich whenever it is installed (for prettier tracebacks); a device with
the operator extra would carry it, about 4 MiB, for the daemon's whole life. A fresh
interpreter is needed to see what an import loads, so this runs one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The daemon's modules, its logging set up in each format, an exception logged in each.
DAEMON = """
import io, json, sys
import gateway.daemon
from gateway.service import log
import structlog
for fmt in ("console", "json"):
    log.configure("info", fmt, io.StringIO())
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("t").exception("t.failed")
loaded = sorted(m for m in ("rich", "better_exceptions") if m in sys.modules)
import rich.console  # the operator's commands still have it
print(json.dumps({"loaded": loaded, "operator": "rich.console" in sys.modules}))
"""


def test_the_daemon_never_imports_rich() -> None:
    pytest.importorskip("rich", reason="without rich installed there is nothing to refuse")

    out = subprocess.run([sys.executable, "-c", DAEMON], capture_output=True, text=True,
                         check=True, timeout=60)

    assert json.loads(out.stdout) == {"loaded": [], "operator": True}
