"""Fixtures of the container tests: the image, built once per session, and podman's Docker API."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_until

from .stack import BUILD_TIMEOUT, ROOT, Stack, content_tag, podman_compose, require_podman, run


@pytest.fixture(scope="session")
def image() -> str:
    """The image of docker-compose.yml, built by `podman-compose build` from a base made by scripts/container-base.

    Tagged with a hash of the build context: an unchanged checkout reuses it (podman's layer cache makes the
    build itself a few seconds), and checkouts side by side never overwrite each other's image.
    """
    require_podman()
    start = time.monotonic()
    run([str(ROOT / "scripts" / "container-base")], timeout=600)
    base = time.monotonic() - start
    # gearmand's source into vendor/ where a local copy is known (GEARMAND_TARBALL, or ../shared next to the main
    # checkout): without it the build downloads it from GitHub.
    run([str(ROOT / "scripts" / "gearmand-source")], timeout=60)
    builder = Stack(podman_compose(), f"localhost/gearworker-test:{content_tag()}")
    # --network host: builds reach the apt and PyPI mirrors the way this machine does.  Cold, compiling gearmand
    # takes most of the build (BUILD_TIMEOUT).
    builder.timed("build", "--podman-build-args", "--network host", "build", timeout=BUILD_TIMEOUT)
    print(f"\ncontainer image {builder.image}: base image {base:.1f} s, build {builder.timings['build']:.1f} s")
    return builder.image


@pytest.fixture(scope="module")
def podman_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """podman's Docker-compatible API on a socket of our own (`podman system service`), for Docker Compose."""
    require_podman()
    folder = tmp_path_factory.mktemp(f"podman-api-{secrets.token_hex(3)}")
    socket, log = folder / "podman.sock", folder / "service.log"
    with log.open("wb") as out:
        service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket}"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(socket.exists, 30, what="podman's API socket", interval=0.25, detail=log.read_text)
        yield socket
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
