"""Logging: structlog key-value events, rendered for whoever reads them.

Under systemd, events go to journald with their keys as structured fields (so
``journalctl -u edge-gateway SENSOR=room`` works); elsewhere a terminal gets coloured
console lines and anything else JSON lines. Libraries that log through the standard
``logging`` module (gmqtt) are forwarded into the same stream.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


# syslog priorities of journald's PRIORITY field
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
FIELD = re.compile(r"[^A-Z0-9_]")


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def to_journald(_: WrappedLogger, method: str, event: EventDict) -> Any:
    """Send the event to journald as MESSAGE plus one upper-case field per key."""
    from systemd.journal import send as journal_send

    fields = {
        FIELD.sub("_", key.upper()).lstrip("_") or "FIELD": str(value)
        for key, value in event.items()
        if key not in ("event", "level", "timestamp")
    }
    message = str(event.get("event", ""))
    if fields:
        message += " " + " ".join(f"{k}={v}" for k, v in event.items()
                                  if k not in ("event", "level", "timestamp"))
    journal_send(
        message,
        PRIORITY=str(PRIORITIES.get(method, 6)),
        SYSLOG_IDENTIFIER="edge-gateway",
        EVENT=str(event.get("event", "")),
        **fields,
    )
    raise structlog.DropEvent


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
    tail: list[structlog.typing.Processor]
    if fmt == "auto" and under_systemd():
        tail = [structlog.processors.format_exc_info, to_journald]
    elif fmt == "console" or (fmt == "auto" and out.isatty()):
        # Plain tracebacks whatever is installed: the daemon never loads rich
        # (``gateway.importguard``), and a console line reads the same on every machine.
        tail = [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
    else:
        tail = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
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
