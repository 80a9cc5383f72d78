"""The web app as its own process: memory under a huge POST, and what ``gearworker web`` refuses to start with.

The memory test runs the real server (uvicorn) and pushes 300 MB bodies at
it, declared and chunked, to both body-taking routes: each is answered 413
and the process's resident memory stays near idle (the body is never
buffered: unread bytes stay in the kernel's socket buffers).
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from gearmand import free_port, wait_for_port
from support import ROOT

from gearworker.app.cli import main

BODY = 300 * 1024 * 1024
CHUNK = b"\xff" * (1024 * 1024)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[int, psutil.Process]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearworker",
            "web",
            "--port",
            str(port),
            "--server",
            f"127.0.0.1:{free_port()}",
            "--storage-root",
            str(tmp_path / "photos"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        yield port, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)


class PeakRss:
    """Sample a process's resident memory every 5 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc, self.peak, self._stop = proc, proc.memory_info().rss, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def push(port: int, path: str, content_type: str, *, chunked: bool) -> tuple[bytes, int]:
    """POST a 300 MB body until the app answers; returns (status line, bytes sent)."""
    framing = "transfer-encoding: chunked" if chunked else f"content-length: {BODY}"
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: {content_type}\r\n{framing}\r\n"
        f"cookie: gw_csrf=tok\r\nx-csrf-token: tok\r\n\r\n"
    ).encode()
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        s.sendall(head)
        if "multipart" in content_type:  # a real file part, so the multipart parser keeps reading it
            part = b'--x\r\ncontent-disposition: form-data; name="photo"; filename="big.jpg"\r\n\r\n\xff\xd8\xff'
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        while sent < BODY:
            if select.select([s], [], [], 0)[0]:
                break  # the answer came: the app stopped reading
            piece = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK
            try:
                s.sendall(piece)
            except (TimeoutError, OSError):
                break  # the app stopped reading (buffers full) or closed the connection
            sent += len(CHUNK)
        answer = s.recv(4096)
    return answer.split(b"\r\n", 1)[0], sent


@pytest.mark.parametrize(
    ("path", "content_type", "chunked"),
    [
        ("/api/jobs?session=abcdefgh1234", "application/json", False),
        ("/api/jobs?session=abcdefgh1234", "application/json", True),
        ("/api/photos?session=abcdefgh1234", "multipart/form-data; boundary=x", False),
        ("/api/photos?session=abcdefgh1234", "multipart/form-data; boundary=x", True),
    ],
)
def test_a_300_mb_post_is_refused_with_413_and_memory_stays_near_idle(
    web: tuple[int, psutil.Process], path: str, content_type: str, chunked: bool
) -> None:
    port, proc = web
    idle = proc.memory_info().rss
    with PeakRss(proc) as rss:
        status, sent = push(port, path, content_type, chunked=chunked)
    print(
        f"{path.split('?')[0]} chunked={chunked}: idle {idle / 2**20:.1f} MiB, peak {rss.peak / 2**20:.1f} MiB, "
        f"sent {sent / 2**20:.0f} MiB before the answer"
    )
    # The code, not the reason phrase: Python 3.13 renamed 413 "Content Too Large" (RFC 9110).
    assert status.split(b" ", 2)[:2] == [b"HTTP/1.1", b"413"], status
    assert rss.peak - idle < 25 * 2**20  # near idle: the 300 MB never sat in the app's memory


def test_gearworker_web_refuses_a_non_loopback_address_without_a_login(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["web", "--host", "0.0.0.0", "--server", "127.0.0.1:4730"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gearworker web: refusing to listen on 0.0.0.0 without a login")


def test_a_bad_password_hash_setting_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEARWORKER_WEB_PASSWORD_HASH", "md5$abc")
    assert main(["web", "--server", "127.0.0.1:4730"]) == 2
    assert "web_password_hash" in capsys.readouterr().err


def test_hash_password_prints_a_hash_the_app_accepts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gearworker", "web", "--hash-password"],
        input="correct horse\n",
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    from gearworker.web.login import verify_password

    assert out.startswith("scrypt$") and verify_password("correct horse", out)
