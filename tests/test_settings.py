"""Settings: the documented settings.py, environment and flag overrides, and
the exact error for each bad value (it must name the setting, where the value
came from and what was expected)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, run_gearworker

from gearworker import config
from gearworker.address import parse_address
from gearworker.app import cli
from gearworker.app.check import describe
from gearworker.config import Settings
from gearworker.errors import ConfigError
from gearworker.worker.registry import discover

SETTINGS_PY = ROOT / "settings.py"
DOCUMENTED = re.compile(r"^# ([A-Z_]+) = (.+)$", re.M)


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    assert f.default_factory is not dataclasses.MISSING
    return f.default_factory()


def documented() -> dict[str, str]:
    text = SETTINGS_PY.read_text()
    found: dict[str, str] = {}
    for name, expr in DOCUMENTED.findall(text):
        assert name not in found, f"{name} is documented twice in settings.py"
        found[name] = expr
    return found


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test away from the repo so ./settings.py is only read when a test asks."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.py"
    path.write_text(text)
    return path


# -- settings.py ---------------------------------------------------------------


def test_settings_py_documents_every_setting_with_its_default_and_env_var() -> None:
    """Each Settings field has a commented-out line NAME = default in settings.py, and its env variable is named."""
    docs = documented()
    text = SETTINGS_PY.read_text()
    names = {f.name.upper() for f in config.fields()}
    assert set(docs) == names
    for f in config.fields():
        name = f.name.upper()
        assert f"GEARWORKER_{name}" in text, f"settings.py does not name the env variable of {name}"
        if name == "PROCESSES":  # computed from the machine's cores
            assert docs[name] == "<number of cores>"
            continue
        assert ast.literal_eval(docs[name]) == default_of(f), f"{name}: settings.py says {docs[name]}"


def test_the_shipped_settings_py_loads_as_the_defaults() -> None:
    """settings.py as shipped changes nothing (servers empty: a local gearmand is used)."""
    loaded = config.load(SETTINGS_PY, env={})
    assert dataclasses.replace(loaded, source="defaults") == Settings()
    assert loaded.servers == []


def test_every_documented_line_uncommented_is_a_valid_setting(tmp_path: Path) -> None:
    """Uncommenting all of settings.py gives a valid file: the documented names and values are real."""
    text = SETTINGS_PY.read_text().replace("<number of cores>", "3")
    text = DOCUMENTED.sub(r"\1 = \2", text)
    loaded = config.load(write(tmp_path, text), env={})
    assert loaded.processes == 3
    assert dataclasses.replace(loaded, source="defaults", processes=Settings().processes) == Settings()


# -- precedence and formats ------------------------------------------------------


def test_precedence_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file, which beats the default."""
    path = write(tmp_path, "CONCURRENCY = 10\nGRACE_PERIOD = 7\nLOG_LEVEL = 'debug'\n")
    s = config.load(
        path,
        env={"GEARWORKER_CONCURRENCY": "20", "GEARWORKER_GRACE_PERIOD": "8"},
        overrides={"concurrency": 30, "log_level": None},
    )
    assert (s.concurrency, s.grace_period, s.log_level, s.grab_pipeline) == (30, 8.0, "debug", 32)
    assert s.source == str(path)


def test_settings_file_from_environment_variable(tmp_path: Path) -> None:
    """GEARWORKER_SETTINGS names the file when no path is given."""
    path = write(tmp_path, "SERVERS = ['h1:4730']\n")
    assert config.load(env={"GEARWORKER_SETTINGS": str(path)}).servers == ["h1:4730"]


def test_settings_py_in_the_working_directory_is_read_by_default(tmp_path: Path) -> None:
    """Without --settings or GEARWORKER_SETTINGS, ./settings.py is used when it exists."""
    write(tmp_path, "CONCURRENCY = 5\n")
    assert config.load(env={}).concurrency == 5


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("servers", "h1:4730,h2:4731", ["h1:4730", "h2:4731"]),
        ("servers", '["h1:4730", "[::1]:4730"]', ["h1:4730", "[::1]:4730"]),
        ("servers", "", []),
        ("handler_concurrency", "resize=2, slow=10", {"resize": 2, "slow": 10}),
        ("handler_concurrency", '{"resize": 2}', {"resize": 2}),
        ("aliases", "thumbnail=resize", {"thumbnail": "resize"}),
        ("max_tasks_per_child", "none", None),
        ("max_tasks_per_child", "500", 500),
        ("metrics", "0.0.0.0:9100", "0.0.0.0:9100"),
        ("metrics", "", None),
        ("grace_period", "2.5", 2.5),
        ("storage_roots", "/srv/photos,/srv/thumbs", ["/srv/photos", "/srv/thumbs"]),
        ("log_level", " warning ", "warning"),
    ],
)
def test_environment_values_are_parsed_to_the_setting_type(name: str, text: str, expected: Any) -> None:
    """GEARWORKER_<NAME>: lists comma-separated or JSON, mappings name=value or JSON, none/empty is None."""
    s = config.load(env={f"GEARWORKER_{name.upper()}": text})
    assert getattr(s, name) == expected


def test_path_objects_are_accepted_for_text_settings(tmp_path: Path) -> None:
    """HANDLERS_DIR = Path(__file__).parent / 'handlers' works in a settings file."""
    path = write(tmp_path, "from pathlib import Path as _Path\nHANDLERS_DIR = _Path(__file__).parent / 'h'\n")
    assert config.load(path, env={}).handlers_dir == str(tmp_path / "h")


def test_bare_port_means_loopback() -> None:
    """METRICS=9100 and a server '4730' mean 127.0.0.1 on that port."""
    assert parse_address("9100") == ("127.0.0.1", 9100)
    assert parse_address("[::1]:4731") == ("::1", 4731)
    assert parse_address("gearmand") == ("gearmand", 4730)


# -- bad values: exact messages ---------------------------------------------------

ENV = "environment variable GEARWORKER_"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GEARWORKER_CONCURRENCY": "lots"},
            ENV + "CONCURRENCY: setting 'concurrency': expected int, got 'lots' "
            "(invalid literal for int() with base 10: 'lots')",
        ),
        ({"GEARWORKER_CONCURRENCY": "0"}, ENV + "CONCURRENCY: setting 'concurrency': must be >= 1, got 0"),
        ({"GEARWORKER_PROCESSES": "-1"}, ENV + "PROCESSES: setting 'processes': must be >= 1, got -1"),
        (
            {"GEARWORKER_GRAB_PIPELINE": "2.5"},
            ENV + "GRAB_PIPELINE: setting 'grab_pipeline': expected int, got '2.5' "
            "(invalid literal for int() with base 10: '2.5')",
        ),
        (
            {"GEARWORKER_MAX_TASKS_PER_CHILD": "0"},
            ENV + "MAX_TASKS_PER_CHILD: setting 'max_tasks_per_child': must be >= 1 or None, got 0",
        ),
        (
            {"GEARWORKER_GRACE_PERIOD": "-1"},
            ENV + "GRACE_PERIOD: setting 'grace_period': must be a finite number >= 0, got -1.0",
        ),
        (
            {"GEARWORKER_GRACE_PERIOD": "nan"},
            ENV + "GRACE_PERIOD: setting 'grace_period': must be a finite number >= 0, got nan",
        ),
        (
            {"GEARWORKER_TIMEOUT_MARGIN": "soon"},
            ENV + "TIMEOUT_MARGIN: setting 'timeout_margin': expected float, got 'soon' "
            "(could not convert string to float: 'soon')",
        ),
        (
            {"GEARWORKER_RECONNECT_MIN": "5", "GEARWORKER_RECONNECT_MAX": "1"},
            ENV + "RECONNECT_MAX: setting 'reconnect_max': must be >= reconnect_min (5.0), got 1.0",
        ),
        (
            {"GEARWORKER_CONNECT_TIMEOUT": "inf"},
            ENV + "CONNECT_TIMEOUT: setting 'connect_timeout': must be a finite number >= 0, got inf",
        ),
        (
            {"GEARWORKER_SERVERS": "h1:4730,h2:gear"},
            ENV + "SERVERS: setting 'servers': bad port in 'h2:gear': expected HOST:PORT",
        ),
        ({"GEARWORKER_SERVERS": "h1:99999"}, ENV + "SERVERS: setting 'servers': port out of range in 'h1:99999'"),
        (
            {"GEARWORKER_METRICS": "localhost"},
            ENV + "METRICS: setting 'metrics': no port in 'localhost': expected HOST:PORT or PORT",
        ),
        (
            {"GEARWORKER_FAILURE_STYLE": "exceptions"},
            ENV + "FAILURE_STYLE: setting 'failure_style': must be one of ['exception', 'fail'], got 'exceptions'",
        ),
        (
            {"GEARWORKER_LOG_FORMAT": "xml"},
            ENV + "LOG_FORMAT: setting 'log_format': must be one of ['auto', 'console', 'json'], got 'xml'",
        ),
        (
            {"GEARWORKER_LOG_LEVEL": "verbose"},
            ENV + "LOG_LEVEL: setting 'log_level': must be one of ['debug', 'error', 'info', 'warning'], got 'verbose'",
        ),
        (
            {"GEARWORKER_HANDLER_CONCURRENCY": "resize"},
            ENV + "HANDLER_CONCURRENCY: setting 'handler_concurrency': expected dict[str, int], got 'resize' "
            "(expected NAME=VALUE pairs separated by commas, or a JSON object)",
        ),
        (
            {"GEARWORKER_HANDLER_CONCURRENCY": "resize=0"},
            ENV + "HANDLER_CONCURRENCY: setting 'handler_concurrency': limit for 'resize' must be an int >= 1, got 0",
        ),
        (
            {"GEARWORKER_LOCAL_GEARMAND_PORT": "70000"},
            ENV + "LOCAL_GEARMAND_PORT: setting 'local_gearmand_port': must be a TCP port (1-65535)",
        ),
        ({"GEARWORKER_MAX_PACKET_SIZE": "0"}, ENV + "MAX_PACKET_SIZE: setting 'max_packet_size': must be >= 1, got 0"),
        (
            {"GEARWORKER_MAX_IMAGE_PIXELS": "0"},
            ENV + "MAX_IMAGE_PIXELS: setting 'max_image_pixels': must be >= 1, got 0",
        ),
        (
            {"GEARWORKER_MAX_UPLOAD_BYTES": "-5"},
            ENV + "MAX_UPLOAD_BYTES: setting 'max_upload_bytes': must be >= 1, got -5",
        ),
        (
            {"GEARWORKER_SEVRERS": "h1"},
            "environment: setting 'sevrers': unknown setting in environment variable GEARWORKER_SEVRERS "
            "(did you mean GEARWORKER_SERVERS?)",
        ),
        (
            {"GEARWORKER_XYZZY": "1"},
            "environment: setting 'xyzzy': unknown setting in environment variable GEARWORKER_XYZZY",
        ),
    ],
)
def test_bad_environment_value_fails_at_load_with_exact_message(env: dict[str, str], message: str) -> None:
    """Each bad value names the environment variable, the setting and what was expected."""
    with pytest.raises(ConfigError) as info:
        config.load(env=env)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "CONCURRENCY = '10x'\n",
            "{file}: setting 'concurrency': expected int, got '10x' (invalid literal for int() with base 10: '10x')",
        ),
        ("CONCURRENCY = 2.5\n", "{file}: setting 'concurrency': expected int, got 2.5 (not an integer)"),
        ("CONCURRENCY = True\n", "{file}: setting 'concurrency': expected int, got True (not an integer)"),
        ("SERVERS = 4730\n", "{file}: setting 'servers': expected list[str], got 4730 (not a list)"),
        (
            "SERVERS = ['h1:4730', 5]\n",
            "{file}: setting 'servers': expected list[str], got ['h1:4730', 5] (not a string)",
        ),
        ("ALIASES = ['a']\n", "{file}: setting 'aliases': expected dict[str, str], got ['a'] (not a mapping)"),
        ("GRACE_PERIOD = -3\n", "{file}: setting 'grace_period': must be a finite number >= 0, got -3.0"),
        ("METRICS = 'localhost:http'\n", "{file}: setting 'metrics': bad port in 'localhost:http': expected HOST:PORT"),
        (
            "CONCURENCY = 10\n",
            "{file}: setting 'concurency': unknown setting (known: "
            + ", ".join(sorted(f.name for f in config.fields()))
            + ")",
        ),
        ("import os\nPORT = int(os.environ['NOPE_NOT_SET'])\n", "{file}: cannot be executed: KeyError: 'NOPE_NOT_SET'"),
        ("SERVERS = [\n", "{file}: cannot be executed: SyntaxError: '[' was never closed (settings.py, line 1)"),
    ],
)
def test_bad_settings_file_fails_with_exact_message(tmp_path: Path, text: str, message: str) -> None:
    """A bad settings file names the file, the setting and what was expected."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert str(info.value) == message.format(file=path)


def test_missing_settings_file_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    """--settings naming a file that does not exist fails instead of running on defaults."""
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "nope.py", env={})
    assert str(info.value) == f"{tmp_path / 'nope.py'}: settings file not found"
    with pytest.raises(ConfigError) as info:
        config.load(env={"GEARWORKER_SETTINGS": "/nonexistent/settings.py"})
    assert str(info.value) == "/nonexistent/settings.py: settings file not found"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"concurrency": "many"},
            "command line: setting 'concurrency': expected int, got 'many' "
            "(invalid literal for int() with base 10: 'many')",
        ),
        ({"servers": ["h1:x"]}, "command line: setting 'servers': bad port in 'h1:x': expected HOST:PORT"),
        (
            {"metrics": "127.0.0.1"},
            "command line: setting 'metrics': no port in '127.0.0.1': expected HOST:PORT or PORT",
        ),
        ({"no_such": 1}, "command line: setting 'no_such': unknown setting on the command line"),
    ],
)
def test_bad_flag_value_names_the_command_line(overrides: dict[str, Any], message: str) -> None:
    """A bad flag value is reported as coming from the command line."""
    with pytest.raises(ConfigError) as info:
        config.load(env={}, overrides=overrides)
    assert str(info.value) == message


def test_bad_value_in_file_overridden_by_environment_is_blamed_on_the_environment(tmp_path: Path) -> None:
    """The error names where the bad value came from, not just the settings file."""
    path = write(tmp_path, "CONCURRENCY = 10\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, env={"GEARWORKER_CONCURRENCY": "-2"})
    assert str(info.value) == "environment variable GEARWORKER_CONCURRENCY: setting 'concurrency': must be >= 1, got -2"


# -- gearworker check's text ------------------------------------------------------


def test_describe_lists_servers_handlers_and_limits() -> None:
    """describe() shows servers, each handler with kind/timeout/concurrency/aliases, pool, grace and metrics."""
    s = config.load(
        env={
            "GEARWORKER_SERVERS": "h1:4730,h2",
            "GEARWORKER_METRICS": "9100",
            "GEARWORKER_HANDLER_CONCURRENCY": "slow=2",
            "GEARWORKER_PROCESSES": "3",
        }
    )
    text = describe(s, discover(ROOT / "handlers", s.aliases))
    assert "servers: 2\n  h1:4730\n  h2:4730\n" in text
    assert re.search(r"^  echo +async +timeout=none concurrency=100 \(process limit\) aliases=echo_alias ", text, re.M)
    assert re.search(r"^  slow +async +timeout=none concurrency=2 \(settings\) ", text, re.M)
    assert re.search(r"^  slow_cpu +cpu +", text, re.M)
    assert "process pool: 3 processes for cpu handlers, recycled never" in text
    assert "shutdown grace: 30s" in text
    assert "metrics: http://127.0.0.1:9100/metrics and /healthz" in text


def test_describe_says_a_local_gearmand_is_used_without_servers() -> None:
    """With no servers, check says a local gearmand will be started and on which port."""
    s = config.load(env={"GEARWORKER_LOCAL_GEARMAND_PORT": "4999"})
    text = describe(s, discover(ROOT / "handlers"))
    assert "servers: none set, a local gearmand is started on 127.0.0.1:4999" in text


def test_handler_concurrency_for_an_unknown_handler_is_a_start_up_error(tmp_path: Path) -> None:
    """A per-handler limit naming no handler (a typo) fails with the file, the setting and the known handlers."""
    path = write(tmp_path, "HANDLER_CONCURRENCY = {'resise': 2}\n")
    s = config.load(path, env={})
    registry = discover(ROOT / "handlers")
    with pytest.raises(ConfigError) as info:
        describe(s, registry)
    assert str(info.value) == (
        f"{path}: setting 'handler_concurrency': names unknown handler 'resise' "
        f"(handlers: {', '.join(sorted(registry.handlers))})"
    )


# -- command-line flags and `gearworker check` -------------------------------------


def test_every_settings_flag_is_documented_next_to_its_setting() -> None:
    """Each `gearworker run` flag that sets a setting is named in settings.py, in that setting's block."""
    parser = cli.build_parser()
    subparsers = parser._subparsers
    assert subparsers is not None
    run = next(a for a in subparsers._group_actions if isinstance(a, argparse._SubParsersAction))
    known = {f.name for f in config.fields()}
    text = SETTINGS_PY.read_text()
    for action in run.choices["run"]._actions:
        if action.dest not in known:
            continue
        flag = action.option_strings[0]
        block = re.search(rf"# env GEARWORKER_{action.dest.upper()}\b[^\n]*\n# {action.dest.upper()} = ", text)
        assert block is not None and f"flag {flag}" in block.group(0), f"{flag} is not documented for {action.dest}"


def test_check_prints_what_would_run_with_flags_over_environment_over_file(tmp_path: Path) -> None:
    """`gearworker check --settings F --server ... --concurrency N` shows the merged settings: flags win."""
    path = write(tmp_path, "CONCURRENCY = 10\nGRACE_PERIOD = 12\nSERVERS = ['file:4730']\n")
    result = run_gearworker(
        "check",
        "--settings",
        str(path),
        "--server",
        "flag1:4730",
        "--server",
        "flag2:4731",
        "--concurrency",
        "7",
        "--handlers",
        str(ROOT / "handlers"),
        env={"GEARWORKER_GRACE_PERIOD": "13", "GEARWORKER_METRICS": "9100"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"settings: {path}\n")
    assert "servers: 2\n  flag1:4730\n  flag2:4731\n" in out
    assert "concurrency: 7 jobs in flight" in out
    assert "shutdown grace: 13s" in out
    assert "metrics: http://127.0.0.1:9100/metrics and /healthz" in out
    assert re.search(r"^  echo +async ", out, re.M)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--server", "h1:port"], {}, "command line: setting 'servers': bad port in 'h1:port': expected HOST:PORT"),
        (
            ["--metrics", "localhost"],
            {},
            "command line: setting 'metrics': no port in 'localhost': expected HOST:PORT or PORT",
        ),
        (["--concurrency", "0"], {}, "command line: setting 'concurrency': must be >= 1, got 0"),
        (
            [],
            {"GEARWORKER_GRACE_PERIOD": "-1"},
            "environment variable GEARWORKER_GRACE_PERIOD: setting 'grace_period': "
            "must be a finite number >= 0, got -1.0",
        ),
        (
            ["--handlers", "/nonexistent/handlers"],
            {},
            "command line: setting 'handlers_dir': handlers folder '/nonexistent/handlers' does not exist",
        ),
    ],
)
def test_check_reports_a_bad_value_precisely_and_exits_2(args: list[str], env: dict[str, str], message: str) -> None:
    """A bad flag or variable makes `gearworker check` exit 2 with one line naming the setting and its source."""
    result = run_gearworker("check", *args, env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"gearworker: configuration error: {message}\n"


def test_origin_names_where_each_value_came_from(tmp_path: Path) -> None:
    """Settings.origin(name) says file, environment variable or command line, for errors raised after load()."""
    path = write(tmp_path, "CONCURRENCY = 3\n")
    s = config.load(path, env={"GEARWORKER_PROCESSES": "2"}, overrides={"handlers_dir": "h"})
    assert s.origin("concurrency") == str(path)
    assert s.origin("processes") == "environment variable GEARWORKER_PROCESSES"
    assert s.origin("handlers_dir") == "command line"
    assert s.origin("servers") == str(path)  # a default: blame the file, where it would be set


def test_check_reports_a_missing_handlers_folder_from_the_settings_file(tmp_path: Path) -> None:
    """HANDLERS_DIR naming no folder fails `gearworker check` with the file and the setting."""
    path = write(tmp_path, "HANDLERS_DIR = '/nonexistent/handlers'\n")
    result = run_gearworker("check", "--settings", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"gearworker: configuration error: {path}: setting 'handlers_dir': "
        "handlers folder '/nonexistent/handlers' does not exist\n"
    )


def test_check_reports_a_bad_settings_file(tmp_path: Path) -> None:
    """A bad value in the settings file is reported with the file's path."""
    path = write(tmp_path, "PROCESSES = 'four'\n")
    result = run_gearworker("check", "--settings", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"gearworker: configuration error: {path}: setting 'processes': expected int, "
        "got 'four' (invalid literal for int() with base 10: 'four')\n"
    )
