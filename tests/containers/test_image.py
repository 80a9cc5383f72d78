"""The image built from the Dockerfile, run for real with podman: Debian 13, Python 3.13, gearmand 2.0.0.

Each check is a throwaway `podman run --rm` of the session's ``image`` (built by the fixture from a base that
scripts/container-base pulls, or makes from this machine's apt mirror).  Select them with ``pytest -m containers``.
"""

from __future__ import annotations

import re

import pytest
import yaml

from .stack import COMPOSE_FILE, MODULE_TIMEOUT, run

pytestmark = [pytest.mark.containers, pytest.mark.timeout(MODULE_TIMEOUT)]


def in_image(image: str, script: str) -> str:
    """Run a shell script in a throwaway container of the image (no network); its output."""
    result = run(["podman", "run", "--rm", "--network", "none", image, "sh", "-c", script], timeout=120)
    return result.stdout + result.stderr


def test_the_image_is_debian_13_with_python_3_13(image: str) -> None:
    out = in_image(
        image,
        '. /etc/os-release && echo "$VERSION_ID $VERSION_CODENAME" '
        "&& python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'",
    )
    assert out.split() == ["13", "trixie", "3.13"], out


def test_the_image_runs_gearmand_2_0_0_with_ssl_and_the_sqlite_queue(image: str) -> None:
    """gearmand --version names 2.0.0; its --help has SSL, the sqlite queue and every option docker-compose.yml gives
    it (--keepalive and its timings among them); gearman and gearadmin (the healthchecks) run."""
    version = in_image(image, "gearmand --version")
    assert re.match(r"gearmand 2\.0\.0 ", version.strip()), version
    help_text = in_image(image, "gearmand --help")
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["gearmand"]["command"]
    flags = [arg.split("=", 1)[0] for arg in command[1:]]
    assert "--keepalive" in flags
    for flag in [*flags, "--ssl", "--ssl-certificate", "--ssl-key", "--libsqlite3-db"]:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"the image's gearmand has no {flag}"
    tools = in_image(image, "gearadmin --help >/dev/null 2>&1 && gearman -H >/dev/null 2>&1 && echo ok")
    assert tools.strip() == "ok", tools


def test_the_images_gearmand_serves_with_the_compose_options(image: str) -> None:
    """gearmand started with docker-compose.yml's command line (sqlite queue, keepalive...) in the image answers
    gearadmin, as the unprivileged user, writing its queue database."""
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["gearmand"]["command"]
    argv = " ".join(f"'{arg}'" for arg in command)
    script = (
        f"{argv} & pid=$!; "
        "for i in $(seq 50); do gearadmin --server-version 2>/dev/null && break; sleep 0.2; done; "
        "id -un; ls /data/gearmand; kill $pid; wait $pid; echo exit $?"
    )
    out = in_image(image, script)
    lines = out.split()
    assert lines[0] == "2.0.0" and "gearworker" in lines and "queue.sqlite" in lines, out
    assert out.rstrip().endswith("exit 0"), out
