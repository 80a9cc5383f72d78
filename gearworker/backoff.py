"""Exponential backoff with full jitter, for reconnecting to job servers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """Delays of ``min * 2**n`` capped at ``max``, each drawn uniformly from
    ``[delay / 2, delay]`` so that many workers restarted together do not hit
    a returning gearmand in lockstep.
    """

    minimum: float = 0.1
    maximum: float = 10.0
    attempts: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count the attempt."""
        delay = min(self.maximum, self.minimum * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return self._random.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Start again from ``minimum`` (after a successful connection)."""
        self.attempts = 0
