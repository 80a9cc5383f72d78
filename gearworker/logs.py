"""structlog set-up: JSON lines in production, a readable console on a terminal.

Disabled levels cost almost nothing (``make_filtering_bound_logger``), which
matters because every job logs one ``job.done`` line at info level.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _Sink:
    """Writes each event to stderr (console or JSON) and, optionally, as JSON to a file."""

    def __init__(self, console: bool, file: TextIO | None) -> None:
        self._json = structlog.processors.JSONRenderer()
        self._console = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()) if console else None
        self._file = file

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        line = self._json(logger, method, dict(event))
        if self._file is not None:
            self._file.write(str(line) + "\n")
            self._file.flush()
        return str(self._console(logger, method, event)) if self._console is not None else str(line)


def configure(level: str = "info", fmt: str = "auto", file: str | None = None) -> None:
    """Configure structlog for the whole process."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    handle = open(file, "a", encoding="utf-8") if file else None  # noqa: SIM115 - lives as long as the process
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _Sink(console, handle),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
