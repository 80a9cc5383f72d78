"""Retrying a failed job inside the worker: ``@handler(name, retries=N, retry_backoff=SECONDS)``.

gearmand never runs a failed job again (``--job-retries`` only counts worker
crashes), so the worker does: after a failed attempt (an exception, a
timeout, a pool process that died) it waits and runs the job again, up to
``retries`` more times, telling the client each time with a WORK_WARNING
``attempt 2/3 failed: ValueError: ...``.  A handler raises
:class:`gearworker.errors.NoRetry` for a failure another attempt cannot fix.

The waits grow exponentially from ``retry_backoff`` (1x, 2x, 4x...; capped at
:data:`MAX_DELAY`) with "equal jitter": each wait is drawn between half and
all of its step, so jobs that failed together (a database restart) do not all
come back in the same instant.

The job stays on this worker, holding its place in the concurrency limits,
while it waits: the client keeps one job handle, and gearmand's own timeout
(CAN_DO_TIMEOUT) is stretched to cover every attempt (:meth:`RetryPolicy.budget`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..errors import NoRetry
from ..middleware import Failure

__all__ = ["MAX_DELAY", "Failure", "RetryPolicy", "failure_of", "run_with_retries", "validate", "warning_text"]

#: Longest wait between two attempts, seconds, whatever the backoff and attempt.
MAX_DELAY = 300.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failed job runs again, and how long to wait before each retry."""

    retries: int = 0
    backoff: float = 1.0

    @property
    def attempts(self) -> int:
        """Attempts in all: the first run and every retry."""
        return self.retries + 1

    def step(self, failures: int) -> float:
        """The un-jittered wait after the ``failures``-th failed attempt (1-based)."""
        return min(MAX_DELAY, self.backoff * 2.0 ** (failures - 1))

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after the ``failures``-th failed attempt: between half and all of :meth:`step`."""
        step = self.step(failures)
        return step / 2 + (rng or random).uniform(0, step / 2)

    def budget(self, timeout: float) -> float:
        """Worst-case seconds for all attempts of a job with this per-attempt ``timeout``.

        What gearmand's CAN_DO_TIMEOUT must allow: on expiry gearmand (1.1.20
        and 2.0.0) re-queues the job, which would run it again elsewhere while
        our retries go on.
        """
        return self.attempts * timeout + sum(self.step(k) for k in range(1, self.attempts))


def validate(retries: object, backoff: object) -> RetryPolicy:
    """Check ``@handler``'s ``retries`` / ``retry_backoff``; raise ValueError saying what is wrong."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not math.isfinite(backoff) or backoff < 0:
        raise ValueError(f"retry_backoff must be a finite number of seconds >= 0, got {backoff!r}")
    return RetryPolicy(retries, float(backoff))


def failure_of(e: BaseException, outcome: str = "fail") -> Failure:
    """The :class:`Failure` for an exception a handler raised (NoRetry is not retryable)."""
    return Failure(outcome, f"{type(e).__name__}: {e}", retryable=not isinstance(e, NoRetry))


def warning_text(attempt: int, attempts: int, failure: Failure) -> str:
    """The WORK_WARNING sent to the client after a failed attempt that will be retried."""
    return f"attempt {attempt}/{attempts} failed: {failure.message}"


Attempt = Callable[[int], Awaitable["bytes | Failure"]]


async def run_with_retries(
    attempt: Attempt,
    policy: RetryPolicy,
    *,
    warn: Callable[[str], object],
    on_failure: Callable[[Failure, int, bool], object] | None = None,
    sleep: Callable[[float], Awaitable[object]] | None = None,
) -> tuple[bytes | Failure, int]:
    """Run ``attempt(n)`` (n = 1, 2, ...) until it returns bytes, fails for good, or attempts run out.

    Returns the last result and the number of attempts made.  ``warn`` gets
    the client's warning text before each retry; ``on_failure(failure,
    attempt, final)`` is told of every failed attempt (middleware, logs).
    """
    if sleep is None:
        # Imported here: a handler module imports this one (through @handler), and
        # importing gearworker must stay free of asyncio.
        import asyncio

        sleep = asyncio.sleep
    n = 1
    while True:
        result = await attempt(n)
        if not isinstance(result, Failure):
            return result, n
        final = not result.retryable or n >= policy.attempts
        if on_failure is not None:
            on_failure(result, n, final)
        if final:
            return result, n
        warn(warning_text(n, policy.attempts, result))
        await sleep(policy.delay(n))
        n += 1
