"""The version is written once, in pyproject.toml; the command, the package and the changelog agree with it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import gearworker

ROOT = Path(__file__).resolve().parent.parent
WRITTEN = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_gearworker_version_prints_the_installed_packages_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gearworker", "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == f"gearworker {version('gearworker')}" == f"gearworker {WRITTEN}"
    assert gearworker.__version__ == WRITTEN


def test_the_version_is_written_nowhere_in_the_package_but_read_from_the_metadata() -> None:
    written = [
        p for p in (ROOT / "gearworker").rglob("*.py") if re.search(rf"['\"]{re.escape(WRITTEN)}['\"]", p.read_text())
    ]
    assert written == []


def test_the_changelog_names_the_current_version_first() -> None:
    headings = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings and headings[0] == WRITTEN
