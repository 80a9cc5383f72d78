"""Shared fixtures: real gearmand processes on free loopback ports.

These tests need Debian's ``gearman-job-server`` and ``gearman-tools``.  They
are never skipped: without gearmand they fail, loudly, so CI cannot go green
by accident (``.ci/run`` installs them).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gearmand import Gearmand
from support import MakeGearmand


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
