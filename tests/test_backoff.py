"""gearworker.backoff.Backoff: exponential growth, the cap, the jitter range and reset.

The random source is seeded, so each run draws the same delays.
"""

from __future__ import annotations

import random

import pytest

from gearworker.backoff import Backoff


def seeded(minimum: float = 0.1, maximum: float = 10.0, seed: int = 1) -> Backoff:
    return Backoff(minimum, maximum, _random=random.Random(seed))


def test_each_delay_is_drawn_from_half_to_all_of_minimum_times_two_to_the_attempt() -> None:
    """Attempt n waits between min*2**n/2 and min*2**n (full jitter on the upper half)."""
    backoff = seeded(minimum=0.1, maximum=1000.0)
    for n in range(10):
        ceiling = 0.1 * 2**n
        assert ceiling / 2 <= backoff.next_delay() <= ceiling
    assert backoff.attempts == 10


def test_delays_grow_with_the_attempts() -> None:
    """The range doubles each attempt, so the lowest delay of attempt n+1 is at least the highest of attempt n."""
    backoff = seeded(minimum=0.5, maximum=1000.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == sorted(delays)
    assert delays[-1] >= 0.5 * 2**7 / 2


def test_delays_never_exceed_the_maximum_however_many_attempts() -> None:
    """Once min*2**n passes max, every delay is within [max/2, max]."""
    backoff = seeded(minimum=0.1, maximum=3.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(d <= 3.0 for d in delays)
    assert all(1.5 <= d <= 3.0 for d in delays[6:])  # 0.1 * 2**5 = 3.2 > 3


def test_a_huge_attempt_count_does_not_overflow() -> None:
    """The exponent is capped (at 32), so a worker down for days still gets a finite, capped delay."""
    backoff = Backoff(minimum=0.1, maximum=10.0, attempts=10_000, _random=random.Random(3))
    assert 5.0 <= backoff.next_delay() <= 10.0


def test_jitter_spreads_delays_over_the_whole_range() -> None:
    """Many workers do not retry in lockstep: draws cover both the low and the high end of [delay/2, delay]."""
    delays = []
    for seed in range(200):
        backoff = seeded(minimum=1.0, maximum=1.0, seed=seed)
        delays.append(backoff.next_delay())
    assert min(delays) < 0.6
    assert max(delays) > 0.9
    assert len(set(delays)) == len(delays)


def test_same_seed_gives_the_same_delays() -> None:
    """The random source is the injected one: seeding it makes the sequence reproducible."""
    a, b = seeded(seed=42), seeded(seed=42)
    assert [a.next_delay() for _ in range(6)] == [b.next_delay() for _ in range(6)]


def test_reset_starts_again_from_the_minimum() -> None:
    """After a successful connection the next delay is back in [min/2, min]."""
    backoff = seeded(minimum=0.2, maximum=10.0)
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert 0.1 <= backoff.next_delay() <= 0.2
    assert backoff.attempts == 1


def test_defaults_are_a_tenth_of_a_second_up_to_ten_seconds() -> None:
    """Backoff() starts at 0.1 s and caps at 10 s."""
    backoff = Backoff()
    assert (backoff.minimum, backoff.maximum, backoff.attempts) == (0.1, 10.0, 0)
    assert 0.05 <= backoff.next_delay() <= 0.1


@pytest.mark.parametrize("maximum", [0.05, 0.1])
def test_a_maximum_at_or_below_the_minimum_caps_the_first_delay_too(maximum: float) -> None:
    """max wins over min: the very first delay is already within [max/2, max]."""
    backoff = seeded(minimum=0.1, maximum=maximum)
    assert maximum / 2 <= backoff.next_delay() <= maximum
