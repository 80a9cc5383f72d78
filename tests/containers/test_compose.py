"""docker-compose.yml run for real with podman-compose: build, serve, restart, scale, stop.

One stack for the module (building and starting it is the slow part), under a random
project name with free loopback ports.  The base image comes from scripts/container-base
(pulled, or made from this machine's apt mirror when no registry is reachable).  Missing
podman or podman-compose fails these tests; it never skips them (scripts/container-setup
installs what they need).  Select them with ``pytest -m containers``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import pytest
from gearmand import free_port
from images import samples
from PIL import Image

from gearworker import Client

from .stack import ROOT, Stack, podman_compose_path, require_podman, run, wait_until

# Cold: the base image (~75 s) and the image (~35 s) are built in the first test's set-up.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

SESSION = "composetest01"
WORKERS = 2  # deploy.replicas in docker-compose.yml
SERVICES = ("gearmand", "worker", "web")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """docker-compose.yml built and up (`podman-compose build`, `up -d`); removed with its volumes afterwards."""
    require_podman()
    podman_compose_path()
    start = time.monotonic()
    run([str(ROOT / "scripts" / "container-base")], timeout=600)
    s = Stack(gearmand_port=free_port(), web_port=free_port())
    s.timings["base image"] = time.monotonic() - start
    try:
        # --network host: builds reach the apt and PyPI mirrors the way this machine does.
        s.timed("build", "--podman-build-args", "--network host", "build", timeout=600)
        s.timed("up", "up", "-d", timeout=180)
        wait_until("two workers registered with gearmand", lambda: len(registered_workers(s)) == WORKERS,
                   timeout=90, detail=lambda: s.logs("worker"))
        s.timings["up to workers registered"] = time.monotonic() - start - s.timings["base image"] - s.timings["build"]
        wait_for_web(s)
        yield s
    finally:
        print(f"compose stack {s.project} timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s.timings.items()))
        s.remove()


def registered_workers(s: Stack) -> set[str]:
    """Client ids of the worker connections that can do ``reverse`` (`gearadmin --workers`)."""
    result = run(["gearadmin", "--host", "127.0.0.1", "--port", str(s.gearmand_port), "--workers"],
                 timeout=30, check=False)
    ids = set()
    for line in result.stdout.splitlines():
        head, _, functions = line.partition(" : ")
        if "reverse" in functions.split():
            ids.add(head.split()[-1])
    return ids


def web_url(s: Stack, path: str) -> str:
    return f"http://127.0.0.1:{s.web_port}{path}"


def wait_for_web(s: Stack) -> None:
    def answers() -> bool:
        try:
            return httpx.get(web_url(s, "/api/config"), timeout=3).status_code == 200
        except httpx.TransportError:
            return False

    wait_until("the web app answering on its published port", answers, timeout=60, detail=lambda: s.logs("web"))


def web_client(s: Stack) -> httpx.Client:
    # A same-origin request, as the web app's own page sends it.
    return httpx.Client(base_url=web_url(s, ""), timeout=30, headers={"Origin": web_url(s, "")})


def fetch_copies(s: Stack, photo_id: str) -> list[bytes]:
    """Every resized copy of a photo (``/photos/ID/0``, ``/1``... until a 404)."""
    copies = []
    with web_client(s) as client:
        while True:
            r = client.get(f"/photos/{photo_id}/{len(copies)}")
            if r.status_code == 404:
                return copies
            assert r.status_code == 200, r.text
            copies.append(r.content)


# -- the tests, in the order a user meets them ------------------------------------------


async def test_a_job_runs_through_the_published_gearmand_port(stack: Stack) -> None:
    """A client on the host submits `reverse` to gearmand's published port; a worker container answers."""
    start = time.monotonic()
    async with Client([f"127.0.0.1:{stack.gearmand_port}"]) as client:
        assert await client.submit("reverse", b"compose stack", timeout=30) == b"kcats esopmoc"
    stack.timings["first job"] = time.monotonic() - start


def test_workers_are_two_containers_both_registered_with_gearmand(stack: Stack) -> None:
    """deploy.replicas: 2 (with mode: replicated, which podman-compose needs) gives two worker containers, each
    registered with gearmand under its own container hostname."""
    workers = stack.containers("worker")
    assert len(workers) == WORKERS, workers
    hostnames = {stack.inspect(name, "{{.Config.Hostname}}") for name in workers}
    ids = registered_workers(stack)
    # The worker's client id starts with its hostname (the container id).
    assert {next((h for h in hostnames if i.startswith(h)), i) for i in ids} == hostnames, (ids, hostnames)


def test_every_healthcheck_command_passes(stack: Stack) -> None:
    """The healthcheck of each service runs and succeeds (`podman healthcheck run`: podman 4.3 without systemd
    has no timers to run them by itself)."""
    for service in SERVICES:
        for name in stack.containers(service):
            result = run(["podman", "healthcheck", "run", name], timeout=60, check=False)
            assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}\n{stack.logs(service)}"


def test_a_photo_goes_through_the_web_app_and_a_worker(stack: Stack) -> None:
    """A real JPEG posted to the web app's upload API comes back as resized JPEG copies, none larger than it."""
    original = samples.jpeg(samples.photo(1600, 1200))
    start = time.monotonic()
    with web_client(stack) as client:
        r = client.post(f"/api/photos?session={SESSION}", files={"photo": ("compose.jpg", original, "image/jpeg")})
    assert r.status_code == 202, r.text
    photo_id = r.json()["id"]
    wait_until("the resized copies of the uploaded photo", lambda: bool(fetch_copies(stack, photo_id)),
               timeout=90, detail=lambda: stack.logs("web") + stack.logs("worker"))
    stack.timings["photo resized"] = time.monotonic() - start
    copies = fetch_copies(stack, photo_id)
    sizes = []
    for data in copies:
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG"
        sizes.append(max(image.size))
    # Never enlarged; the small copies really are smaller.
    assert len(copies) >= 2 and max(sizes) <= 1600 and min(sizes) < 1600, sizes
    stack.photo = (photo_id, copies)


def test_the_photo_is_still_there_after_the_web_container_restarts(stack: Stack) -> None:
    """Photos live on the `photos` volume: after `podman-compose restart web` the same copies are served."""
    assert stack.photo is not None, "no photo to look for: the upload test failed"
    photo_id, copies = stack.photo
    start = time.monotonic()
    stack.compose("restart", "web", timeout=120)
    wait_for_web(stack)
    stack.timings["web restart"] = time.monotonic() - start
    after = fetch_copies(stack, photo_id)
    assert after == copies, (
        f"the web app lost photo {photo_id} when its container restarted ({len(after)} of {len(copies)} copies "
        "served): it must keep photos under its storage root on the photos volume (docker-compose.yml, "
        f"web environment)\n{stack.logs('web')}")


async def test_workers_come_back_after_gearmand_restarts(stack: Stack) -> None:
    """Start order does not matter (podman-compose ignores depends_on conditions): after gearmand restarts, both
    workers reconnect with backoff and jobs run again."""
    stack.compose("restart", "gearmand", timeout=120)
    wait_until("both workers registered again after a gearmand restart",
               lambda: len(registered_workers(stack)) == WORKERS, timeout=60, detail=lambda: stack.logs("worker"))
    async with Client([f"127.0.0.1:{stack.gearmand_port}"]) as client:
        assert await client.submit("reverse", b"again", timeout=30) == b"niaga"


def test_down_stops_every_container_with_exit_0_within_its_grace_period(stack: Stack) -> None:
    """`podman-compose down`: each container gets SIGTERM and exits 0 before its stop_grace_period (else SIGKILL,
    exit 137).  Exit codes come from podman's `died` events: `down` removes the containers."""
    services = {name: service for service in SERVICES for name in stack.containers(service)}
    assert len(services) == len(SERVICES) - 1 + WORKERS, services
    since = time.time()
    stack.timed("down", "down", timeout=180)
    events = run(["podman", "events", "--stream=false", "--since", f"{since:.3f}", "--filter", "event=died",
                  "--filter", f"label=io.podman.compose.project={stack.project}",
                  "--format", "{{.Name}} {{.ContainerExitCode}} {{.Time.UnixNano}}"], timeout=60).stdout
    died = {}
    for line in events.splitlines():
        name, code, when = line.split()
        died[name] = (int(code), int(when) / 1e9 - since)
    assert set(died) == set(services), (died, services)
    exits = {name: code for name, (code, _) in died.items()}
    assert exits == dict.fromkeys(services, 0), exits
    for name, (_, seconds) in died.items():
        grace = stack.grace_period(services[name])
        assert seconds < grace, f"{name} took {seconds:.1f} s to stop (grace period {grace:.0f} s)"
    assert stack.containers() == []
