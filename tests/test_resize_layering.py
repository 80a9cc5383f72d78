"""The resize application sits on top of the core, never inside it.

The core (worker, client, protocol: every module under ``gearworker/`` but
``gearworker/web`` and ``gearworker/resize``) must not import
``gearworker.resize``, and nothing but the resize engine may load libvips:
the worker's parent process and the web app must never load it, because a
forked child of a process that ran libvips can hang (see docs/resize.md).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from support import ROOT

PACKAGE = ROOT / "gearworker"
#: Applications built on the core: they may import gearworker.resize, the core may not.
APPLICATIONS = ("web", "resize")


def _core_files() -> list[Path]:
    files = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in APPLICATIONS]
    assert len(files) > 10, f"the core was not found under {PACKAGE}"
    return sorted(files)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path) -> set[str]:
    """Every module an ``import`` anywhere in the file names (inside functions too), relative ones made absolute."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    return _imports_in(path.read_text(), package, str(path))


def _imports_in(source: str, package: str, filename: str = "<test>") -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from gearworker import resize`
    return names


def test_no_core_module_imports_the_resize_package_or_pyvips() -> None:
    """No import statement in the core, at the top or inside a function, names gearworker.resize or pyvips."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            n for n in _imported_names(path) if n.startswith(("gearworker.resize", "pyvips"))
        )
        for path in _core_files()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_check_sees_relative_and_lazy_imports() -> None:
    """The check above resolves `from ..resize import x`, `from . import resize` and imports inside functions."""
    source = "def f():\n    from ..resize import run\n    import pyvips\n"
    assert {"gearworker.resize", "gearworker.resize.run", "pyvips"} <= _imports_in(source, "gearworker.protocol")
    assert "gearworker.resize" in _imports_in("from . import resize\n", "gearworker")
    assert "gearworker.resize.wire" in _imports_in("import gearworker.resize.wire\n", "gearworker.worker")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_importing_the_whole_core_loads_neither_resize_nor_pyvips() -> None:
    """gearworker, its CLI, the server and every other core module imported in a fresh process: neither is loaded."""
    modules = ["gearworker", "gearworker.app.cli", "gearworker.app.server"] + [
        _module_name(p) for p in _core_files() if p.name != "__main__.py"
    ]  # __main__ would run the CLI
    code = (
        f"import importlib, sys\n"
        f"for name in {modules!r}:\n"
        f"    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith(('gearworker.resize', 'pyvips')))\n"
        f"assert not loaded, loaded\n"
        f"print(len({modules!r}))\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 10


def test_the_web_app_and_the_resize_handler_module_do_not_load_pyvips() -> None:
    """The web app and the worker's parent (which imports handlers/resize.py to register it) never load libvips."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import gearworker.web.app\n"
        "from gearworker.worker.registry import load_module\n"
        "module = load_module(Path('handlers/resize.py'))\n"
        "assert callable(module.resize)\n"
        "assert 'gearworker.resize' in sys.modules, 'the check would prove nothing'\n"
        "assert 'pyvips' not in sys.modules, 'pyvips was imported'\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr


def test_the_web_app_and_the_wire_format_work_without_pyvips_installed() -> None:
    """With pyvips unimportable (the `web` extra without `images`), the web app imports and a client packs/unpacks."""
    code = (
        "import sys\n"
        "sys.modules['pyvips'] = None  # any `import pyvips` now raises ImportError\n"
        "import gearworker.web.app\n"
        "from gearworker.resize import Copy, Resized, Source, pack_request, pack_result, unpack_result\n"
        "pack_request(b'x', sizes=[10])\n"
        "assert unpack_result(pack_result(Resized(Source('png', 1, 1), [Copy(1, 1, 1, 'png', b'x')])))\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
