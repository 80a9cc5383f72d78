"""Retries and middleware, without a server: the policy, the attempt loop, the hooks and their registration.

`@handler(name, retries=N, retry_backoff=SECONDS)`: on an exception the worker
runs the job again, up to N more times, with exponential backoff and jitter
starting at `retry_backoff`, and tells the client each time (WORK_WARNING
"attempt 2/3 failed: Type: message"); `NoRetry` skips the retries.  The real
worker against gearmand is in tests/test_jobqueue_gearmand.py.
"""

from __future__ import annotations

import random
import sys
import textwrap
import types
import uuid
from pathlib import Path
from typing import Any, cast

import pytest

import gearworker
from gearworker import handler
from gearworker.errors import ConfigError, HandlerError, NoRetry
from gearworker.logs.jobline import LogMiddleware
from gearworker.middleware import Failure, JobInfo, JobResult, Middleware, middleware
from gearworker.schedule.rules import Cron, Interval
from gearworker.worker.chain import Chain, build
from gearworker.worker.registry import discover
from gearworker.worker.registry import load_middleware as load
from gearworker.worker.retry import MAX_DELAY, RetryPolicy, failure_of, run_with_retries, validate

# -- the policy ------------------------------------------------------------------


def test_waits_double_from_retry_backoff_with_jitter_between_half_and_all() -> None:
    """Step k is backoff * 2**(k-1), capped; each wait is drawn in [step/2, step]."""
    policy = RetryPolicy(retries=5, backoff=2.0)
    assert [policy.step(k) for k in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    rng = random.Random(1)
    waits = [policy.delay(1, rng) for _ in range(200)]
    assert min(waits) >= 1.0 and max(waits) <= 2.0
    assert len({round(w, 3) for w in waits}) > 100  # jittered, not one value
    assert RetryPolicy(retries=30, backoff=1.0).step(30) == MAX_DELAY


def test_gearmands_timeout_budget_covers_every_attempt_and_wait() -> None:
    """3 attempts of 10 s with 1 s then 2 s between: 33 s."""
    assert RetryPolicy(retries=2, backoff=1.0).budget(10.0) == 33.0
    assert RetryPolicy().budget(10.0) == 10.0


@pytest.mark.parametrize(
    ("retries", "backoff", "word"),
    [
        (-1, 1.0, "retries"),
        (1.5, 1.0, "retries"),
        (True, 1.0, "retries"),
        ("2", 1.0, "retries"),
        (1, -0.5, "retry_backoff"),
        (1, float("nan"), "retry_backoff"),
        (1, float("inf"), "retry_backoff"),
    ],
)
def test_bad_retry_values_are_refused(retries: object, backoff: object, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        validate(retries, backoff)


def test_the_decorator_refuses_bad_values_with_a_handler_error_naming_the_file() -> None:
    """@handler(retries=-1) / a bad schedule fail at import, naming the file and the handler."""

    def f(job: object) -> None: ...

    with pytest.raises(HandlerError) as info:
        handler("charge", retries=-1)(f)
    assert __file__ in str(info.value) and "'charge'" in str(info.value) and "retries" in str(info.value)
    with pytest.raises(HandlerError, match="minute field"):
        handler("tick", schedule="61 * * * *")(f)
    with pytest.raises(HandlerError, match="whole seconds"):
        handler("tick", schedule=cast(Any, 0.5))(f)  # a type schedule= does not take: the run-time check


def test_discovered_handlers_carry_retries_and_schedule(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    (tmp_path / f"jobs_{tag}.py").write_text(
        textwrap.dedent(f"""
        from gearworker import handler

        @handler("charge_{tag}", retries=2, retry_backoff=0.5)
        async def charge(job):
            return b""

        @handler("tick_{tag}", schedule=60)
        async def tick(job):
            return b""

        @handler("cron_{tag}", schedule="*/5 * * * *")
        async def cron(job):
            return b""
    """)
    )
    registry = discover(tmp_path)
    assert registry.handlers[f"charge_{tag}"].retry == RetryPolicy(2, 0.5)
    assert registry.handlers[f"charge_{tag}"].schedule is None
    assert registry.handlers[f"tick_{tag}"].schedule == Interval(60)
    assert registry.handlers[f"tick_{tag}"].retry == RetryPolicy(0, 1.0)
    assert isinstance(registry.handlers[f"cron_{tag}"].schedule, Cron)


def test_no_retry_is_exported_and_not_retryable() -> None:
    assert gearworker.NoRetry is NoRetry
    assert not failure_of(NoRetry("bad input")).retryable
    assert failure_of(ValueError("x")) == Failure("fail", "ValueError: x", True)


# -- the attempt loop --------------------------------------------------------------


async def run(outcomes: list[bytes | Failure], policy: RetryPolicy) -> tuple[object, int, list[str], list[tuple]]:
    warnings: list[str] = []
    failures: list[tuple] = []
    waits: list[float] = []

    async def attempt(n: int) -> bytes | Failure:
        return outcomes[n - 1]

    async def sleep(d: float) -> None:
        waits.append(d)

    result, n = await run_with_retries(
        attempt, policy, warn=warnings.append, on_failure=lambda f, a, final: failures.append((a, final)), sleep=sleep
    )
    assert len(waits) == len(warnings)
    return result, n, warnings, failures


async def test_failing_twice_then_succeeding_with_two_retries_returns_the_result() -> None:
    """Two warnings "attempt k/3 failed: Type: message", then the result."""
    fail = Failure("fail", "RuntimeError: flaky")
    result, n, warnings, failures = await run([fail, fail, b"ok"], RetryPolicy(2, 0.01))
    assert (result, n) == (b"ok", 3)
    assert warnings == ["attempt 1/3 failed: RuntimeError: flaky", "attempt 2/3 failed: RuntimeError: flaky"]
    assert failures == [(1, False), (2, False)]


async def test_the_last_failure_is_returned_once_attempts_run_out() -> None:
    timeout = Failure("timeout", "JobTimeout: ran past its 1s timeout")
    result, n, warnings, failures = await run([timeout, timeout], RetryPolicy(1, 0.01))
    assert (result, n) == (timeout, 2)
    assert warnings == ["attempt 1/2 failed: JobTimeout: ran past its 1s timeout"]
    assert failures == [(1, False), (2, True)]


async def test_no_retry_ends_the_job_at_the_first_attempt() -> None:
    result, n, warnings, failures = await run([failure_of(NoRetry("bad input"))], RetryPolicy(5, 0.01))
    assert n == 1 and warnings == [] and failures == [(1, True)]
    assert isinstance(result, Failure) and result.message == "NoRetry: bad input"


# -- middleware ------------------------------------------------------------------


class Recorder(Middleware):
    def __init__(self, name: str = "r", calls: list[str] | None = None) -> None:
        self.name = name
        self.calls = calls if calls is not None else []

    def before(self, job: JobInfo) -> None:
        self.calls.append(f"{self.name}.before {job.function}")

    def after(self, job: JobInfo, result: JobResult) -> None:
        self.calls.append(f"{self.name}.after {result.outcome}")

    def on_failure(self, job: JobInfo, failure: Failure, attempt: int, final: bool) -> None:
        self.calls.append(f"{self.name}.failure {attempt} {final}")


def info() -> JobInfo:
    return JobInfo("charge", b"H:1", b"u", 3, "s:4730", attempts=2)


def test_chain_runs_before_in_order_and_after_in_reverse() -> None:
    calls: list[str] = []
    chain = Chain([Recorder("a", calls), Recorder("b", calls)])
    job = info()
    chain.before(job)
    chain.on_failure(job, Failure("fail", "E: x"), 1, False)
    chain.after(job, JobResult("complete", 0.1, None, 2))
    assert calls == [
        "a.before charge",
        "b.before charge",
        "a.failure 1 False",
        "b.failure 1 False",
        "b.after complete",
        "a.after complete",
    ]


def test_a_failing_hook_is_logged_and_the_others_still_run(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(Middleware):
        def before(self, job: JobInfo) -> None:
            raise RuntimeError("boom")

    calls: list[str] = []
    Chain([Broken(), Recorder("ok", calls)]).before(info())
    assert calls == ["ok.before charge"]
    assert "middleware.error" in capsys.readouterr().out


def test_middleware_from_settings_is_imported_and_classes_instantiated() -> None:
    module = types.ModuleType("mw_settings_test")
    vars(module).update(Audit=Recorder, instance=Recorder("i"))
    sys.modules["mw_settings_test"] = module
    assert isinstance(load("mw_settings_test:Audit"), Recorder)
    assert load("mw_settings_test:instance") is module.instance
    for bad, words in [
        ("nocolon", "not 'module:attribute'"),
        ("no_such_mod_xyz:A", "ModuleNotFoundError"),
        ("mw_settings_test:missing", "AttributeError"),
        ("mw_settings_test:__name__", "no before"),
    ]:
        with pytest.raises(ConfigError, match=words) as e:
            load(bad, file="settings.py")
        assert e.value.setting == "middleware" and e.value.file == "settings.py"


def test_middleware_marked_in_a_handler_module_is_found_once(tmp_path: Path) -> None:
    """@middleware classes defined (not imported, not merely subclassed) in handler modules join the chain."""
    tag = uuid.uuid4().hex[:8]
    (tmp_path / f"mw_{tag}.py").write_text(
        textwrap.dedent(f"""
        from gearworker import handler
        from gearworker.middleware import Middleware, middleware

        @middleware
        class Counting(Middleware):
            seen = []
            def before(self, job):
                self.seen.append(job.function)

        class NotMarked(Counting):
            pass

        @handler("mw_{tag}")
        async def h(job):
            return b""
    """)
    )
    registry = discover(tmp_path)
    assert [type(m).__name__ for m in registry.middleware] == ["Counting"]
    chain = build([], registry.middleware)
    assert isinstance(chain.items[0], LogMiddleware)
    chain.before(info())
    assert vars(type(registry.middleware[0]))["seen"] == ["charge"]


def test_middleware_decorator_refuses_what_it_cannot_mark() -> None:
    with pytest.raises(TypeError):
        middleware(3)


def test_the_example_middleware_in_handlers_is_found() -> None:
    """handlers/ ships an example (handlers/slowjobs.py) that the default worker loads."""
    registry = discover(Path(__file__).resolve().parent.parent / "handlers")
    assert "SlowJobs" in [type(m).__name__ for m in registry.middleware]


async def test_an_async_final_failure_hook_is_awaited_and_cut_short_when_slow(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """before_final_failure hooks are awaited in order; one that hangs is stopped at FINAL_HOOK_TIMEOUT."""
    import asyncio

    import gearworker.middleware as mw

    monkeypatch.setattr(mw, "FINAL_HOOK_TIMEOUT", 0.05)
    calls: list[str] = []

    class Hangs(Middleware):
        async def before_final_failure(self, job: JobInfo) -> None:
            calls.append("hangs")
            await asyncio.sleep(3600)

    class Quick(Middleware):
        async def before_final_failure(self, job: JobInfo) -> None:
            calls.append("quick")

    chain = Chain([Hangs(), Quick()])
    assert chain.has_final_hooks and not Chain([Recorder()]).has_final_hooks
    await chain.before_final_failure(info())
    assert calls == ["hangs", "quick"]
    assert "middleware.error" in capsys.readouterr().out


def test_a_chain_with_nothing_to_do_for_completed_jobs_says_so() -> None:
    """With info logging off and no other middleware, completed jobs need no JobInfo or JobResult at all."""
    import structlog

    from gearworker import logs

    try:
        logs.configure("warning", "json")
        quiet = build([], [])
        assert not quiet.has_before and not quiet.has_after_complete
        calls: list[str] = []
        busy = build([], [Recorder("r", calls)])
        assert busy.has_before and busy.has_after_complete
        busy.after(info(), JobResult("complete", 0.0))
        assert calls == ["r.after complete"]
        logs.configure("info", "json")
        assert build([], []).has_after_complete  # the job.done info line needs it
    finally:
        structlog.reset_defaults()
