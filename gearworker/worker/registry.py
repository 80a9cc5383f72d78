"""Registering job handlers and discovering them in a folder.

A handler module is any ``*.py`` file in the handlers folder::

    from gearworker import handler

    @handler("resize", cpu=True, timeout=60, aliases=["thumbnail"])
    def resize(job):            # cpu=True: runs in the process pool
        ...

    @handler("echo")
    async def echo(job):        # async: runs on the event loop
        return job.workload

A plain ``def`` without ``cpu=True`` runs in a thread, so it cannot block the
loop either.

Job-queue options (docs/jobs.md)::

    @handler("charge", retries=3, retry_backoff=2)    # run again on failure: ~2 s, 4 s, 8 s apart
    async def charge(job): ...

    @handler("report", schedule="0 6 * * mon-fri")    # the worker submits it at 06:00 UTC on weekdays
    async def report(job): ...
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import pickle
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from ..errors import ConfigError, HandlerError
from ..middleware import MARK, MiddlewareProtocol
from ..schedule.rules import Cron, Interval, ScheduleError
from ..schedule.rules import parse as parse_schedule
from .retry import RetryPolicy
from .retry import validate as validate_retries

__all__ = [
    "MODULE_PREFIX",
    "Handler",
    "HandlerOptions",
    "Registry",
    "discover",
    "handler",
    "handlers_in",
    "load_module",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Handler modules are imported under this package name, so that a ``cpu=True``
#: function pickles by reference and the pool process finds it after loading
#: the same folder.
MODULE_PREFIX = "gearworker_handlers"
_MARK = "__gearworker_handler__"


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """What the ``@handler`` decorator records on a function."""

    name: str
    cpu: bool = False
    timeout: float | None = None
    concurrency: int | None = None
    aliases: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    schedule: Interval | Cron | None = None


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler: the function, its options and where it came from."""

    name: str
    func: Callable[..., Any]
    cpu: bool
    timeout: float | None
    concurrency: int | None
    file: str
    is_async: bool = field(default=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    schedule: Interval | Cron | None = field(default=None)


def handler(
    name: str | None = None,
    *,
    cpu: bool = False,
    timeout: float | None = None,
    concurrency: int | None = None,
    aliases: Iterable[str] = (),
    retries: int = 0,
    retry_backoff: float = 1.0,
    schedule: int | str | None = None,
) -> Callable[[F], F]:
    """Mark a function as the handler of the Gearman function ``name``.

    :param name: the function name clients submit to (default: the Python
        function's name).
    :param cpu: run in the process pool (a plain ``def``; progress calls are
        synchronous there).
    :param timeout: seconds after which the job fails; also sent to gearmand
        with CAN_DO_TIMEOUT.
    :param concurrency: at most this many jobs of this handler at once in this
        process (settings may override).
    :param aliases: more function names served by the same handler.
    :param retries: after a failed attempt (an exception, a timeout, a dead
        pool process) run the job again, up to this many more times; raise
        :class:`gearworker.errors.NoRetry` to fail at once.
    :param retry_backoff: seconds before the first retry; each next wait
        doubles, with jitter.
    :param schedule: whole seconds (``60``) or a cron expression in UTC
        (``"*/5 * * * *"``): the worker submits a background job to this
        function at each tick, once across all workers (docs/jobs.md).

    Bad values raise :class:`HandlerError` naming the handler's file.
    """
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0 seconds")
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be >= 1")

    def mark(func: F) -> F:
        if cpu and inspect.iscoroutinefunction(func):
            raise TypeError(f"{func.__qualname__}: a cpu=True handler must be a plain def, not async def")
        fname = name or func.__name__
        file = getattr(getattr(func, "__code__", None), "co_filename", None)
        try:
            retry = validate_retries(retries, retry_backoff)
            when = parse_schedule(schedule) if schedule is not None else None
        except (ValueError, ScheduleError) as e:
            raise HandlerError(f"handler {fname!r}: {e}", file=file) from e
        options = HandlerOptions(fname, cpu, timeout, concurrency, tuple(aliases), retry, when)
        setattr(func, _MARK, options)
        return func

    return mark


class Registry:
    """Every function name this worker serves, mapped to its handler."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.functions: dict[str, Handler] = {}  # names and aliases
        self.middleware: list[MiddlewareProtocol] = []  # marked with @middleware in handler modules

    def add(self, h: Handler, aliases: Iterable[str] = ()) -> None:
        """Register ``h`` under its name and ``aliases``."""
        if h.name in self.handlers:
            other = self.handlers[h.name]
            raise HandlerError(f"handler {h.name!r} is defined twice (also in {other.file})", file=h.file)
        self.handlers[h.name] = h
        for name in (h.name, *aliases):
            self.alias(name, h.name, file=h.file)

    def alias(self, name: str, target: str, *, file: str | None = None) -> None:
        """Serve the function ``name`` with the handler called ``target``."""
        if target not in self.handlers:
            raise HandlerError(f"alias {name!r} points at unknown handler {target!r}", file=file, setting="aliases")
        claimed = self.functions.get(name)
        if claimed is not None:
            raise HandlerError(f"function {name!r} is claimed twice (also by {claimed.file})", file=file)
        if not name or "\x00" in name:
            raise HandlerError(f"function name {name!r} is empty or holds a NUL byte", file=file)
        self.functions[name] = self.handlers[target]

    def __len__(self) -> int:
        return len(self.functions)


def load_module(path: Path) -> ModuleType:
    """Import one handler file under :data:`MODULE_PREFIX`; errors name the file."""
    name = f"{MODULE_PREFIX}.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    _ensure_package(path.parent)
    spec = importlib.util.spec_from_file_location(name, path, loader=_SourceLoader(name, str(path)))
    if spec is None or spec.loader is None:
        raise HandlerError("cannot be imported as a Python module", file=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise HandlerError(f"import failed: {type(e).__name__}: {e}", file=str(path)) from e
    return module


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Always compile the handler file's source, never a cached ``.pyc``.

    A ``.pyc`` is trusted when the source's size and mtime in whole seconds
    match: a file edited in the same second as its last import, to the same
    size, would reload as the old code (SIGHUP after a quick edit).  Handler
    files are few and small, so compiling them costs nothing that matters.
    """

    def get_code(self, fullname: str) -> Any:
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)


def _ensure_package(folder: Path) -> None:
    if MODULE_PREFIX not in sys.modules:
        package = ModuleType(MODULE_PREFIX)
        package.__path__ = [str(folder)]
        sys.modules[MODULE_PREFIX] = package


def handlers_in(module: ModuleType, file: str) -> list[Handler]:
    """The handlers defined (not merely imported) in ``module``."""
    found = []
    for value in vars(module).values():
        options = getattr(value, _MARK, None)
        if not isinstance(options, HandlerOptions) or getattr(value, "__module__", None) != module.__name__:
            continue
        found.append(
            Handler(
                options.name,
                value,
                options.cpu,
                options.timeout,
                options.concurrency,
                file,
                inspect.iscoroutinefunction(value),
                options.retry,
                options.schedule,
            )
        )
        if options.cpu:
            _check_picklable(value, options.name, file)
    return found


def _check_picklable(func: Callable[..., Any], name: str, file: str) -> None:
    try:
        pickle.dumps(func)
    except Exception as e:
        raise HandlerError(
            f"cpu=True handler {name!r} cannot be pickled for the process pool "
            f"(define it at module level, not nested or as a lambda): {e}",
            file=file,
        ) from e


def discover(
    folder: str | Path, aliases: Mapping[str, str] | None = None, *, settings_file: str | None = None
) -> Registry:
    """Import every ``*.py`` in ``folder`` and return the registry of handlers.

    ``aliases`` maps extra function names onto handler names (the PHP daemon's
    ``$add_jobs``).  Every problem raises :class:`HandlerError` naming the file.
    """
    path = Path(folder)
    if not path.is_dir():
        raise HandlerError(f"handlers folder {str(path)!r} does not exist", file=settings_file, setting="handlers_dir")
    registry = Registry()
    for file in sorted(path.glob("*.py")):
        if file.name.startswith("_"):
            continue
        module = load_module(file.resolve())
        for h in handlers_in(module, str(file)):
            registry.add(h, getattr(h.func, _MARK).aliases)
        registry.middleware += middlewares_in(module)
    for name, target in (aliases or {}).items():
        registry.alias(name, target, file=settings_file)
    return registry


def _instance(obj: Any, where: str) -> MiddlewareProtocol:
    value = obj() if isinstance(obj, type) else obj
    missing = [m for m in ("before", "after", "on_failure") if not callable(getattr(value, m, None))]
    if missing:
        raise ConfigError(
            f"middleware {where} has no {', '.join(missing)} method (subclass "
            "gearworker.middleware.Middleware for no-op defaults)",
            setting="middleware",
        )
    return value  # type: ignore[no-any-return]


def middlewares_in(module: ModuleType) -> list[MiddlewareProtocol]:
    """The objects marked with :func:`gearworker.middleware.middleware` and defined in ``module``."""
    found = []
    for name, value in vars(module).items():
        # Own mark only (a subclass of a marked class is not marked), defined here (not imported).
        own = getattr(value, "__dict__", None)
        if isinstance(own, Mapping) and own.get(MARK) is True and getattr(value, "__module__", "") == module.__name__:
            found.append(_instance(value, f"{module.__name__}.{name}"))
    return found


def load_middleware(spec: str, *, file: str | None = None) -> MiddlewareProtocol:
    """Import ``"module:attr"`` (from the ``middleware`` setting); errors name the settings file."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{spec!r} is not 'module:attribute'", file=file, setting="middleware")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:
        raise ConfigError(f"cannot import {spec!r}: {type(e).__name__}: {e}", file=file, setting="middleware") from e
    try:
        return _instance(obj, repr(spec))
    except ConfigError as e:
        raise ConfigError(e.detail, file=file, setting="middleware") from e
