"""A reload imports the handler modules in a thread: the event loop keeps running meanwhile.

The scenario with a real worker process (2,000 jobs during a 3 s import) is in
tests/reliability/test_failure_path.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gearworker.app.reload import Reloader, import_off_loop
from gearworker.config import Settings
from gearworker.errors import ConfigError, HandlerError
from gearworker.worker.pool import Pool
from gearworker.worker.registry import MODULE_PREFIX, Registry, discover


@pytest.fixture(autouse=True)
def _own_handler_modules() -> Iterator[None]:
    """Handler modules imported here are this file's: other tests' folders must not find them."""
    before = {k: v for k, v in sys.modules.items() if k.startswith(MODULE_PREFIX)}
    for name in before:
        del sys.modules[name]
    yield
    for name in [k for k in sys.modules if k.startswith(MODULE_PREFIX)]:
        del sys.modules[name]
    sys.modules.update(before)


SLOW = """
import time
from gearworker import handler

time.sleep(1.0)


@handler("slow_{v}")
async def slow(job):
    return b"{v}"
"""


async def test_the_loop_keeps_running_while_a_slow_module_is_imported(tmp_path: Path) -> None:
    """A module that takes 1 s to import: meanwhile the loop runs a 10 ms timer ~100 times, not once."""
    (tmp_path / "slow.py").write_text(SLOW.format(v="v1"))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    registry = await import_off_loop(lambda: discover(tmp_path))
    took = time.monotonic() - started
    ticker.cancel()
    assert list(registry.functions) == ["slow_v1"]
    assert took >= 1.0 and ticks >= 0.5 * took / 0.01, f"{ticks} ticks in {took:.2f}s"


async def test_a_failed_import_restores_the_old_modules_and_raises_on_the_loop(tmp_path: Path) -> None:
    """A syntax error in the new code: HandlerError (a ConfigError) naming the file; sys.modules as before."""
    (tmp_path / "slow.py").write_text(SLOW.format(v="v1").replace("time.sleep(1.0)", ""))
    await import_off_loop(lambda: discover(tmp_path))
    before = {k: v for k, v in sys.modules.items() if k.startswith(MODULE_PREFIX)}
    (tmp_path / "slow.py").write_text("def broken(:\n")
    with pytest.raises(HandlerError, match=r"slow\.py"):
        await import_off_loop(lambda: discover(tmp_path))
    assert {k: v for k, v in sys.modules.items() if k.startswith(MODULE_PREFIX)} == before


async def test_system_exit_in_a_handler_module_is_a_failed_reload_not_a_dead_worker() -> None:
    def load() -> Registry:
        raise SystemExit(3)

    with pytest.raises(ConfigError, match="SystemExit"):
        await import_off_loop(load)


class _StartFails:
    """A server whose new worker cannot be started (say, a handler module's middleware cannot be built)."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings, self.registry = settings, registry
        self.pool: Pool | None = None
        self.worker: Any = object()  # the worker serving now: a reload must leave it in place
        self.started: list[Registry] = []

    async def start_pool(self, registry: Registry) -> Pool | None:
        return None

    def start_worker(self, registry: Registry, pool: Pool | None) -> Any:
        self.started.append(registry)
        raise RuntimeError("middleware could not be built")

    async def restart_scheduler(self) -> None:
        raise AssertionError("nothing was swapped: the schedules stay as they are")

    def notify_reloading(self) -> None:
        pass

    def notify_ready(self) -> None:
        pass


async def test_a_new_worker_that_fails_to_start_swaps_nothing_and_later_reloads_still_run(tmp_path: Path) -> None:
    """The registry, pool and worker stay the old ones, the failure is logged as server.reload_failed, and the
    reload task keeps answering requests."""
    (tmp_path / "slow.py").write_text(SLOW.format(v="v1").replace("time.sleep(1.0)", ""))
    old = await import_off_loop(lambda: discover(tmp_path))
    server = _StartFails(Settings(handlers_dir=str(tmp_path)), old)
    serving = server.worker
    reloader = Reloader(server)
    stopping = asyncio.Event()
    task = asyncio.create_task(reloader.run(stopping))
    with structlog.testing.capture_logs() as logs:
        for attempt in (1, 2):
            reloader.request()
            while len(server.started) < attempt:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert not task.done()
    stopping.set()
    reloader.request()
    await asyncio.wait_for(task, 5)
    assert server.registry is old and server.worker is serving and server.pool is None
    failed = [e for e in logs if e["event"] == "server.reload_failed"]
    assert len(failed) == 2 and "middleware could not be built" in failed[0]["error"]
