"""What both Compose implementations must do with docker-compose.yml, as reusable checks."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image
from support import photo_jpeg, wait_until

from gearworker import Client

from .stack import Stack, run

SESSION = "composetest01"
WORKERS = 2  # deploy.replicas in docker-compose.yml
SERVICES = ("gearmand", "worker", "web")


def registered_workers(s: Stack) -> set[str]:
    """Client ids of the worker connections that can do ``reverse`` (`gearadmin --workers`)."""
    result = run(
        ["gearadmin", "--host", "127.0.0.1", "--port", str(s.gearmand_port), "--workers"], timeout=30, check=False
    )
    ids = set()
    for line in result.stdout.splitlines():
        head, _, functions = line.partition(" : ")
        if "reverse" in functions.split():
            ids.add(head.split()[-1])
    return ids


def wait_for_workers(s: Stack, what: str = "two workers registered with gearmand") -> None:
    wait_until(
        lambda: len(registered_workers(s)) == WORKERS, 90, what=what, interval=0.25, detail=lambda: s.logs("worker")
    )


def web_url(s: Stack, path: str) -> str:
    return f"http://127.0.0.1:{s.web_port}{path}"


def wait_for_web(s: Stack) -> None:
    def answers() -> bool:
        try:
            return httpx.get(web_url(s, "/api/config"), timeout=3).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(
        answers, 60, what="the web app answering on its published port", interval=0.25, detail=lambda: s.logs("web")
    )


@contextlib.contextmanager
def web_client(s: Stack) -> Iterator[httpx.Client]:
    """A client that talks to the web app as its own page does: same Origin, and the CSRF cookie the page
    gets echoed in a header (where the web app sets one)."""
    with httpx.Client(base_url=web_url(s, ""), timeout=30, headers={"Origin": web_url(s, "")}) as client:
        client.get("/")
        token = client.cookies.get("gw_csrf")
        if token:
            client.headers["X-CSRF-Token"] = token
        yield client


def fetch_copies(s: Stack, photo_id: str) -> list[bytes]:
    """Every resized copy of a photo (``/photos/ID/0``, ``/1``... until a 404)."""
    copies: list[bytes] = []
    with web_client(s) as client:
        while True:
            r = client.get(f"/photos/{photo_id}/{len(copies)}")
            if r.status_code == 404:
                return copies
            assert r.status_code == 200, r.text
            copies.append(r.content)


async def reverse_through_gearmand(s: Stack, text: bytes) -> None:
    """A client on the host submits `reverse` to gearmand's published port; a worker container answers."""
    async with Client([f"127.0.0.1:{s.gearmand_port}"]) as client:
        assert await client.submit("reverse", text, timeout=30) == text[::-1]


def check_two_workers_registered(s: Stack) -> None:
    """Two worker containers, each registered with gearmand under its own container hostname."""
    workers = s.containers("worker")
    assert len(workers) == WORKERS, workers
    hostnames = {s.inspect(name, "{{.Config.Hostname}}") for name in workers}
    ids = registered_workers(s)
    # The worker's client id starts with its hostname (the container id).
    assert {next((h for h in hostnames if i.startswith(h)), i) for i in ids} == hostnames, (ids, hostnames)


def upload_photo(s: Stack) -> tuple[str, list[bytes]]:
    """Post a real JPEG to the web app's upload API; return its id and resized copies (JPEG, never enlarged)."""
    original = photo_jpeg(1600, 1200)
    start = time.monotonic()
    with web_client(s) as client:
        r = client.post(f"/api/photos?session={SESSION}", files={"photo": ("compose.jpg", original, "image/jpeg")})
    assert r.status_code == 202, r.text
    photo_id = r.json()["id"]
    wait_until(
        lambda: bool(fetch_copies(s, photo_id)),
        90,
        what="the resized copies of the uploaded photo",
        interval=0.25,
        detail=lambda: s.logs("web") + s.logs("worker"),
    )
    s.timings["photo resized"] = time.monotonic() - start
    copies = fetch_copies(s, photo_id)
    sizes = []
    for data in copies:
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG"
        sizes.append(max(image.size))
    # Never enlarged; the small copies really are smaller.
    assert len(copies) >= 2 and max(sizes) <= 1600 and min(sizes) < 1600, sizes
    return photo_id, copies


def down_and_collect_exits(s: Stack) -> dict[str, tuple[str, int, float]]:
    """`down` the stack; return {container: (service, exit code, seconds from `down` to its exit)}.

    Exit codes come from podman's `died` events: `down` removes the containers.  Checks that each exited 0
    before its stop_grace_period (else SIGKILL, exit 137) and that nothing is left.
    """
    services = {name: service for service in SERVICES for name in s.containers(service)}
    assert len(services) == len(SERVICES) - 1 + WORKERS, services
    since = time.time()
    s.timed("down", "down", timeout=180)
    events = run(
        [
            "podman",
            "events",
            "--stream=false",
            "--since",
            f"{since:.3f}",
            "--filter",
            "event=died",
            "--filter",
            f"label={s.tool.label}.project={s.project}",
            "--format",
            "{{.Name}} {{.ContainerExitCode}} {{.Time.UnixNano}}",
        ],
        timeout=60,
    ).stdout
    died = {}
    for line in events.splitlines():
        name, code, when = line.split()
        died[name] = (services.get(name, "?"), int(code), int(when) / 1e9 - since)
    assert set(died) == set(services), (died, services)
    exits = {name: code for name, (_, code, _) in died.items()}
    assert exits == dict.fromkeys(services, 0), exits
    for name, (service, _, seconds) in died.items():
        grace = s.grace_period(service)
        assert seconds < grace, f"{name} took {seconds:.1f} s to stop (grace period {grace:.0f} s)"
    assert s.containers() == []
    return died


@contextlib.contextmanager
def healthchecks_run(s: Stack, every: float = 1.0) -> Iterator[None]:
    """Run each container's healthcheck every second while inside, as Docker's engine does by itself.

    podman 4.3 schedules healthchecks with systemd timers, and there is no systemd here: without this,
    `depends_on: condition: service_healthy` would wait forever under Docker Compose.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            # A container going away mid-loop is fine: the next round sees the new ones.
            with contextlib.suppress(subprocess.SubprocessError, pytest.fail.Exception):
                for name in s.containers():
                    run(["podman", "healthcheck", "run", name], timeout=30, check=False)
            stop.wait(every)

    thread = threading.Thread(target=loop, name="healthchecks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


_METRICS = (
    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=5).read().decode())"
)


def metric(container: str, name: str, **labels: str) -> float:
    """A worker container's metric (0 when absent), read from its /metrics inside the container."""
    text = run(["podman", "exec", container, "python", "-c", _METRICS], timeout=30).stdout
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return 0.0


@contextlib.contextmanager
def cut_off_from_gearmand(container: str) -> Iterator[None]:
    """Drop every packet between a container and gearmand's port (iptables in the container's network namespace,
    entered from the host): to gearmand, the container's host has vanished, and no FIN or RST ever arrives.
    Healed when the block ends."""
    for tool in ("nsenter", "iptables"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/bootstrap test installs it")
    pid = run(["podman", "inspect", "--format", "{{.State.Pid}}", container], timeout=30).stdout.strip()
    rules = [("INPUT", "--sport"), ("OUTPUT", "--dport")]
    for chain, port in rules:
        run(
            ["nsenter", "--target", pid, "--net", "iptables", "-I", chain, "-p", "tcp", port, "4730", "-j", "DROP"],
            timeout=30,
        )
    try:
        yield
    finally:
        for chain, port in rules:
            run(
                ["nsenter", "--target", pid, "--net", "iptables", "-D", chain, "-p", "tcp", port, "4730", "-j", "DROP"],
                timeout=30,
                check=False,
            )
