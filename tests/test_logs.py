"""gearworker.logs: JSON or console lines, batched (a timer or a full batch), never lost at exit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from support import ROOT

from gearworker import logs
from gearworker.logs import output as logbatch


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Each test configures logging for the whole process: leave it as it was found."""
    yield
    logs.reset()


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_of_many_loop_turns_within_the_linger_are_written_whole_in_order_with_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone job logs one line per loop turn: lines still wait LINGER seconds and leave in one write."""
    # A longer linger (and watchdog tick) than the defaults, so that a slow machine's 100 loop
    # turns still fit in one batch; the behaviour is the same at any length.
    monkeypatch.setattr(logbatch, "LINGER", 0.2)
    monkeypatch.setattr(logbatch, "MAX_DELAY", 1.0)
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        out = logs.configure("info", "json", stream=stream)
        log = structlog.get_logger("test")

        async def main() -> tuple[int, int]:
            before = out.writes
            for i in range(100):
                log.info("job.done", n=i, handle=f"H:{i}")
                await asyncio.sleep(0)  # the next loop turn
            during = out.writes
            await asyncio.sleep(logbatch.LINGER * 3)  # the linger timer was due first: it has fired
            return during - before, out.writes - before

        during, after = asyncio.run(main())
    assert (during, after) == (0, 1)
    records = _records(target)
    assert [r["n"] for r in records] == list(range(100))
    assert all(r["event"] == "job.done" and r["level"] == "info" for r in records)
    assert all(str(r["timestamp"]).endswith("Z") and len(str(r["timestamp"])) == 27 for r in records)


def test_a_full_batch_is_written_at_once_without_waiting_for_the_timer(tmp_path: Path) -> None:
    """MAX_BATCH lines in one turn (a busy worker) are written as soon as the batch is full, in one write."""
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        out = logs.configure("info", "json", stream=stream)
        log = structlog.get_logger("test")

        async def main() -> int:
            before = out.writes
            for i in range(logs.MAX_BATCH):
                log.info("job.done", n=i)
            return out.writes - before

        assert asyncio.run(main()) == 1
    assert [r["n"] for r in _records(target)] == list(range(logs.MAX_BATCH))


def test_lines_written_at_once_go_behind_the_lines_still_queued_in_one_write(tmp_path: Path) -> None:
    """write_lines() (a batch gathered elsewhere) never jumps the queue: what waits for the timer goes first."""
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        out = logs.configure("info", "json", stream=stream)
        log = structlog.get_logger("test")

        async def main() -> tuple[int, bool]:
            log.info("queued", n=0)  # waits for the linger timer
            before = out.writes
            out.write_lines([json.dumps({"event": "batch", "n": n}).encode() for n in (1, 2)])
            return out.writes - before, out.busy() and bool(out._lines)

        writes, still_queued = asyncio.run(main())
        assert writes == 1 and not still_queued
    assert [(r["event"], r["n"]) for r in _records(target)] == [("queued", 0), ("batch", 1), ("batch", 2)]


def test_many_turns_keep_every_line_in_order(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        logs.configure("info", "json", stream=stream)
        log = structlog.get_logger("test")

        async def main() -> None:
            for i in range(2000):
                log.info("tick", n=i, blob="x" * (i % 300))
                if i % 7 == 0:
                    await asyncio.sleep(0)

        asyncio.run(main())
        logs.flush()
    assert [r["n"] for r in _records(target)] == list(range(2000))


def test_without_a_running_loop_each_line_is_written_at_once(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        out = logs.configure("info", "json", stream=stream)
        log = structlog.get_logger("test")
        log.info("first")
        assert out.writes == 1
        assert _records(target)[0]["event"] == "first"


def test_a_line_from_another_thread_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        logs.configure("info", "json", stream=stream)
        log = structlog.get_logger("test")

        async def main() -> None:
            log.info("loop.before")
            await asyncio.to_thread(log.info, "thread.line")
            log.info("loop.after")
            await asyncio.sleep(logs.LINGER * 3)  # the batch's timer fires first

        asyncio.run(main())
    events = [r["event"] for r in _records(target)]
    assert sorted(events) == ["loop.after", "loop.before", "thread.line"]
    assert events.index("loop.before") < events.index("loop.after")


def test_filtered_levels_write_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        out = logs.configure("warning", "json", stream=stream)
        log = structlog.get_logger("test")
        log.info("job.done")
        log.debug("noise")
        log.warning("kept", error="x")
        assert out.writes == 1
    assert [(r["event"], r["level"]) for r in _records(target)] == [("kept", "warning")]


def test_console_format_is_readable_text_and_json_is_one_object_per_line(tmp_path: Path) -> None:
    console, plain = tmp_path / "console.txt", tmp_path / "json.txt"
    with open(console, "w") as stream:
        logs.configure("info", "console", stream=stream)
        structlog.get_logger("test").info("server.started", pid=42)
    text = console.read_text()
    assert "server.started" in text and "pid" in text and "42" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
    logs.reset()
    with open(plain, "w") as stream:
        logs.configure("info", "auto", stream=stream)  # not a terminal: JSON
        structlog.get_logger("test").info("server.started", pid=42)
    assert _records(plain) == [
        {"pid": 42, "event": "server.started", "level": "info", "timestamp": _records(plain)[0]["timestamp"]}
    ]


def test_auto_format_on_a_terminal_is_console() -> None:
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=True) as tty:
            logs.configure("info", "auto", stream=tty)
            structlog.get_logger("test").info("server.started", pid=42)
            logs.flush()
            data = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
    assert "server.started" in data and not data.lstrip().startswith("{")


def test_log_file_gets_json_while_the_terminal_gets_console(tmp_path: Path) -> None:
    console, file = tmp_path / "console.txt", tmp_path / "worker.log"
    with open(console, "w") as stream:
        logs.configure("info", "console", file=str(file), stream=stream)
        log = structlog.get_logger("test")

        async def main() -> None:
            for i in range(10):
                log.info("job.done", n=i)
            await asyncio.sleep(logs.LINGER * 3)  # the batch's timer fires first

        asyncio.run(main())
    assert [r["n"] for r in _records(file)] == list(range(10))
    assert console.read_text().count("job.done") == 10


def test_exceptions_are_rendered_into_the_json_line(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        logs.configure("info", "json", stream=stream)
        try:
            raise ValueError("bad value")
        except ValueError:
            structlog.get_logger("test").exception("job.failed", handle="H:1")
    (record,) = _records(target)
    assert record["level"] == "error" and "ValueError: bad value" in str(record["exception"])


def test_values_json_cannot_encode_are_written_as_repr(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        logs.configure("info", "json", stream=stream)
        structlog.get_logger("test").info("odd", value={1, 2}, counts={1: "a"})
    (record,) = _records(target)
    assert record["value"] == "{1, 2}" and record["counts"] == {"1": "a"}


def test_values_bound_with_bind_contextvars_are_in_the_line_and_cleared_ones_are_not(tmp_path: Path) -> None:
    """The fast contextvars merge sees what structlog's bind_contextvars set, in this context only."""
    target = tmp_path / "out.log"
    with open(target, "w") as stream:
        logs.configure("info", "json", stream=stream)
        log = structlog.get_logger("test")

        async def job(n: int) -> None:
            structlog.contextvars.bind_contextvars(request_id=f"r{n}")
            log.info("job.step", n=n)

        async def main() -> None:
            await asyncio.gather(job(1), job(2))  # each task runs in its own copy of the context
            log.info("outside")
            structlog.contextvars.bind_contextvars(tenant="t")
            structlog.contextvars.unbind_contextvars("tenant")
            log.info("unbound", event_key="kept", request_id="explicit")

        asyncio.run(main())
        logs.flush()
    records = {r["event"]: r for r in _records(target)}
    steps = [r for r in _records(target) if r["event"] == "job.step"]
    assert sorted((r["n"], r["request_id"]) for r in steps) == [(1, "r1"), (2, "r2")]
    assert "request_id" not in records["outside"] and "tenant" not in records["outside"]
    assert records["unbound"]["request_id"] == "explicit" and "tenant" not in records["unbound"]


_CRASHING_SCRIPT = textwrap.dedent("""
    import asyncio, structlog
    from gearworker import logs
    logs.configure("info", "json")
    log = structlog.get_logger("handler")

    class HandlerCrash(KeyboardInterrupt):
        \"\"\"Escapes the task and the loop at once (asyncio re-raises these): the end-of-turn write never runs.\"\"\"

    async def handler() -> None:
        for i in range(50):
            log.info("job.step", n=i)
        raise HandlerCrash("handler blew up")

    asyncio.new_event_loop().run_until_complete(handler())
""")


def test_lines_logged_before_an_unhandled_exception_are_written_before_its_traceback() -> None:
    out = subprocess.run([sys.executable, "-c", _CRASHING_SCRIPT], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0
    lines = out.stderr.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["n"] for r in records] == list(range(50))
    assert lines.index(next(line for line in lines if line.startswith("Traceback"))) == 50
    assert "HandlerCrash: handler blew up" in out.stderr


_EXITING_SCRIPT = textwrap.dedent("""
    import asyncio, structlog
    from gearworker import logs
    logs.configure("info", "json")
    log = structlog.get_logger("handler")

    def job() -> None:
        for i in range(300):
            log.info("job.done", n=i)

    loop = asyncio.new_event_loop()
    loop.call_soon(job)
    loop.call_soon(loop.stop)  # the loop stops before the end-of-turn write it was asked for
    loop.run_forever()
""")


def test_lines_still_queued_when_the_loop_stops_are_written_at_exit() -> None:
    out = subprocess.run([sys.executable, "-c", _EXITING_SCRIPT], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["n"] for line in out.stderr.splitlines()] == list(range(300))


_BLOCKING_SCRIPT = textwrap.dedent("""
    import asyncio, time, structlog
    from gearworker import logs
    logs.configure("info", "json")
    log = structlog.get_logger("handler")

    async def handler() -> None:
        log.info("job.started")
        time.sleep(120)  # a handler that blocks the loop: the line must not wait for the next turn

    asyncio.run(handler())
""")


def test_a_line_reaches_the_output_while_a_handler_blocks_the_loop() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKING_SCRIPT], stderr=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stderr is not None
        got: list[bytes] = []
        reader = threading.Thread(
            target=lambda: got.append(proc.stderr.readline()) if proc.stderr else None, daemon=True
        )
        reader.start()
        reader.join(60)
        assert got and json.loads(got[0])["event"] == "job.started"
        assert proc.poll() is None  # still blocked: the watchdog wrote it, not the exit
    finally:
        proc.kill()
        proc.wait()


_IDLE_SCRIPT = textwrap.dedent("""
    import asyncio, sys, threading, time, structlog
    from gearworker import logs
    logs.configure("info", "json")
    log = structlog.get_logger("worker")

    def wakeups() -> int:
        thread = next(t for t in threading.enumerate() if t.name == "gearworker-log-flush")
        with open(f"/proc/self/task/{thread.native_id}/status") as status:
            return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)

    async def main() -> None:
        log.info("job.done", n=1)
        await asyncio.sleep(0.5)  # the batch is written, the watchdog finds nothing open
        before = wakeups()
        await asyncio.sleep(1.0)  # idle
        print("idle wakeups", wakeups() - before, file=sys.stdout, flush=True)
        log.info("job.started", n=2)
        time.sleep(120)  # a handler that blocks the loop: the parked watchdog must still write the line

    asyncio.run(main())
""")


def test_an_idle_loop_leaves_the_log_watchdog_asleep_and_a_later_blocked_line_is_still_written() -> None:
    """No wake-ups of the watchdog thread while nothing is queued (it had 20 a second); the next
    batch wakes it, so a line logged just before a handler blocks the loop still gets out."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _IDLE_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().decode().split() == ["idle", "wakeups", "0"]
        got: list[bytes] = []

        def read_two() -> None:
            assert proc.stderr is not None
            got.extend([proc.stderr.readline(), proc.stderr.readline()])

        reader = threading.Thread(target=read_two, daemon=True)
        reader.start()
        reader.join(60)
        assert [json.loads(line)["n"] for line in got] == [1, 2]
        assert proc.poll() is None  # still blocked: the watchdog wrote it, not the exit
    finally:
        proc.kill()
        proc.wait()
