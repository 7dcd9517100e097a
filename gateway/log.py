"""Logging: structlog key-value events, rendered for whoever reads them.

A terminal gets coloured console lines, anything else JSON lines. Libraries that log
through the standard ``logging`` module (gmqtt) are forwarded into the same stream.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class _ToStructlog(logging.Handler):
    """Forwards a standard-library record as a structlog event named after its logger."""

    def emit(self, record: logging.LogRecord) -> None:
        log = structlog.get_logger(record.name)
        log.log(record.levelno, f"{record.name}.log", message=record.getMessage())


def configure(
    level: str = "info",
    fmt: Literal["auto", "console", "json"] = "auto",
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    tail: list[structlog.typing.Processor] = (
        [structlog.dev.ConsoleRenderer()]
        if fmt == "console"
        else [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    # Library chatter below WARNING (gmqtt logs every packet at DEBUG) is not ours to show
    # unless the operator asked for debug.
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
