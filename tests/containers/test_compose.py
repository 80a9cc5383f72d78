"""docker-compose.yml run for real with podman-compose 1.6 on podman 4.3: serve, restart, scale, stop.

One stack for the module (starting it is the slow part), under a random project name with
free loopback ports.  The image comes from the session's ``image`` fixture (`podman-compose
build` on a base that scripts/container-base pulls, or makes from this machine's apt mirror
when no registry is reachable).  Missing podman or podman-compose fails these tests; it never
skips them (scripts/container-setup installs what they need).  Select them with
``pytest -m containers``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator

import pytest

from gearworker import Client

from .checks import (
    SERVICES,
    check_two_workers_registered,
    cut_off_from_gearmand,
    down_and_collect_exits,
    fetch_copies,
    metric,
    reverse_through_gearmand,
    upload_photo,
    wait_for_web,
    wait_for_workers,
)
from .stack import MODULE_TIMEOUT, Stack, podman_compose, run

# Cold, the base image and the image (gearmand compiled) are built in the first set-up (MODULE_TIMEOUT).
pytestmark = [pytest.mark.containers, pytest.mark.timeout(MODULE_TIMEOUT)]


@pytest.fixture(scope="module")
def stack(image: str) -> Iterator[Stack]:
    """docker-compose.yml up (`podman-compose up -d`); removed with its volumes afterwards."""
    s = Stack(podman_compose(), image)
    try:
        start = time.monotonic()
        s.timed("up", "up", "-d", timeout=180)
        wait_for_workers(s)
        s.timings["up to workers registered"] = time.monotonic() - start
        wait_for_web(s)
        yield s
    finally:
        print(
            f"\npodman-compose stack {s.project} timings (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in s.timings.items())
        )
        s.remove()


async def test_a_job_runs_through_the_published_gearmand_port(stack: Stack) -> None:
    """A client on the host submits `reverse` to gearmand's published port; a worker container answers."""
    start = time.monotonic()
    await reverse_through_gearmand(stack, b"compose stack")
    stack.timings["first job"] = time.monotonic() - start


def test_deploy_replicas_gives_two_workers_both_registered_with_gearmand(stack: Stack) -> None:
    """deploy.replicas: 2 (with mode: replicated, which podman-compose 1.6 needs) gives two worker containers,
    each registered with gearmand under its own container hostname."""
    check_two_workers_registered(stack)


def test_every_healthcheck_command_passes(stack: Stack) -> None:
    """The healthcheck of each service runs and succeeds (`podman healthcheck run`: podman 4.3 without systemd
    has no timers to run them by itself)."""
    for service in SERVICES:
        for name in stack.containers(service):
            result = run(["podman", "healthcheck", "run", name], timeout=60, check=False)
            assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}\n{stack.logs(service)}"


def test_a_photo_goes_through_the_web_app_and_a_worker(stack: Stack) -> None:
    """A real JPEG posted to the web app's upload API comes back as resized JPEG copies, none larger than it."""
    stack.photo = upload_photo(stack)


def test_the_photo_is_still_there_after_the_web_container_restarts(stack: Stack) -> None:
    """Photos live on the `photos` volume: after `podman-compose restart web` the same copies are served."""
    assert stack.photo is not None, "no photo to look for: the upload test failed"
    photo_id, copies = stack.photo
    start = time.monotonic()
    stack.compose("restart", "web", timeout=120)
    wait_for_web(stack)
    stack.timings["web restart"] = time.monotonic() - start
    after = fetch_copies(stack, photo_id)
    assert digests(after) == digests(copies), (
        f"the web app lost photo {photo_id} when its container restarted ({len(after)} of {len(copies)} copies "
        "served): it must keep photos under its storage root on the photos volume (docker-compose.yml, "
        f"web environment)\n{stack.logs('web')}"
    )


def digests(copies: list[bytes]) -> list[str]:
    return [hashlib.sha256(c).hexdigest()[:16] for c in copies]


def test_the_stacks_gearmand_is_the_images_gearmand_2_0_0(stack: Stack) -> None:
    """gearmand's admin `version` answer: the gearmand 2.0.0 built in the image, with docker-compose.yml's options."""
    result = run(
        ["gearadmin", "--host", "127.0.0.1", "--port", str(stack.gearmand_port), "--server-version"], timeout=30
    )
    assert result.stdout.strip() == "2.0.0", result.stdout


def gearadmin_status(stack: Stack) -> dict[str, list[int]]:
    """`gearadmin --status`: {function: [queued, running, workers]}."""
    result = run(["gearadmin", "--host", "127.0.0.1", "--port", str(stack.gearmand_port), "--status"], timeout=30)
    rows = (line.split("\t") for line in result.stdout.splitlines() if "\t" in line)
    return {name: [int(n) for n in numbers] for name, *numbers in rows}


async def test_a_background_job_outlives_a_gearmand_restart_in_the_sqlite_queue(stack: Stack) -> None:
    """A background job for a function no worker has stays queued across `restart gearmand`: gearmand's sqlite
    queue on the gearmand-queue volume keeps it."""
    function = "composetest_nobody_does_this"
    async with Client([f"127.0.0.1:{stack.gearmand_port}"]) as client:
        await client.submit_background(function, b"kept")
    assert gearadmin_status(stack).get(function, [0])[0] == 1
    stack.compose("restart", "gearmand", timeout=120)
    wait_for_workers(stack, "both workers registered again after a gearmand restart")
    assert gearadmin_status(stack).get(function, [0])[0] == 1, stack.logs("gearmand")


async def test_a_job_whose_worker_vanishes_without_a_fin_runs_again_on_the_other_worker(stack: Stack) -> None:
    """gearmand runs with --keepalive (docker-compose.yml): when the worker running a job is cut off from it (every
    packet dropped, so no FIN or RST ever arrives), gearmand's probes find the connection dead, and the job goes to
    the other worker; the waiting client gets its result."""
    seconds = 8
    workers = stack.containers("worker")
    async with Client([f"127.0.0.1:{stack.gearmand_port}"]) as client:
        job = asyncio.create_task(client.submit("slow", str(seconds).encode(), timeout=90))
        running = None
        deadline = time.monotonic() + 30
        while running is None:
            assert time.monotonic() < deadline and not job.done(), "no worker started the slow job"
            for name in workers:
                if await asyncio.to_thread(metric, name, "gearworker_jobs_in_flight", function="slow"):
                    running = name
            await asyncio.sleep(0.25)
        (other,) = set(workers) - {running}
        with cut_off_from_gearmand(running):
            cut = time.monotonic()
            result = await job
            stack.timings["slow job's result after its worker was cut off"] = time.monotonic() - cut
            assert result == f"slept {seconds}s".encode()
            done = await asyncio.to_thread(metric, other, "gearworker_jobs_total", function="slow", outcome="complete")
            assert done == 1, f"the result did not come from {other}"
    wait_for_workers(stack, "both workers registered again once the cut one is reachable")


async def test_workers_come_back_after_gearmand_restarts(stack: Stack) -> None:
    """Start order does not matter (podman-compose ignores depends_on conditions on podman 4.3): after gearmand
    restarts, both workers reconnect with backoff and jobs run again."""
    stack.compose("restart", "gearmand", timeout=120)
    wait_for_workers(stack, "both workers registered again after a gearmand restart")
    await reverse_through_gearmand(stack, b"again")


def test_down_stops_every_container_with_exit_0_within_its_grace_period(stack: Stack) -> None:
    """`podman-compose down`: each container gets SIGTERM and exits 0 before its stop_grace_period."""
    down_and_collect_exits(stack)
