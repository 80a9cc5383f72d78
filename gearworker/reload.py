"""Re-importing the handler modules for a reload (SIGHUP) without touching the running ones.

Handler modules live in ``sys.modules`` under :data:`gearworker.handlers.MODULE_PREFIX`.
A reload takes them out, imports the folder again into a new
:class:`~gearworker.handlers.Registry`, and keeps the new modules only if
every file imported and every check passed; otherwise the old modules go back
and the error is raised for the caller to log.  Jobs already running keep the
function objects (and module globals) they started with, so they finish on
the old code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .worker.registry import MODULE_PREFIX, Registry

__all__ = ["changes", "reimport"]


def _ours(name: str) -> bool:
    return name == MODULE_PREFIX or name.startswith(MODULE_PREFIX + ".")


def reimport(load: Callable[[], Registry]) -> Registry:
    """Run ``load`` (e.g. ``lambda: cli.load_handlers(settings)``) on fresh copies of the handler modules.

    On any exception the previous modules are restored and the exception propagates.
    """
    saved: dict[str, ModuleType] = {k: v for k, v in sys.modules.items() if _ours(k)}
    for name in saved:
        del sys.modules[name]
    importlib.invalidate_caches()  # new files in the folder are seen
    try:
        return load()
    except BaseException:
        for name in [k for k in sys.modules if _ours(k)]:
            del sys.modules[name]
        sys.modules.update(saved)
        raise


def changes(old: Registry, new: Registry) -> dict[str, Any]:
    """What changed between two registries, for the reload's log line."""
    return {
        "added": sorted(set(new.functions) - set(old.functions)),
        "removed": sorted(set(old.functions) - set(new.functions)),
        "kept": len(set(new.functions) & set(old.functions)),
    }
