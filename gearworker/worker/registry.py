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
"""

from __future__ import annotations

import importlib.util
import inspect
import pickle
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from ..errors import HandlerError

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


def handler(
    name: str | None = None,
    *,
    cpu: bool = False,
    timeout: float | None = None,
    concurrency: int | None = None,
    aliases: Iterable[str] = (),
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
    """
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0 seconds")
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be >= 1")

    def mark(func: F) -> F:
        if cpu and inspect.iscoroutinefunction(func):
            raise TypeError(f"{func.__qualname__}: a cpu=True handler must be a plain def, not async def")
        options = HandlerOptions(name or func.__name__, cpu, timeout, concurrency, tuple(aliases))
        setattr(func, _MARK, options)
        return func

    return mark


class Registry:
    """Every function name this worker serves, mapped to its handler."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.functions: dict[str, Handler] = {}  # names and aliases

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
    spec = importlib.util.spec_from_file_location(name, path)
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
    for name, target in (aliases or {}).items():
        registry.alias(name, target, file=settings_file)
    return registry
