"""Fixtures of the reliability suite: its size, the results store and its figures.

CI runs the reduced size; ``pytest tests/reliability --full`` runs the sizes
gearworker's reliability claims are made at (5,000 chaos jobs, 50 shutdown cycles, 200,000 soak jobs).
Every test prints its figures and merges them into ``artifacts/reliability.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import FIGURES, create_results_db


@dataclass(frozen=True)
class Size:
    """How big each scenario is."""

    full: bool
    chaos_jobs: int
    shutdown_cycles: int
    soak_jobs: int
    soak_cpu_jobs: int

    @property
    def label(self) -> str:
        return "full" if self.full else "reduced"


@pytest.fixture(scope="session")
def size(request: pytest.FixtureRequest) -> Size:
    if request.config.getoption("--full"):
        return Size(True, chaos_jobs=5000, shutdown_cycles=50, soak_jobs=200_000, soak_cpu_jobs=1000)
    return Size(False, chaos_jobs=500, shutdown_cycles=5, soak_jobs=20_000, soak_cpu_jobs=100)


@pytest.fixture
def results_db(tmp_path: Path) -> Path:
    """An empty results store; handlers find it through $GW_RESULTS_DB."""
    return create_results_db(tmp_path / "results.db")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, figures in FIGURES.items():
        terminalreporter.write_line(f"{name}:")
        for key, value in sorted(figures.items()):
            terminalreporter.write_line(f"    {key}: {value}")
