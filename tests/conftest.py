"""Shared fixtures: real gearmand processes on free loopback ports.

These tests need Debian's ``gearman-job-server`` and ``gearman-tools``.  They
are never skipped: without gearmand they fail, loudly, so CI cannot go green
by accident (``.ci/run`` installs them).

``--gearmand=VERSION|PATH`` (or ``$GEARWORKER_TEST_GEARMAND``) picks the gearmand
they run against; the report's header says which.  A test whose expectation
differs between gearmand versions is marked ``@pytest.mark.gearmand_versions("why")``
and reads the version from the ``gearmand_version`` fixture.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import gearmand as gearmands
from gearmand import Gearmand, Version
from support import MakeGearmand

from gearworker import config as gearworker_config


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """The transport's tests run on both loops: the worker uses uvloop, whose transports differ in detail.

    Every other test gets asyncio's loop: pytest-asyncio 1.5 refuses None from this hook
    (UsageError at collection of every async test file).
    """
    import asyncio

    if item.path.name != "test_transport.py":
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="run the reliability suite at full size")
    parser.addoption(
        "--gearmand",
        metavar="VERSION|PATH",
        default=None,
        help=f"the gearmand the tests start: a version (scripts/gearmand VERSION builds it once) or a "
        f"binary's path; default ${gearmands.ENV_VAR}, else Debian's",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Read, then removed from the environment: gearworker refuses GEARWORKER_* variables it does not
    # know, and the tests' in-process workers and clients read the environment.
    from_env = os.environ.pop(gearmands.ENV_VAR, None)
    spec = config.getoption("--gearmand") or from_env
    shim = Path(tempfile.mkdtemp(prefix="gearworker-test-gearmand-")) if spec else None
    config.stash[_SHIM] = shim
    try:
        gearmands.use(spec, shim_dir=shim)
    except RuntimeError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_unconfigure(config: pytest.Config) -> None:
    shim = config.stash.get(_SHIM, None)
    if shim is not None:
        shutil.rmtree(shim, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    return gearmands.binary().describe()


_SHIM = pytest.StashKey[Path | None]()


@pytest.fixture
def gearmand_version(request: pytest.FixtureRequest) -> Version:
    """The version of the gearmand the tests run against, for a test that expects one thing on 1.1 and another
    on 2.0.  Such a test says why with ``@pytest.mark.gearmand_versions("why")``; without the marker, or
    against a gearmand whose version is unknown, it fails rather than guess (or skip)."""
    marker = request.node.get_closest_marker("gearmand_versions")
    if marker is None or not marker.args:
        pytest.fail('a test that depends on the gearmand version says why: @pytest.mark.gearmand_versions("...")')
    version = gearmands.binary().version
    if version.release is None:
        pytest.fail(
            f"this test expects different behaviour per gearmand version ({marker.args[0]}), and "
            f"{gearmands.binary().path} reports no version: run with --gearmand=VERSION (scripts/gearmand's build "
            "names its version)"
        )
    return version


@pytest.fixture
def gearmand_tls() -> bool:
    """Does the gearmand under test serve TLS with ``--ssl``?  A property of its build, not its version
    (:func:`gearmand.built_with_tls`): Debian's 1.1.20 does not; 1.1.21 and 2.0.0 built by scripts/gearmand do."""
    return gearmands.binary().tls


@pytest.fixture
def gearmand() -> Iterator[Gearmand]:
    """A fresh gearmand for one test."""
    g = Gearmand().start()
    yield g
    g.stop()


@pytest.fixture
def gearmand_factory(tmp_path: Path) -> Iterator[MakeGearmand]:
    """Start as many gearmands as a test needs (``gearmand_factory(**Gearmand fields)``); all are stopped afterwards."""
    started: list[Gearmand] = []

    def make(**kwargs: Any) -> Gearmand:
        g = Gearmand(**kwargs).start()
        started.append(g)
        return g

    yield make
    for g in started:
        g.stop()


@pytest.fixture(autouse=True)
def _no_settings_left_active() -> Iterator[None]:
    """A worker run in-process makes its settings the active ones (config.active()); the next test starts without."""
    yield
    gearworker_config.activate(None)
