"""Fixtures of the network tests: a namespace per test, with gearmand and gearworker inside it.

Needs root, iproute2, iptables, openssl and stunnel4 (``scripts/bootstrap test``
installs them).  A missing tool FAILS every test here: CI must not go green by
skipping the network.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import Lab, MakeStunnel, Netns, Pki, Stunnel, check_tools, make_pki


@pytest.fixture(autouse=True)
def _network_tools() -> None:
    missing = check_tools()
    if missing:
        pytest.fail(f"network tests need: {', '.join(missing)} (run scripts/bootstrap test as root)")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(Netns(), tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def stunnel_factory(tmp_path: Path) -> Iterator[MakeStunnel]:
    started: list[Stunnel] = []

    def make(**kwargs: Any) -> Stunnel:
        s = Stunnel(folder=tmp_path, **kwargs).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from netlab import FIGURES

    if FIGURES:
        terminalreporter.section("network figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
