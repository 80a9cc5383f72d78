"""The deployment files: the systemd unit, docker-compose.yml and the Dockerfile.

No Docker engine or systemd PID 1 runs here, so these tests parse the files
and check that what they run is real: the commands parse with the project's
own argument parsers, the environment loads as valid settings, the flags given
to gearmand exist in the installed gearmand, the Dockerfile provides what
scripts/bootstrap installs (gearmand built from source in a build stage), and
``systemd-analyze verify`` accepts the unit.  tests/containers checks the built image.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from support import ROOT

from gearworker import config
from gearworker.address import parse_address
from gearworker.app import cli, launch
from gearworker.web import cli as web_cli

UNIT = ROOT / "deploy" / "gearworker.service"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
BOOTSTRAP = ROOT / "scripts" / "bootstrap"
RUNTIME_EXTRAS = {"images", "web", "metrics"}
BASE_IMAGE = "python:3.13-slim-trixie"  # Debian 13 and Python 3.13, as scripts/container-base makes it
GEARMAND_VERSION = "2.0.0"
# The programs of scripts/bootstrap's runtime Debian packages, which the image builds from gearmand's source instead.
PROGRAMS_OF_RUNTIME_PACKAGES = {
    "gearman-job-server": {"sbin/gearmand"},
    "gearman-tools": {"bin/gearman", "bin/gearadmin"},
}


# -- helpers ---------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values...]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(text: str) -> float:
    """A systemd time span ("45", "45s", "1min 30s") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * units[unit]
    return total


def parse_worker_command(argv: list[str]) -> argparse.Namespace:
    """Parse a worker command line (``gearworker ...`` or ``python -m gearworker ...``) with the real CLI parser."""
    if argv[:3] == ["python", "-m", "gearworker"]:
        args = argv[3:]
    else:
        assert Path(argv[0]).name == "gearworker", f"not a gearworker command: {argv}"
        args = argv[1:]
    if launch.runs_worker(args) and (not args or args[0] != "run"):
        args = ["run", *args]  # what gearworker.app.launch.main does
    try:
        return cli.build_parser().parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{argv} is rejected by gearworker's own parser (exit {e.code})")


def settings_from_env(environment: dict[str, Any]) -> config.Settings:
    env = {k: str(v) for k, v in environment.items()}
    assert all(k.startswith("GEARWORKER_") for k in env), "only GEARWORKER_<NAME> variables configure the worker"
    return config.load(ROOT / "settings.py", env=env)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped, all stages."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    out = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


def dockerfile_stages() -> list[tuple[str | None, str, list[tuple[str, str]]]]:
    """The stages of the Dockerfile: (name or None, base image, its instructions after FROM)."""
    stages: list[tuple[str | None, str, list[tuple[str, str]]]] = []
    for instruction, arg in dockerfile_instructions():
        if instruction == "FROM":
            words = [w for w in arg.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append((name, words[0], []))
        elif stages:
            stages[-1][2].append((instruction, arg))
    return stages


def dockerfile_args(steps: list[tuple[str, str]]) -> dict[str, str]:
    """ARG NAME=default of a stage."""
    return dict(arg.split("=", 1) for instruction, arg in steps if instruction == "ARG" and "=" in arg)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the build context; last match wins."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            ignored = not negated
    return ignored


def gearmand_command(compose: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """The compose gearmand's options: ({--flag: value}, {--switch without a value})."""
    command = compose["services"]["gearmand"]["command"]
    assert command[0] == "gearmand"
    flags = dict(arg.split("=", 1) for arg in command[1:] if "=" in arg)
    switches = {arg for arg in command[1:] if "=" not in arg}
    return flags, switches


def apt_packages(script: str) -> set[str]:
    """Package names given to ``apt-get install`` in a shell script or RUN line (variables expanded)."""
    script = script.replace("\\\n", " ")
    assignment = r'^\s*(?:export\s+)?(\w+)=["(]?([^")\n]*)[")]?'
    variables = dict(re.findall(assignment, script, re.M))
    packages: set[str] = set()
    for match in re.finditer(r"apt-get\s+(?:-\S+\s+)*install\s+([^&;|\n]*)", script):
        for word in shlex.split(match.group(1)):
            word = word.strip('"')
            name = re.fullmatch(r"\$\{?(\w+)(?:\[@\])?\}?", word)
            if name:
                packages.update(variables.get(name.group(1), "").split())
            elif not word.startswith("-"):
                packages.add(word)
    return packages


def pip_extras(text: str) -> set[str]:
    """The extras named in ``pip install '.[a,b]'`` / ``-e '.[a]'``."""
    return {extra.strip() for group in re.findall(r"\.\[([\w,\s-]+)\]", text) for extra in group.split(",")}


def expand_extras(extras: set[str]) -> set[str]:
    """Follow self-references like ``all = ["gearworker[images,web,metrics]"]``."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in table.get(extra, []):
            inner = re.fullmatch(r"gearworker\[([\w,]+)\]", requirement.replace(" ", ""))
            if inner:
                todo.extend(inner.group(1).split(","))
    return seen


# -- systemd unit ----------------------------------------------------------------


def test_unit_is_type_notify_with_mixed_kill_and_restart() -> None:
    """Type=notify (READY=1 from the main process), KillMode=mixed, Restart=on-failure, a watchdog, a dedicated user."""
    service = parse_unit(UNIT)["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["KillMode"] == ["mixed"]
    assert service.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"]
    assert service["Restart"] == ["on-failure"]
    assert seconds(service["WatchdogSec"][0]) > 0
    assert service["User"][0] not in ("", "root", "0")
    assert parse_unit(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_stop_timeout_exceeds_the_shutdown_grace_period() -> None:
    """systemd must not SIGKILL the worker while it is still draining jobs for GRACE_PERIOD."""
    service = parse_unit(UNIT)["Service"]
    env = dict(v.split("=", 1) for line in service.get("Environment", []) for v in shlex.split(line))
    env = {k: v for k, v in env.items() if k.startswith("GEARWORKER_") and k != "GEARWORKER_SETTINGS"}
    grace = settings_from_env(env).grace_period
    assert seconds(service["TimeoutStopSec"][0]) >= grace + 10


def test_unit_hardening_options() -> None:
    """The unit's hardening is on (and none that break Python's multiprocessing or cffi)."""
    service = parse_unit(UNIT)["Service"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"][0] in ("strict", "full")
    assert service["PrivateTmp"] == ["yes"]
    assert service["ProtectHome"] == ["yes"]
    assert "MemoryDenyWriteExecute" not in service  # libffi closures need W+X pages
    # ProtectSystem=strict makes / read-only: the pid file must go to a directory systemd creates for us.
    exec_start = shlex.split(service["ExecStart"][0])
    pid_file = exec_start[exec_start.index("--pid-file") + 1]
    assert pid_file.startswith(f"/run/{service['RuntimeDirectory'][0]}/")


def test_unit_exec_start_is_the_real_command_line() -> None:
    """ExecStart runs the console script `gearworker run` with flags gearworker's own parser accepts."""
    service = parse_unit(UNIT)["Service"]
    argv = shlex.split(service["ExecStart"][0])
    args = parse_worker_command(argv)
    assert args.command == "run"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gearworker"] == "gearworker.app.launch:main"
    assert argv[0].endswith("/.venv/bin/gearworker")


def test_unit_reload_sends_sighup_to_the_main_process() -> None:
    """`systemctl reload` reloads the handlers without a restart: ExecReload sends SIGHUP to $MAINPID."""
    service = parse_unit(UNIT)["Service"]
    argv = shlex.split(service["ExecReload"][0])
    assert argv[0] in ("/bin/kill", "/usr/bin/kill") and argv[1:] == ["-HUP", "$MAINPID"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing for the unit (ExecStart pointed at this checkout's venv)."""
    venv_gearworker = Path(sys.executable).parent / "gearworker"
    assert venv_gearworker.exists()
    text = UNIT.read_text()
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={venv_gearworker}", text, flags=re.M)
    unit = tmp_path / "gearworker.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 even for unknown keys or bad values; its complaints name the file.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "gearworker.service" in line]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr


# -- docker-compose.yml ----------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_gearmand_workers_and_web_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    """Services gearmand, worker (several) and web, all running the image built from the Dockerfile in the repo,
    all with healthchecks.  The image is built once (by gearmand's `build`) and tagged with the `image` name the
    other two run: podman-compose builds once per service and per replica otherwise, in parallel."""
    services = compose["services"]
    assert set(services) >= {"gearmand", "worker", "web"}
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["gearmand"], builders
    build = services["gearmand"]["build"]
    context = build if isinstance(build, str) else build["context"]
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
    image = services["gearmand"]["image"]
    assert re.fullmatch(r"\$\{GW_IMAGE:-gearworker:latest\}", image), image  # overridable, e.g. by the tests
    for name in ("gearmand", "worker", "web"):
        assert services[name]["image"] == image
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    # podman-compose 1.6 ignores replicas unless the mode (Compose's default) is spelled out.
    assert services["worker"]["deploy"] == {"mode": "replicated", "replicas": services["worker"]["deploy"]["replicas"]}
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_compose_gives_every_service_an_explicit_stop_grace_period(compose: dict[str, Any]) -> None:
    """Each service says how long it may take to stop (through podman's Docker API, Compose v2 SIGKILLed a service
    without one at once); the web app's outlasts its own graceful timeout."""
    for name, service in compose["services"].items():
        assert "stop_grace_period" in service, name
    graceful = re.search(r"timeout_graceful_shutdown=(\d+)", Path(web_cli.__file__).read_text())
    assert graceful is not None
    assert seconds(compose["services"]["web"]["stop_grace_period"]) > int(graceful.group(1))


def test_compose_publishes_gearmand_and_web_on_loopback_only(compose: dict[str, Any]) -> None:
    """gearmand (4730) and the web app (8000) are published on 127.0.0.1 only, on host ports set by GW_GEARMAND_PORT
    and GW_WEB_PORT (the tests run stacks side by side on free ports)."""
    services = compose["services"]
    expected = {"gearmand": "127.0.0.1:${GW_GEARMAND_PORT:-4730}:4730", "web": "127.0.0.1:${GW_WEB_PORT:-8000}:8000"}
    for name, port in expected.items():
        assert services[name]["ports"] == [port]
    assert "ports" not in services["worker"]
    # Compose variables are not GEARWORKER_ names: those are settings, and an unknown one is an error.
    assert not re.search(r"\$\{GEARWORKER_", COMPOSE.read_text())


def test_compose_gearmand_keeps_its_queue_on_a_volume(compose: dict[str, Any]) -> None:
    """gearmand uses the sqlite queue in a named volume, with flags the installed gearmand knows."""
    gearmand = compose["services"]["gearmand"]
    flags, switches = gearmand_command(compose)
    assert flags["--queue-type"] == "libsqlite3"
    mounts = {target: source for source, target in (v.split(":")[:2] for v in gearmand["volumes"])}
    db_dir = str(Path(flags["--libsqlite3-db"]).parent)
    assert mounts[db_dir] in compose["volumes"]
    # The image's own gearmand is checked by tests/containers; this one is Debian's (1.1.20 and later have them all).
    help_text = subprocess.run(["gearmand", "--help"], capture_output=True, text=True, timeout=30).stdout
    for flag in [*flags, *switches]:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"gearmand has no {flag}"
    assert gearmand["healthcheck"]["test"][1] == "gearadmin"


def test_compose_gearmand_has_tcp_keepalive_so_a_vanished_workers_job_goes_to_another_worker(
    compose: dict[str, Any],
) -> None:
    """A worker whose host vanishes without a FIN keeps its running job "running" in gearmand forever unless gearmand
    probes idle connections: --keepalive, first probe after 5 s idle, 3 probes 2 s apart (measured with these, a worker
    cut off 1 s into an 8 s job: the client had its result 19 s after the cut).  tests/containers/test_compose.py cuts
    a worker off for real."""
    flags, switches = gearmand_command(compose)
    assert "--keepalive" in switches
    assert (flags["--keepalive-idle"], flags["--keepalive-interval"], flags["--keepalive-count"]) == ("5", "2", "3")


def test_compose_worker_command_and_environment_are_real(compose: dict[str, Any]) -> None:
    """The worker runs `python -m gearworker run`; its environment is valid settings naming the gearmand service."""
    worker = compose["services"]["worker"]
    assert (ROOT / "gearworker" / "__main__.py").exists()
    assert parse_worker_command(worker["command"]).command == "run"
    settings = settings_from_env(worker["environment"])
    gearmand_port = next(a for a in compose["services"]["gearmand"]["command"] if a.startswith("--port=")).split("=")[1]
    assert settings.servers == [f"gearmand:{gearmand_port}"]
    assert settings.metrics is not None
    host, port = parse_address(settings.metrics)
    assert host == "0.0.0.0"  # reachable by Prometheus from another container
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(worker["healthcheck"]["test"])
    # Docker sends SIGKILL after stop_grace_period: it must outlast the drain.
    assert seconds(worker["stop_grace_period"]) >= settings.grace_period + 10
    assert worker["init"] is True


def test_compose_web_command_and_environment_are_real(compose: dict[str, Any]) -> None:
    """The web service runs `python -m gearworker.web` with flags its parser accepts; its healthcheck route exists."""
    web = compose["services"]["web"]
    command = web["command"]
    assert command[:3] == ["python", "-m", "gearworker.web"]
    assert (ROOT / "gearworker" / "web" / "__main__.py").exists()
    parser = argparse.ArgumentParser()
    web_cli.add_arguments(parser)
    args = parser.parse_args(command[3:])
    settings = settings_from_env(web["environment"])
    assert settings.servers == ["gearmand:4730"]
    health = " ".join(web["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'", health)
    assert url is not None and int(url.group(1)) == args.port
    from gearworker.web.app import create_app

    paths = {getattr(route, "path", None) for route in create_app(["127.0.0.1:4730"]).routes}
    assert url.group(2) in paths


def test_compose_shares_a_photos_volume_between_workers_and_web(compose: dict[str, Any]) -> None:
    """Workers and the web app mount the same named photos volume, inside STORAGE_ROOTS."""
    services = compose["services"]
    for name in ("worker", "web"):
        mounts = dict(v.split(":")[:2] for v in services[name]["volumes"])
        assert mounts.get("photos") == "/data/photos"
        assert "/data/photos" in settings_from_env(services[name]["environment"]).storage_roots
    assert "photos" in compose["volumes"]


def test_compose_web_keeps_its_photos_on_the_photos_volume(compose: dict[str, Any]) -> None:
    """The web app's storage root lies inside the photos volume, so photos outlive the web container; it is
    reachable from the host's loopback only unless a login is set."""
    web = compose["services"]["web"]
    mounts = {target: source for source, target in (v.split(":")[:2] for v in web["volumes"])}
    settings = settings_from_env(web["environment"])
    root = PurePosixPath(settings.web_storage_root)
    assert any(root.is_relative_to(target) and source in compose["volumes"] for target, source in mounts.items())
    if settings.web_allow_insecure_remote and not settings.web_password_hash:
        assert all(port.startswith("127.0.0.1:") for port in web["ports"])


# -- Dockerfile ------------------------------------------------------------------


def test_dockerfile_base_user_and_command() -> None:
    """Every stage on python:3.13-slim-trixie (Debian 13, Python 3.13), a non-root user, CMD python -m gearworker."""
    stages = dockerfile_stages()
    names = {name for name, _, _ in stages}
    assert {base for _, base, _ in stages if base not in names} == {BASE_IMAGE}
    base = (ROOT / "scripts" / "container-base").read_text()
    assert f'PYTHON_IMAGE="{BASE_IMAGE}"' in base and 'SUITE="trixie"' in base
    steps = stages[-1][2]
    users = [arg for instruction, arg in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(instruction == "RUN" and "useradd" in arg and users[-1] in arg for instruction, arg in steps)
    cmd = [arg for instruction, arg in steps if instruction == "CMD"]
    assert json.loads(cmd[-1]) == ["python", "-m", "gearworker"]


def test_dockerfile_copies_what_exists_and_is_not_dockerignored() -> None:
    """Every COPY source exists and .dockerignore does not exclude it."""
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for instruction, arg in dockerfile_instructions():
        if instruction != "COPY" or arg.startswith("--from="):
            continue
        *sources, _ = arg.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source not in ignored and source.rstrip("/") not in ignored, source
            assert not dockerignored(source.rstrip("/")), source


def test_dockerignore_lets_in_the_gearmand_tarball_and_nothing_else_of_vendor() -> None:
    """vendor/gearmand-VERSION.tar.gz (scripts/gearmand-source) reaches the build, which then needs no download;
    the rest of vendor/ does not."""
    assert not dockerignored(f"vendor/gearmand-{GEARMAND_VERSION}.tar.gz")
    assert dockerignored("vendor/other-1.0.tar.gz")
    # COPY vendor/ needs the folder in a fresh checkout: its README is committed, the tarballs are not.
    assert (ROOT / "vendor" / "README.md").is_file()
    assert "/vendor/*.tar.gz" in (ROOT / ".gitignore").read_text().splitlines()


def test_gearmand_source_takes_the_copy_scripts_gearmand_keeps_in_its_cache(tmp_path: Path) -> None:
    """A clone with no ../shared beside it, on a machine where scripts/gearmand built gearmand once: the image
    build gets the source from the cache's copy (checked against the Dockerfile's sha256), not from GitHub."""
    clone = tmp_path / "elsewhere" / "gearworker"  # what the script reads of a checkout; no ../shared beside it
    (clone / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "gearmand-source", clone / "scripts")
    shutil.copy2(ROOT / "Dockerfile", clone)
    source = tmp_path / "src" / f"gearmand-{GEARMAND_VERSION}"
    source.mkdir(parents=True)
    (source / "configure.ac").write_text("AC_INIT([gearmand], [2.0.0])\n")
    cache = tmp_path / "cache"
    (cache / f"gearmand-{GEARMAND_VERSION}").mkdir(parents=True)
    tarball = cache / f"gearmand-{GEARMAND_VERSION}" / f"gearmand-{GEARMAND_VERSION}.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(source.parent), source.name], check=True)
    tree = subprocess.run(  # the Dockerfile's sha256 over the extracted files
        "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1",
        shell=True,
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dockerfile = clone / "Dockerfile"
    dockerfile.write_text(
        re.sub(r"(?m)^ARG GEARMAND_TREE_SHA256=.*$", f"ARG GEARMAND_TREE_SHA256={tree}", dockerfile.read_text())
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GEARMAND_TARBALL", "XDG_CACHE_HOME")}
    out = subprocess.run(
        [str(clone / "scripts" / "gearmand-source")],
        env={**env, "GEARWORKER_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    vendored = clone / "vendor" / f"gearmand-{GEARMAND_VERSION}.tar.gz"
    assert out.stdout.strip() == str(vendored)
    assert vendored.read_bytes() == tarball.read_bytes()


def test_dockerfile_builds_gearmand_2_0_0_in_a_build_stage() -> None:
    """Stage 1 compiles gearmand 2.0.0 with SSL and the sqlite queue from the tag's source (a local copy in vendor/,
    else GitHub's tarball), checked against a pinned sha256; the image copies the result in, with no Debian gearmand."""
    (build_name, _, build), *_, (_, _, final) = dockerfile_stages()
    assert build_name is not None
    args = dockerfile_args(build)
    assert args["GEARMAND_VERSION"] == GEARMAND_VERSION
    assert args["GEARMAND_URL"] == "https://github.com/gearman/gearmand/archive/refs/tags/${GEARMAND_VERSION}.tar.gz"
    assert re.fullmatch(r"[0-9a-f]{64}", args["GEARMAND_TREE_SHA256"])
    runs = "\n".join(arg for instruction, arg in build if instruction == "RUN")
    assert ("COPY", "vendor/ /tmp/vendor/") in build
    assert "/tmp/vendor/gearmand-$GEARMAND_VERSION.tar.gz" in runs and '"$GEARMAND_URL"' in runs
    assert '"$GEARMAND_TREE_SHA256"' in runs
    configure = re.search(r"\./configure ([^&]*)", runs)
    assert configure is not None and {"--enable-ssl", "--with-sqlite3"} <= set(configure.group(1).split())
    assert re.search(r"make [^&]*install", runs)
    assert apt_packages(runs) >= {
        "libboost-program-options-dev",
        "libevent-dev",
        "uuid-dev",
        "libssl-dev",
        "libsqlite3-dev",
        "gperf",
        "g++",
        "make",
    }
    copies = [arg for instruction, arg in final if instruction == "COPY" and arg.startswith("--from=")]
    assert copies == [f"--from={build_name} /stage/usr/local/ /usr/local/"], copies
    final_runs = "\n".join(arg for instruction, arg in final if instruction == "RUN")
    # No gearmand from Debian beside it: only the libraries the built programs link.
    assert all(package.startswith("lib") for package in apt_packages(final_runs)), apt_packages(final_runs)


def test_dockerfile_installs_what_scripts_bootstrap_installs() -> None:
    """The programs of scripts/bootstrap's runtime Debian packages (built from gearmand's source, and checked to run
    with their libraries when the image is built), and the runtime extras of the same pip install."""
    assert BOOTSTRAP.exists(), "scripts/bootstrap is the reference install; the Dockerfile mirrors it"
    bootstrap = BOOTSTRAP.read_text()
    runtime = re.search(r'^runtime_packages="([^"]*)"', bootstrap, re.M)
    assert runtime is not None, "scripts/bootstrap names its runtime_packages"
    assert set(runtime.group(1).split()) == set(PROGRAMS_OF_RUNTIME_PACKAGES)
    final = dockerfile_stages()[-1][2]
    runs = "\n".join(arg for instruction, arg in final if instruction == "RUN")
    checked = re.search(r"! ldd ([^|]*)\| grep 'not found'", runs)
    assert checked is not None, "the image build checks that the copied programs find their libraries"
    programs = set().union(*PROGRAMS_OF_RUNTIME_PACKAGES.values())
    assert set(checked.group(1).split()) == {f"/usr/local/{program}" for program in programs}
    docker_extras = pip_extras(runs)
    assert docker_extras == RUNTIME_EXTRAS
    assert expand_extras(pip_extras(bootstrap)) & RUNTIME_EXTRAS == RUNTIME_EXTRAS


# -- docs --------------------------------------------------------------------------


def test_settings_reference_lists_every_setting_with_its_environment_variable() -> None:
    """docs/settings.md has a row for each setting naming its GEARWORKER_ variable."""
    text = (ROOT / "docs" / "settings.md").read_text()
    for f in config.fields():
        name = f.name.upper()
        row = re.search(rf"^\| `{name}` \|[^\n]*`GEARWORKER_{name}`", text, re.M)
        assert row, f"{name} missing from docs/settings.md"


def test_readme_has_the_operator_sections_and_their_links_resolve() -> None:
    """README has Settings, Deploying and Migrating sections; every relative link points at a file in the repo."""
    readme = (ROOT / "README.md").read_text()
    for heading in ("## Settings", "## Deploying", "## Migrating from the PHP daemon"):
        assert f"\n{heading}\n" in readme
    for doc in ("README.md", "docs/deploy.md", "docs/settings.md", "docs/migrating.md"):
        path = ROOT / doc
        for target in re.findall(r"\]\(([^)#\s]+)\)", path.read_text()):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{doc} links to missing {target}"
