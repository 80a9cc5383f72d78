"""Every ```python block of README.md and docs/**/*.md runs here, against real gearmand processes.

One test per block, its id the page and the line of its opening fence (``docs/client.md:8``).
The rules (docs/contributing.md says the same for people writing pages):

1. **Which blocks.** Every fenced block whose language is ``python`` or ``py`` (backticks or
   tildes, indented in a list or an admonition too). Nothing else is run, so a ``pycon`` block
   (``>>>`` sessions), which would not be, is refused. (``ruff format --check``, in scripts/lint,
   holds these blocks to the code's format as well.)
2. **Self-contained.** Each block runs on its own, in a fresh namespace: it imports or defines
   every name it uses. This is checked before it runs (the symbol table: a name read but never
   bound, imported or built in), so a name used only inside a function body fails too.
3. **Three kinds**, told apart by the block's code:

   - a **settings file**: every statement assigns UPPER_CASE names (``_private`` helpers and
     imports allowed, as in settings.py). It is written to a file and loaded with
     ``gearworker.config.load(path, env={})``: an unknown name or a bad value fails the test
     (``test_settings_file``).
   - a **handler module**: it decorates something with ``@handler`` or ``@middleware``. It is
     loaded in this process with the real registry (``registry.discover`` of a folder holding
     only it: imports, names, ``cpu=True`` pickling), and the page's worker process serving it
     must have registered each of its functions and aliases on each gearmand (admin ``status``).
     A block with a middleware also sees the page's worker run an ``echo`` and a ``fail`` job
     through it, and no ``middleware.error`` may be logged (``test_handler_module``).
   - **client code**, anything else: compiled with top-level ``await`` allowed
     (``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``) and run in this process, under the page's path (a
     traceback names the page's lines). With a top-level ``await`` it runs inside an event loop
     (as ``python -m asyncio`` would); without, as a plain script in a thread of its own (so
     ``asyncio.run(main())`` works). It must end within BLOCK_TIMEOUT seconds. Clients it left
     open, and ``submit()``'s default client, are closed afterwards (``test_client_code``).

4. **The servers a page sees.** Each page that has handler modules or client code gets two fresh
   gearmands and one worker process (``python -m gearworker``, ``--processes 1``) serving the
   repository's ``handlers/`` folder (``echo``, ``reverse``, ``fail``, ``slow``, ``slow_cpu``,
   ``resize`` and the ``SlowJobs`` middleware: what ``scripts/run`` serves) plus every handler
   module of that page, so a page that defines ``charge`` can then submit to it. They start once
   per page (a module-scoped fixture parametrized by page; pytest runs a page's tests together)
   and stop when the next page starts. In client code the addresses ``gm1:4730`` and ``127.0.0.1:4730`` (also
   ``localhost:4730``) are replaced by the first gearmand's, ``gm2:4730`` by the second's;
   any other "host:port" string fails the test (it would hang or mislead).
   ``GEARWORKER_SERVERS`` names both, so ``Client()`` and ``submit()`` find them; no other
   ``GEARWORKER_*`` variable is set. The block runs in an empty temporary folder holding only
   ``photo.jpg`` (a real 1200x900 JPEG).
5. **Output.** A block of client code followed (blank lines between allowed) by
   ``<!-- example: output -->`` and then a fenced block (```` ```text ````): what the block's
   ``print()`` calls write must match that block's text, as doctest compares with ELLIPSIS and
   NORMALIZE_WHITESPACE (``...`` matches anything). Log lines are not output.
6. **Opt-out.** ``<!-- example: skip (why) -->`` on the line before the fence (blank lines
   between allowed) skips the block, shown as a skip with its reason. Only where running is
   impossible; a missing reason fails, and so do more than MAX_OPT_OUTS opt-outs in all.
   Any other ``<!-- example: ... -->`` comment, or one that marks no block, fails too
   (``test_markers``).
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import doctest
import inspect
import io
import os
import re
import symtable
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
from gearmand import Gearmand
from support import HANDLERS, ROOT, WorkerProcess, photo_jpeg, wait_until

from gearworker import Client, GearworkerError, JobFailed, config
from gearworker.worker.registry import MODULE_PREFIX, discover

#: Seconds one block of client code may take.
BLOCK_TIMEOUT = 20.0
#: How many blocks may opt out of running, in all the pages together.
MAX_OPT_OUTS = 2
#: The server addresses pages write, and which of the page's two gearmands each one stands for.
PLACEHOLDERS = {"gm1:4730": 0, "gm2:4730": 1, "127.0.0.1:4730": 0, "localhost:4730": 0}
#: What the page's worker runs: the repository's handlers, one pool process, a short grace period.
WORKER_ARGS = ["--processes", "1", "--grace-period", "2"]

pytestmark = pytest.mark.timeout(90)

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*example:(?P<body>.*?)-->\s*$")
ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")
PLACEHOLDER = re.compile(r"(?<![\w.])(" + "|".join(re.escape(p) for p in PLACEHOLDERS) + r")(?!\d)")
SETTINGS, HANDLER, CLIENT = "settings file", "handler module", "client code"


# -- reading the pages ------------------------------------------------------------------------------


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Fence:
    line: int  # of the opening fence, from 1
    end: int  # of the closing fence
    lang: str
    text: str


@dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    page: str  # relative to the repository: "docs/client.md"
    line: int  # the opening fence's line; the code starts on the next one
    source: str
    kind: str
    skip: str | None = None  # the opt-out's reason ("" when it gives none); None: it runs
    output: str | None = None  # what it must print, when the page shows it

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def path(self) -> Path:
        return ROOT / self.page

    def padded(self) -> str:
        """The source preceded by blank lines, so that its line numbers are the page's."""
        return "\n" * self.line + self.source


def fences(text: str) -> list[Fence]:
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        close = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            j += 1
        words = m["info"].split()
        found.append(Fence(i + 1, j + 1, words[0].lower() if words else "", "".join(f"{b}\n" for b in body)))
        i = j + 1
    return found


def markers(text: str) -> list[tuple[int, str]]:
    """``<!-- example: ... -->`` comments outside fenced blocks: (line, body)."""
    inside = {n for f in fences(text) for n in range(f.line, f.end + 1)}
    return [
        (n, m["body"].strip())
        for n, line in enumerate(text.splitlines(), 1)
        if n not in inside and (m := MARKER.match(line)) is not None
    ]


def _only_blank_between(lines: list[str], first: int, last: int) -> bool:
    """Lines ``first`` to ``last`` (from 1, inclusive) are all blank."""
    return all(not lines[n - 1].strip() for n in range(first, last + 1))


def read_page(path: Path) -> tuple[list[Block], list[str]]:
    """The python blocks of a page, and what is wrong with its markers."""
    text = path.read_text()
    lines = text.splitlines()
    page = path.relative_to(ROOT).as_posix()
    all_fences = fences(text)
    problems: list[str] = []
    skips: dict[int, str] = {}  # fence line -> reason
    outputs: dict[int, str] = {}  # python fence line -> expected output
    for line, body in markers(text):
        kind, _, rest = body.partition(" ")
        after = next((f for f in all_fences if f.line > line), None)
        before = next((f for f in reversed(all_fences) if f.end < line), None)
        if kind == "skip":
            if (
                after is None
                or after.lang not in ("python", "py")
                or not _only_blank_between(lines, line + 1, after.line - 1)
            ):
                problems.append(f"{page}:{line}: 'example: skip' is not right before a ```python block")
                continue
            reason = re.fullmatch(r"\((.*)\)", rest.strip())
            skips[after.line] = reason[1].strip() if reason else ""
        elif kind == "output":
            if (
                before is None
                or before.lang not in ("python", "py")
                or not _only_blank_between(lines, before.end + 1, line - 1)
                or after is None
                or not _only_blank_between(lines, line + 1, after.line - 1)
            ):
                problems.append(f"{page}:{line}: 'example: output' must sit between a ```python block and its output")
                continue
            outputs[before.line] = after.text
        else:
            problems.append(f"{page}:{line}: unknown marker 'example: {body}' (known: skip (why), output)")
    blocks = []
    for f in all_fences:
        if f.lang in ("pycon", "python-repl"):
            problems.append(f"{page}:{f.line}: a ```{f.lang} session is never run: write it as ```python")
        if f.lang in ("python", "py"):
            block = Block(page, f.line, f.text, kind_of(f.text), skips.get(f.line), outputs.get(f.line))
            if block.output is not None and block.kind != CLIENT:
                problems.append(f"{block.id}: 'example: output' follows a {block.kind}, which prints nothing here")
            blocks.append(block)
    return blocks, problems


def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def kind_of(source: str) -> str:
    """Which of the three kinds a block is (rule 3); a block that does not parse is client code (and fails)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return CLIENT
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and any(
            _decorator_name(d) in ("handler", "middleware") for d in node.decorator_list
        ):
            return HANDLER
    names = setting_names(tree)
    if names and all(n.isupper() or n.startswith("_") for n in names):
        return SETTINGS
    return CLIENT


def setting_names(tree: ast.Module) -> list[str]:
    """The names a block assigns, if it does nothing else (imports and docstrings aside); else []."""
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            return []
        if not all(isinstance(t, ast.Name) for t in targets):
            return []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names if any(n.isupper() for n in names) else []


def collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    problems: list[str] = []
    for path in pages():
        found, wrong = read_page(path)
        blocks += found
        problems += wrong
    return blocks, problems


BLOCKS, MARKER_PROBLEMS = collect()


def params(kind: str, *, with_page: bool) -> list[Any]:
    chosen = []
    for b in BLOCKS:
        if b.kind != kind:
            continue
        marks = [pytest.mark.skip(reason=f"opted out on the page: {b.skip}")] if b.skip else []
        chosen.append(pytest.param(*((b.page, b) if with_page else (b,)), id=b.id, marks=marks))
    return chosen


# -- checks every block passes ----------------------------------------------------------------------


def undefined_names(source: str) -> list[str]:
    """Names the code reads but never binds, imports or finds among the builtins (rule 2)."""
    tree = ast.parse(source)
    if any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(tree)):
        return []  # a star import: nothing can be told
    top = symtable.symtable(source, "<example>", "exec")
    bound = set(dir(builtins)) | {"__file__", "__name__", "__doc__"}

    def binds(table: symtable.SymbolTable) -> None:
        for s in table.get_symbols():
            if (table is top and (s.is_assigned() or s.is_imported() or s.is_namespace())) or (
                s.is_declared_global() and s.is_assigned()
            ):
                bound.add(s.get_name())
        for child in table.get_children():
            binds(child)

    missing: set[str] = set()

    def reads(table: symtable.SymbolTable) -> None:
        for s in table.get_symbols():
            if s.is_referenced() and (table is top or s.is_global()) and s.get_name() not in bound:
                missing.add(s.get_name())
        for child in table.get_children():
            reads(child)

    binds(top)
    reads(top)
    return sorted(missing)


def check_runs_alone(block: Block) -> None:
    """Rule 2, and an opt-out without a reason."""
    if block.skip is not None:  # a reason would have skipped it
        pytest.fail(f"{block.id}: 'example: skip' gives no reason: write <!-- example: skip (why) -->")
    try:
        compile(block.padded(), str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as e:
        not_python = f"{block.id}: not Python: {e.msg} at {block.page}:{e.lineno}\n  {(e.text or '').strip()}"
    else:
        not_python = ""
    if not_python:
        pytest.fail(not_python)
    missing = undefined_names(block.source)
    if missing:
        pytest.fail(
            f"{block.id} uses {', '.join(missing)} without defining or importing it: every example runs "
            "on its own, as a reader would copy it"
        )


# -- a page's servers and worker --------------------------------------------------------------------


class Page:
    """One page's two gearmands and the worker serving handlers/ plus the page's handler modules."""

    def __init__(self, page: str, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.gearmands: list[Gearmand] = []
        self.worker: WorkerProcess | None = None
        self.functions: list[str] = []
        self.failure: str | None = None

    @property
    def addresses(self) -> list[str]:
        return [g.address for g in self.gearmands]

    def start(self) -> None:
        self.gearmands = [Gearmand().start(), Gearmand().start()]
        handlers = self.folder / "handlers"
        handlers.mkdir()
        for file in sorted(HANDLERS.glob("*.py")):
            (handlers / file.name).symlink_to(file)
        for block in BLOCKS:
            if block.page == self.page and block.kind == HANDLER and block.skip is None:
                (handlers / f"{module_stem(block)}.py").write_text(block.padded())
        self.worker = WorkerProcess(self.addresses, handlers=handlers, args=WORKER_ARGS)
        self.worker.start()
        worker = self.worker
        try:
            started = wait_until(
                lambda: worker.log_records("server.started"), 30, what="the page's worker to start", process=worker
            )
            self.functions = list(started[0]["functions"])
            wait_until(
                lambda: all(self.registered(f) for f in self.functions),
                20,
                what="the page's worker to register its functions on both gearmands",
                detail=lambda: str([g.status() for g in self.gearmands]),
                process=worker,
            )
        except AssertionError as e:
            self.failure = str(e)

    def registered(self, function: str) -> bool:
        """Each gearmand's admin ``status`` lists a worker for ``function``."""
        return all(g.status().get(function, (0, 0, 0))[2] >= 1 for g in self.gearmands)

    def require_worker(self) -> WorkerProcess:
        if self.failure is not None or self.worker is None:
            pytest.fail(
                f"the worker serving handlers/ and the handler modules of {self.page} did not start:\n{self.failure}"
            )
        return self.worker

    def substitute(self, source: str) -> str:
        """Rule 4: the placeholder addresses replaced by this page's gearmands."""
        return PLACEHOLDER.sub(lambda m: self.addresses[PLACEHOLDERS[m[1]]], source)

    def stop(self) -> None:
        if self.worker is not None and self.worker.proc is not None:
            self.worker.stop(timeout=10)
        for g in self.gearmands:
            g.stop()


def module_stem(block: Block) -> str:
    """A module name of its own for a handler module (handler modules are cached by name in sys.modules)."""
    return "docs_example_" + re.sub(r"\W", "_", block.page) + f"_{block.line}"


@pytest.fixture(scope="module")
def page(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """The servers and worker of the page named by the test's parameter (rule 4)."""
    name: str = request.param
    env = Page(name, tmp_path_factory.mktemp(re.sub(r"\W", "_", name)))
    try:
        env.start()
        yield env
    finally:
        env.stop()


# -- the tests ------------------------------------------------------------------------------------


def test_markers() -> None:
    """Every ``<!-- example: ... -->`` comment is one of the two known ones and marks a block; no ```pycon."""
    if MARKER_PROBLEMS:
        pytest.fail("\n".join(MARKER_PROBLEMS))


def test_opt_outs_are_few_and_say_why() -> None:
    opted_out = [b for b in BLOCKS if b.skip is not None]
    listing = "\n".join(f"  {b.id}: {b.skip or '(no reason given)'}" for b in opted_out)
    print(f"blocks opted out of running:\n{listing or '  none'}")
    if not all(b.skip for b in opted_out):
        pytest.fail(f"an opt-out must say why: <!-- example: skip (why) -->\n{listing}")
    if len(opted_out) > MAX_OPT_OUTS:
        pytest.fail(f"more than {MAX_OPT_OUTS} blocks opt out of running:\n{listing}")


def test_every_page_is_read() -> None:
    """The collector sees the blocks: README.md's and some of docs/ at least, each of a known kind."""
    assert any(b.page == "README.md" for b in BLOCKS)
    assert any(b.page.startswith("docs/") for b in BLOCKS)
    assert {b.kind for b in BLOCKS} <= {SETTINGS, HANDLER, CLIENT}


@pytest.mark.parametrize("block", params(SETTINGS, with_page=False))
def test_settings_file(block: Block, tmp_path: Path) -> None:
    """Loaded as a settings file by ``gearworker.config.load()``: every name known, every value valid."""
    check_runs_alone(block)
    file = tmp_path / "settings.py"
    file.write_text(block.padded())
    settings = config.load(file, env={})
    names = {n.lower() for n in setting_names(ast.parse(block.source)) if n.isupper()}
    assert names <= set(settings.sources), f"{block.id}: not all of {sorted(names)} were read"


@pytest.mark.parametrize(("page", "block"), params(HANDLER, with_page=True), indirect=["page"], scope="module")
def test_handler_module(page: Page, block: Block, tmp_path: Path) -> None:
    """Loaded by the real registry, and served: each function registered with both gearmands."""
    check_runs_alone(block)
    folder = tmp_path / "handlers"
    folder.mkdir()
    stem = module_stem(block)
    (folder / f"{stem}.py").write_text(block.padded())
    had_package = MODULE_PREFIX in sys.modules
    try:
        registry = discover(folder)
    except GearworkerError as e:  # HandlerError, ConfigError: the message names the cause
        not_loaded = f"{block.id} does not load as a handler module (its line numbers are the page's): {e}"
    else:
        not_loaded = ""
    finally:
        sys.modules.pop(f"{MODULE_PREFIX}.{stem}", None)
        if not had_package:
            sys.modules.pop(MODULE_PREFIX, None)
    if not_loaded:
        pytest.fail(not_loaded)
    assert registry.functions or registry.middleware, f"{block.id} defines no handler and no middleware"
    worker = page.require_worker()
    for name in registry.functions:
        assert name in page.functions, f"the page's worker does not serve {name!r}: {page.functions}"
        assert page.registered(name), f"{name!r} is not registered: {[g.status() for g in page.gearmands]}"
    if registry.middleware:
        run_jobs_through_middleware(page, worker, block)


def run_jobs_through_middleware(page: Page, worker: WorkerProcess, block: Block) -> None:
    """An ``echo`` and a ``fail`` job through the page's worker; its middlewares may log no error."""
    unique = f"middleware-{block.line}"

    async def jobs() -> None:
        async with Client(page.addresses) as client:
            assert await client.submit("echo", b"hi", unique=f"{unique}-echo", timeout=BLOCK_TIMEOUT) == b"hi"
            with pytest.raises(JobFailed):
                await client.submit("fail", b"", unique=f"{unique}-fail", timeout=BLOCK_TIMEOUT)

    asyncio.run(jobs())
    wait_until(
        lambda: {f"{unique}-echo", f"{unique}-fail"} <= {r.get("unique") for r in worker.log_records("job.done")},
        10,
        what="the job.done lines of both jobs",
        process=worker,
    )
    errors = [
        f"{e.get('hook')}: {str(e.get('exception', '')).strip().splitlines()[-1:]}"
        for e in worker.log_records("middleware.error")
    ]
    if errors:
        pytest.fail(f"{block.id}: a middleware of the page failed:\n" + "\n".join(errors))


@pytest.mark.parametrize(("page", "block"), params(CLIENT, with_page=True), indirect=["page"], scope="module")
def test_client_code(page: Page, block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run against the page's gearmands and worker; what it prints matches the page's output, if shown."""
    check_runs_alone(block)
    strangers = unknown_addresses(block.source)
    if strangers:
        pytest.fail(
            f"{block.id} names {', '.join(strangers)}: examples name their servers {', '.join(PLACEHOLDERS)}, "
            "which the test maps to its own gearmands"
        )
    page.require_worker()
    for key in [k for k in os.environ if k.startswith("GEARWORKER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GEARWORKER_SERVERS", ",".join(page.addresses))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(photo_jpeg())
    source = "\n" * block.line + page.substitute(block.source)
    code = compile(source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    printed = run_client_code(code, block, page)
    sys.stdout.write(printed)  # shown by pytest when the test fails
    if block.output is not None:
        checker = doctest.OutputChecker()
        if not checker.check_output(block.output, printed, doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE):
            difference = checker.output_difference(doctest.Example("", block.output), printed, doctest.ELLIPSIS)
            pytest.fail(f"{block.id} printed something else than the output the page shows:\n{difference}")


def unknown_addresses(source: str) -> list[str]:
    """The "host:port" strings in the code that are not the placeholders rule 4 maps."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [
                part.strip()
                for part in node.value.split(",")
                if ADDRESS.match(part.strip()) and part.strip() not in PLACEHOLDERS
            ]
    return found


def run_client_code(code: CodeType, block: Block, page: Page) -> str:
    """Run a compiled block within BLOCK_TIMEOUT; return what it printed."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(block.path)}
    late = (
        f"{block.id} did not end within {BLOCK_TIMEOUT:g} s (a foreground job to a function no worker serves "
        f"waits for ever; the page's worker serves {', '.join(page.functions)})"
    )
    out = io.StringIO()

    def block_print(*args: Any, file: Any = None, **options: Any) -> None:
        # Only the block's own print() calls: log lines the library writes to stdout are no output of the example.
        print(*args, file=out if file is None else file, **options)

    namespace["print"] = block_print
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(_run_awaiting(code, namespace, late))
    else:
        _run_in_thread(code, namespace, late)
    return out.getvalue()


async def _run_awaiting(code: CodeType, namespace: dict[str, Any], late: str) -> None:
    deadline = asyncio.timeout(BLOCK_TIMEOUT)
    try:
        async with deadline:
            await eval(code, namespace)
    except TimeoutError:
        if not deadline.expired():
            raise  # the block's own
    finally:
        await _close_clients(namespace)
    if deadline.expired():
        pytest.fail(late)


async def _close_clients(namespace: dict[str, Any]) -> None:
    """Close the clients a block left open, and submit()'s default client of this loop."""
    from gearworker.client.api import _default_clients  # the loop's shared client, if submit() made one

    clients = [v for v in namespace.values() if isinstance(v, Client)]
    default = _default_clients.get(asyncio.get_running_loop())
    for client in [*clients, *([default] if default is not None else [])]:
        await client.close()


def _run_in_thread(code: CodeType, namespace: dict[str, Any], late: str) -> None:
    error: list[BaseException] = []

    def run() -> None:
        try:
            exec(code, namespace)
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=run, name="docs-example", daemon=True)
    thread.start()
    thread.join(BLOCK_TIMEOUT)
    if thread.is_alive():
        pytest.fail(late)
    if error:
        raise error[0]
