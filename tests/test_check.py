"""gearworker.app.check: the text of ``gearworker check`` and its start-up check of per-handler limits.

tests/test_settings.py covers the command end to end; these pin the lines one by one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gearworker import config
from gearworker.app.check import check_handlers, describe
from gearworker.config import Settings
from gearworker.errors import ConfigError
from gearworker.worker.registry import Registry, discover

HANDLERS = """
from gearworker import handler

@handler("fetch", aliases=["get", "download"])
async def fetch(job):
    return job.workload

@handler("hash", timeout=1.5, concurrency=3)
def hash_(job):
    return b""

@handler("resize_big", cpu=True, timeout=120)
def resize_big(job):
    return b""
"""


def settings(**overrides: object) -> Settings:
    return config.load(env={}, overrides={"servers": ["h1:4730"], **overrides})


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    # A file name of its own: handler modules are cached by name for the whole test session.
    (tmp_path / "check_unit.py").write_text(HANDLERS)
    return discover(tmp_path)


def handler_lines(text: str) -> dict[str, str]:
    """The per-handler lines, by handler name (columns squeezed to single spaces)."""
    return {
        line.split()[0]: " ".join(line.split())
        for line in text.splitlines()
        if line.startswith("  ") and not line.startswith("  h1:")
    }


def test_the_summary_counts_handlers_kinds_and_function_names(tmp_path: Path, registry: Registry) -> None:
    """ "handlers: N from DIR/ (C cpu, A async/thread), F function names" counts aliases as function names."""
    text = describe(settings(handlers_dir=str(tmp_path)), registry)
    assert f"handlers: 3 from {tmp_path}/ (1 cpu, 2 async/thread), 5 function names" in text.splitlines()


def test_each_handler_line_shows_kind_timeout_effective_concurrency_aliases_and_file(
    tmp_path: Path, registry: Registry
) -> None:
    """async/thread/cpu kind, timeout (or none), the decorator's limit or the process limit, sorted aliases, file."""
    lines = handler_lines(describe(settings(handlers_dir=str(tmp_path), concurrency=40), registry))
    file = tmp_path / "check_unit.py"
    assert lines == {
        "fetch": f"fetch async timeout=none concurrency=40 (process limit) aliases=download,get file={file}",
        "hash": f"hash thread timeout=1.5s concurrency=3 file={file}",
        "resize_big": f"resize_big cpu timeout=120s concurrency=40 (process limit) file={file}",
    }


def test_handlers_are_listed_by_name_in_aligned_columns(tmp_path: Path, registry: Registry) -> None:
    """Handler lines are sorted by name, their kind column starting at the same place."""
    text = describe(settings(handlers_dir=str(tmp_path)), registry)
    rows = [line for line in text.splitlines() if line.startswith("  ") and not line.startswith("  h1:")]
    assert [row.split()[0] for row in rows] == ["fetch", "hash", "resize_big"]
    assert len({row.index(row.split()[1]) for row in rows}) == 1


def test_a_limit_from_settings_beats_the_decorators_and_says_so(tmp_path: Path, registry: Registry) -> None:
    """HANDLER_CONCURRENCY overrides @handler(concurrency=...): "concurrency=7 (settings)"."""
    text = describe(settings(handlers_dir=str(tmp_path), handler_concurrency={"hash": 7}), registry)
    assert "concurrency=7 (settings) " in handler_lines(text)["hash"]


def test_limits_lines_show_the_effective_values() -> None:
    """Pool recycling, reconnect, failure style, metrics address and log/pid files are shown as configured."""
    text = describe(
        settings(
            max_tasks_per_child=500,
            processes=4,
            reconnect_min=0.5,
            reconnect_max=30,
            connect_timeout=2,
            failure_style="exception",
            max_packet_size=1024,
            metrics=":9100",
            log_file="/var/log/gw.json",
            pid_file="/run/gw.pid",
            log_level="warning",
            log_format="json",
            grace_period=2.5,
            timeout_margin=1,
        ),
        Registry(),
    )
    lines = text.splitlines()
    assert "process pool: 4 processes for cpu handlers, recycled after 500 jobs" in lines
    assert "shutdown grace: 2.5s; timeout margin: 1s" in lines
    assert "reconnect: 0.5s to 30s; connect timeout 2s" in lines
    assert "failures: exception; max packet 1024 bytes" in lines
    assert "metrics: http://127.0.0.1:9100/metrics and /healthz" in lines
    assert "logs: json, level warning, file /var/log/gw.json; pid file /run/gw.pid" in lines


def test_defaults_say_never_off_and_none() -> None:
    """Unset options read as "recycled never", "metrics: off", "file none" and "pid file none"."""
    lines = describe(settings(), Registry()).splitlines()
    assert lines[0] == f"settings: {settings().source}"
    assert lines[1:3] == ["servers: 1", "  h1:4730"]
    assert "process pool: 2 processes for cpu handlers, recycled never" in lines
    assert "metrics: off" in lines
    assert lines[-1].endswith("file none; pid file none")


def test_servers_without_a_port_show_the_default_port() -> None:
    """Each server is shown as host:port, with 4730 filled in."""
    text = describe(settings(servers=["alpha", "beta:4731"]), Registry())
    assert "servers: 2\n  alpha:4730\n  beta:4731\n" in text


def test_check_handlers_accepts_limits_for_known_handlers(registry: Registry) -> None:
    """A HANDLER_CONCURRENCY naming real handlers passes (returns nothing)."""
    check_handlers(settings(handler_concurrency={"fetch": 1, "resize_big": 2}), registry)


def test_check_handlers_refuses_an_alias_as_a_handler_name(registry: Registry) -> None:
    """Limits are per handler, not per function name: naming an alias is an error listing the handlers."""
    with pytest.raises(ConfigError) as info:
        check_handlers(settings(handler_concurrency={"get": 1}), registry)
    assert info.value.setting == "handler_concurrency"
    assert info.value.detail == "names unknown handler 'get' (handlers: fetch, hash, resize_big)"


def test_check_handlers_with_no_handlers_says_none() -> None:
    """With an empty handlers folder the error says "(handlers: none)"."""
    with pytest.raises(ConfigError) as info:
        describe(settings(handler_concurrency={"resize": 2}), Registry())
    assert info.value.detail == "names unknown handler 'resize' (handlers: none)"
    assert info.value.file == settings().source
