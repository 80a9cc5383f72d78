"""Start-up fails with a clear message naming the file when the handlers are wrong.

Start-up fails with a clear message naming the file when a handler module
cannot be imported, two handlers claim one name, or a CPU handler cannot be
pickled.  Each case is checked twice: through
``gearworker.worker.registry.discover`` and through the real command line (exit code
2, one readable line on stderr, no traceback).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from support import ROOT

from gearworker.errors import ConfigError, HandlerError
from gearworker.worker.registry import discover

GOOD = """
from gearworker import handler

@handler("echo_{tag}")
async def echo(job):
    return job.workload
"""

# name -> (files as {stem: source}, words the message must contain)
BROKEN: dict[str, tuple[dict[str, str], list[str]]] = {
    "syntax_error": ({"broken": "def oops(:\n    pass\n"}, ["import failed", "SyntaxError"]),
    "raises_at_import": (
        {"broken": "raise RuntimeError('no database here')\n"},
        ["import failed", "RuntimeError", "no database here"],
    ),
    "missing_dependency": (
        {"broken": "import gearworker_no_such_module_xyz\n"},
        ["import failed", "ModuleNotFoundError", "gearworker_no_such_module_xyz"],
    ),
    "async_cpu_handler": (
        {"broken": "from gearworker import handler\n\n@handler('x_{tag}', cpu=True)\nasync def x(job):\n    pass\n"},
        ["import failed", "cpu=True handler must be a plain def"],
    ),
    "nested_cpu_handler": (
        {
            "broken": textwrap.dedent("""
            from gearworker import handler

            def make():
                @handler("nested_{tag}", cpu=True)
                def inner(job):
                    return b""
                return inner

            resize = make()
        """)
        },
        ["nested_{tag}", "cannot be pickled", "module level"],
    ),
    "lambda_cpu_handler": (
        {"broken": "from gearworker import handler\n\nresize = handler('lam_{tag}', cpu=True)(lambda job: b'')\n"},
        ["lam_{tag}", "cannot be pickled"],
    ),
}

DUPLICATES: dict[str, tuple[dict[str, str], list[str]]] = {
    "same_handler_name_in_two_files": (
        {
            "a_first": 'from gearworker import handler\n\n@handler("dup_{tag}")\nasync def one(job):\n    pass\n',
            "b_second": 'from gearworker import handler\n\n@handler("dup_{tag}")\nasync def two(job):\n    pass\n',
        },
        ["dup_{tag}", "defined twice"],
    ),
    "alias_claims_another_handlers_name": (
        {
            "a_first": 'from gearworker import handler\n\n@handler("one_{tag}")\nasync def one(job):\n    pass\n',
            "b_second": 'from gearworker import handler\n\n@handler("two_{tag}", aliases=["one_{tag}"])\n'
            "async def two(job):\n    pass\n",
        },
        ["one_{tag}", "claimed twice"],
    ),
}


def write_handlers(folder: Path, files: dict[str, str], tag: str) -> dict[str, Path]:
    """Write each module under a name unique to this test (handler modules are cached by name in sys.modules)."""
    folder.mkdir()
    paths = {}
    for stem, source in files.items():
        path = folder / f"{stem}_{tag}.py"
        path.write_text(source.replace("{tag}", tag))
        paths[stem] = path
    (folder / f"good_{tag}.py").write_text(GOOD.replace("{tag}", tag))
    return paths


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gearworker", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "GEARWORKER_CONNECT_TIMEOUT": "1"},
    )


def assert_clear(message: str, words: list[str], tag: str, *files: Path) -> None:
    for word in words:
        assert word.replace("{tag}", tag) in message, message
    for file in files:
        assert str(file) in message, f"{file} not named in: {message}"


@pytest.mark.parametrize("case", list(BROKEN))
def test_discover_names_the_file_of_a_broken_handler_module(tmp_path: Path, case: str) -> None:
    """discover() raises HandlerError (a ConfigError) whose message names the broken file and the cause."""
    tag = uuid.uuid4().hex[:8]
    files, words = BROKEN[case]
    paths = write_handlers(tmp_path / "handlers", files, tag)
    with pytest.raises(HandlerError) as info:
        discover(tmp_path / "handlers")
    assert isinstance(info.value, ConfigError)
    assert_clear(str(info.value), words, tag, paths["broken"])


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_discover_names_both_files_when_two_handlers_claim_one_name(tmp_path: Path, case: str) -> None:
    """Two handlers claiming one function name: the error names the name and both files."""
    tag = uuid.uuid4().hex[:8]
    files, words = DUPLICATES[case]
    paths = write_handlers(tmp_path / "handlers", files, tag)
    with pytest.raises(HandlerError) as info:
        discover(tmp_path / "handlers")
    assert_clear(str(info.value), words, tag, paths["a_first"], paths["b_second"])


def test_discover_rejects_an_alias_of_an_unknown_handler(tmp_path: Path) -> None:
    """An alias in the settings that points nowhere names the setting."""
    tag = uuid.uuid4().hex[:8]
    write_handlers(tmp_path / "handlers", {}, tag)
    with pytest.raises(HandlerError) as info:
        discover(tmp_path / "handlers", {"thumb": "no_such_handler"}, settings_file="/etc/gw/settings.py")
    message = str(info.value)
    assert "/etc/gw/settings.py" in message and "'aliases'" in message and "no_such_handler" in message


def test_discover_of_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    """A handlers folder that does not exist is a configuration error naming it and the setting."""
    with pytest.raises(HandlerError) as info:
        discover(tmp_path / "nope", settings_file="settings.py")
    assert str(tmp_path / "nope") in str(info.value) and "handlers_dir" in str(info.value)


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize(
    "case", ["syntax_error", "missing_dependency", "nested_cpu_handler", "same_handler_name_in_two_files"]
)
def test_cli_exits_2_with_one_line_naming_the_file(tmp_path: Path, case: str, command: str) -> None:
    """`gearworker run|check` with bad handlers: exit code 2, a one-line error naming the file, no traceback.

    ``run`` must fail before it connects anywhere: the server address is a
    port nothing listens on.
    """
    tag = uuid.uuid4().hex[:8]
    files, words = {**BROKEN, **DUPLICATES}[case]
    paths = write_handlers(tmp_path / "handlers", files, tag)
    result = run_cli(command, "--handlers", str(tmp_path / "handlers"), "--server", "127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert err.startswith("gearworker: configuration error: "), err
    assert "Traceback" not in result.stderr
    assert len(err.splitlines()) == 1, err
    assert_clear(err, words, tag, *paths.values())


def test_cli_exits_2_when_no_handler_is_found(tmp_path: Path) -> None:
    """A folder with no handler in it is refused at start-up, naming the folder."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "helpers.py").write_text("X = 1\n")
    result = run_cli("run", "--handlers", str(tmp_path / "empty"), "--server", "127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2
    assert "no handler found" in result.stderr and str(tmp_path / "empty") in result.stderr
