"""Keep structlog from loading the traceback libraries it would merely like to use.

``import structlog`` imports ``structlog.dev`` and ``structlog.tracebacks``, which import
``rich`` (and ``better_exceptions``) whenever it is installed, only to offer prettier
tracebacks on a console and prettier locals in JSON ones. An operator's machine, or a
device that also has the ``operator`` extra, has rich: the daemon would then carry it
(about 4 MiB of RSS) for its whole life without ever drawing with it. The gateway
renders tracebacks plainly (``gateway.service.log``), so those imports are refused to
structlog's modules alone; the operator's commands, which import rich themselves, are
not affected.

A finder on ``sys.meta_path`` is the only hook that runs before whichever gateway module
happens to import structlog first; ``gateway/__init__.py`` installs it. Standard library
only, as the firmware launcher imports the package too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType

REFUSED = frozenset({"rich", "better_exceptions"})
IMPORTER = "structlog"


class RefuseToStructlog:
    """A meta path finder that fails ``REFUSED`` imports made by a module of the
    ``IMPORTER`` package; every other import goes on to the next finder."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if (name.partition(".")[0] in REFUSED
                and _importer(sys._getframe(1)).partition(".")[0] == IMPORTER):
            # structlog catches ImportError and goes on without the library.
            raise ModuleNotFoundError(f"{name} is not loaded for {IMPORTER}", name=name)
        return None


def _importer(frame: FrameType | None) -> str:
    """The module whose ``import`` statement is being served, past importlib's frames."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("importlib"):
            return str(module)
        frame = frame.f_back
    return ""


def install() -> None:
    if not any(isinstance(finder, RefuseToStructlog) for finder in sys.meta_path):
        sys.meta_path.insert(0, RefuseToStructlog())
