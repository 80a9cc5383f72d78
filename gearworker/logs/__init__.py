"""structlog set-up: JSON lines in production, a readable console on a terminal.

Every job logs one ``job.done`` line at info level, so a line must cost far
less than the job (stdlib ``json`` plus a ``write`` and flush per line cost
about as much as running a tiny job).  This follows
structlog's own recipe for speed:

- ``make_filtering_bound_logger``: a disabled level is a no-op method;
- loggers cached on first use;
- ``orjson`` renders straight to bytes for a bytes logger (``structlog.BytesLogger``'s
  interface; see :class:`_BatchedLogger` for why not that class itself);
- the timestamp is a datetime that orjson formats in C (``TimeStamper(fmt="iso")``
  measured 4 us a line here, this one a few tenths);
- structlog's bound-logger method path, shortened (see :func:`_bound_logger_class`);
- the worker's own ``job.done`` lines, which wait for a batch anyway, rendered
  a batch at a time with no per-line call at all (see :func:`json_writer`).

Lines go to a :class:`gearworker.logs.output.BatchedOutput`, written in batches (see there).
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog

from .output import LINGER, MAX_BATCH, MAX_DELAY, BatchedOutput, after_fork, flush, outputs

__all__ = [
    "LINGER",
    "MAX_BATCH",
    "MAX_DELAY",
    "BatchedOutput",
    "configure",
    "contextvars_bound",
    "flush",
    "json_writer",
    "reset",
]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def reset() -> None:
    """Write what is queued, forget every output and return structlog to its defaults (for tests)."""
    global _file_out
    for out in outputs():
        out.close()
    _file_out = None
    structlog.reset_defaults()


_started = False
_file_out: BatchedOutput | None = None  # the --log-file output, closed when configure() replaces it


def _start_once() -> None:
    """The atexit hook, the excepthook and the after-fork hook, installed once per process."""
    global _started
    if _started:
        return
    _started = True
    atexit.register(flush)
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        flush()  # the lines that led to the crash come before its traceback
        previous(kind, value, tb)

    sys.excepthook = excepthook
    os.register_at_fork(after_in_child=after_fork)


def _output_for(stream: TextIO) -> BatchedOutput:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return BatchedOutput(stream=stream)
    stream.flush()  # what was printed before goes out before our lines
    return BatchedOutput(fd=fd)


class _BatchedLogger:
    """The wrapped logger: every level method is :meth:`BatchedOutput.line`.

    What ``structlog.BytesLogger`` does, minus its lock (the deque is
    thread-safe) and its ``message + b"\\n"`` copy (the newline is added per
    batch), which measured 2.5 us of a ~13 us ``job.done`` line in the worker's
    path on the busy bench machine.
    """

    def __init__(self, out: BatchedOutput, name: str | None = None) -> None:
        self.name = name
        self.output = out  # for json_writer()
        self.msg = self.log = self.debug = self.info = self.warn = self.warning = out.line
        self.fatal = self.failure = self.err = self.error = self.critical = self.exception = out.line


def _bound_logger_class(level: int) -> type[Any]:
    """structlog's filtering bound logger, with the enabled level methods on a shorter path.

    ``make_filtering_bound_logger`` turns a disabled level into a no-op; an
    enabled one goes meth -> ``_proxy_to_logger`` -> ``_process_event``,
    re-packing the keyword arguments three times and looking the output method
    up by name: about half of what a ``job.done`` line cost once orjson and the
    batching took the rest away (8 of 14 us measured on the busy bench machine).  Here the keywords dict
    the call made is the event dict, and the bytes go straight to ``msg``.
    Everything else (``bind``, ``is_enabled_for``, ``exception``, the no-ops)
    is structlog's own.
    """
    base: type[Any] = structlog.make_filtering_bound_logger(level)
    methods: dict[str, Any] = {}
    for name, number in _LEVELS.items():
        if number >= level:
            methods[name] = _fast_method(name)
    if level <= logging.WARNING:
        methods["warn"] = methods["warning"]
    return type(f"Fast{base.__name__}", (base,), methods)


def _fast_method(name: str) -> Callable[..., Any]:
    def meth(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        if args:  # stdlib-style "%s" interpolation, as structlog does
            event = event % (args[0] if len(args) == 1 and isinstance(args[0], dict) and args[0] else args)
        context = self._context
        if context:
            kw = {**context, **kw}
        kw["event"] = event
        if self._processors is _JSON_PROCESSORS:
            # Our own JSON set-up (production): its two processors inline, which
            # saves three calls and the loop, ~0.2 of a ~2 us line (bench.logcost).
            if _BOUND_VARS:
                _merge_contextvars(None, name, kw)
            kw["level"] = name
            event_dict: Any = kw
            if "exc_info" in kw:
                event_dict = structlog.processors.format_exc_info(None, name, kw)
            if "timestamp" not in event_dict:  # job.done gives the job's own end time
                event_dict["timestamp"] = _now(_UTC)
            try:
                line = _dumps(event_dict, default=_fallback, option=_UTC_Z)
            except TypeError:
                line = _render_json(None, name, event_dict)
            if _JSON_FILE is not None:  # --log-file: the same bytes there too
                _JSON_FILE.line(line)
            return self._logger.msg(line)
        event_dict = kw
        try:
            for processor in self._processors:
                event_dict = processor(self._logger, name, event_dict)
        except structlog.DropEvent:
            return None
        return self._logger.msg(event_dict)

    meth.__name__ = name
    return meth


_UTC = datetime.UTC
_now = datetime.datetime.now


def _timestamp(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``timestamp``: an aware datetime that orjson writes as ISO 8601 UTC, ``...T09:26:36.184508Z``, in C.

    structlog's ``TimeStamper(fmt="iso", utc=True)`` formats it in Python: 4 us
    a line on the bench machine; formatting it ourselves with a cached second
    1.0 us; this 0.3-0.4 us plus a little more for orjson.
    """
    if "timestamp" not in event:
        event["timestamp"] = _now(_UTC)
    return event


def _level_and_exception(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``add_log_level`` and ``format_exc_info`` in one step; the traceback is formatted only when there is one."""
    event["level"] = method
    if "exc_info" in event:
        return structlog.processors.format_exc_info(logger, method, event)
    return event


# structlog's registry of the ContextVars bind_contextvars() made (private, so looked up with a fallback).
_BOUND_VARS: dict[str, Any] | None = getattr(structlog.contextvars, "_CONTEXT_VARS", None)
_PREFIX_LEN = len(getattr(structlog.contextvars, "STRUCTLOG_KEY_PREFIX", "structlog_"))


def _merge_contextvars(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's ``merge_contextvars``, without copying the context for every line.

    structlog's copies the whole context and compares every variable's name
    (0.2-0.3 us a line, most of it for a worker that binds nothing); this asks
    only the variables ``bind_contextvars`` ever made, usually none.
    """
    if not _BOUND_VARS:
        return event
    for name, var in tuple(_BOUND_VARS.items()):  # a copy: another thread may bind a new name meanwhile
        value = var.get()
        if value is not Ellipsis:
            event.setdefault(name[_PREFIX_LEN:], value)
    return event


_merge: Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]] = (
    _merge_contextvars if isinstance(_BOUND_VARS, dict) else structlog.contextvars.merge_contextvars
)


def contextvars_bound() -> bool:
    """True when structlog's ``bind_contextvars`` left a value in the current context (a line would carry it)."""
    if _BOUND_VARS is None:  # structlog changed its internals: assume something is bound
        return True
    if _BOUND_VARS:  # (a loop, not any() over a generator: this runs for every completed job)
        for var in tuple(_BOUND_VARS.values()):  # a copy: another thread may bind a new name meanwhile
            if var.get() is not Ellipsis:
                return True
    return False


def json_writer(logger: Any) -> Callable[[list[dict[str, Any]]], None] | None:
    """A function that writes event dicts as ``logger``'s lines in one step, or None.

    It renders each dict exactly as a call of ``logger`` would (orjson, UTC
    timestamps) and writes the lines at once, in one ``write`` (the caller
    gathered them into a batch already); the caller gives every key,
    ``event``, ``level`` and ``timestamp`` included, in the order the call
    would.  For the worker's ``job.done`` lines, rendered a batch at a time
    (:meth:`gearworker.middleware.LogMiddleware.completed_many`): the line
    cost a job 21.3k instructions with one structlog call each, 17.3k this
    way, and 850 -> 275 instruction-cache misses (cachegrind, bench.hotpath
    at info minus warning, batches of 128).

    None unless ``logger`` comes from :func:`configure`'s JSON set-up (with
    or without a log file), binds nothing, and no contextvars are bound here:
    its lines then need structlog's processors, one call at a time.
    """
    if (
        not _JSON_PROCESSORS
        or getattr(logger, "_processors", None) is not _JSON_PROCESSORS
        or getattr(logger, "_context", True)
        or contextvars_bound()
    ):
        return None
    out: BatchedOutput | None = getattr(getattr(logger, "_logger", None), "output", None)
    if out is None:
        return None
    also = _JSON_FILE

    def write(events: list[dict[str, Any]]) -> None:
        try:
            rendered = [_dumps(event, default=_fallback, option=_UTC_Z) for event in events]
        except TypeError:  # a dict with non-str keys somewhere: the careful path, as for one line
            rendered = [_render_json(None, "", event) for event in events]
        if also is not None:
            also.write_lines(rendered)
        out.write_lines(rendered)  # a batch already: written now (BatchedOutput.write_lines)

    return write


def _fallback(value: object) -> object:
    """What orjson cannot encode is written as its repr, never an error that loses the line."""
    return repr(value)


def _render(logger: Any, method: str, event: MutableMapping[str, Any]) -> bytes:
    """Level, exception, timestamp and JSON in one step: each processor call measured ~0.5 us in the worker."""
    event["level"] = method
    if "exc_info" in event:
        event = structlog.processors.format_exc_info(logger, method, event)
    if "timestamp" not in event:  # job.done gives the job's own end time
        event["timestamp"] = _now(_UTC)
    return _render_json(logger, method, event)


def _render_json(logger: Any, method: str, event: MutableMapping[str, Any]) -> bytes:
    try:
        return _dumps(event, default=_fallback, option=orjson.OPT_UTC_Z)
    except TypeError:
        # A dict value with int keys (e.g. per-slot counts) must not lose the line.
        # OPT_NON_STR_KEYS only here: it costs every line ~0.18 us (0.67 -> 0.49 us, bench.logcost's line).
        return _dumps(event, default=_fallback, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


_dumps = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z
#: The processors configure() sets for JSON output; their bound-logger methods run them inline.
_JSON_PROCESSORS: list[Any] = []
#: The log file of that set-up, if any: its lines go there as well as to the stream.
_JSON_FILE: BatchedOutput | None = None


class _ConsoleAndFile:
    """On a terminal: a readable line for the console, the JSON line for the log file."""

    def __init__(self, colors: bool, file: BatchedOutput | None) -> None:
        self._console = structlog.dev.ConsoleRenderer(colors=colors)
        self._file = file

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> bytes:
        if self._file is not None:
            self._file.line(_render_json(logger, method, dict(event)))
        stamp = event.get("timestamp")
        if isinstance(stamp, datetime.datetime):
            event["timestamp"] = stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")
        return str(self._console(logger, method, event)).encode("utf-8", "replace")


class _JsonAndFile:
    """JSON to the stream and the same bytes to the log file."""

    def __init__(self, file: BatchedOutput) -> None:
        self._file = file

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> bytes:
        line = _render(logger, method, event)
        self._file.line(line)
        return line


def configure(
    level: str = "info", fmt: str = "auto", file: str | None = None, stream: TextIO | None = None
) -> BatchedOutput:
    """Configure structlog for the whole process; return the output of ``stream``.

    ``fmt``: "json", "console", or "auto" (console when ``stream`` is a terminal).
    ``file``: also append JSON lines to this file.  ``stream`` defaults to stderr.
    """
    stream = sys.stderr if stream is None else stream
    flush()  # lines of an earlier configuration go out first
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    global _file_out
    out = _output_for(stream)
    if _file_out is not None:
        _file_out.close()
    file_out = _file_out = None
    if file:
        # O_APPEND: several processes (the pool's) may share the file; each batch lands whole.
        file_out = _file_out = BatchedOutput(
            fd=os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), owns_fd=True
        )
    # contextvars first: handlers may bind_contextvars().
    processors: list[Callable[[Any, str, MutableMapping[str, Any]], Any]]
    if console:
        processors = [_merge, _level_and_exception, _timestamp, _ConsoleAndFile(stream.isatty(), file_out)]
    else:
        processors = [_merge, _render if file_out is None else _JsonAndFile(file_out)]
        if _merge is _merge_contextvars:
            global _JSON_PROCESSORS, _JSON_FILE
            _JSON_PROCESSORS, _JSON_FILE = processors, file_out
    structlog.configure(
        processors=processors,
        wrapper_class=_bound_logger_class(_LEVELS[level]),
        logger_factory=lambda *args: _BatchedLogger(out, args[0] if args else None),
        cache_logger_on_first_use=True,
    )
    _start_once()
    return out
