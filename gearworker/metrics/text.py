"""Reading the Prometheus text format back, and a quantile from histogram buckets (sans-IO).

The web app's console scrapes the workers' ``/metrics`` (the ``web_worker_metrics``
setting) for jobs done and failed per second and run-time percentiles per
function.  Only what :mod:`gearworker.metrics.prometheus` writes needs reading:
``name{label="value",...} number`` lines, ``#`` comments skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence

__all__ = ["Sample", "histogram_quantile", "parse"]

Sample = tuple[str, dict[str, str], float]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse(text: str, names: Sequence[str] | None = None) -> Iterator[Sample]:
    """Each sample as ``(name, labels, value)``; only those whose name starts with one of ``names`` when given."""
    wanted = tuple(names) if names is not None else None
    for line in text.splitlines():
        if not line or line.startswith("#") or (wanted is not None and not line.startswith(wanted)):
            continue
        found = _LINE.match(line.strip())
        if found is None:
            continue
        name, labels, value = found.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        pairs = {k: re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], v) for k, v in _LABEL.findall(labels or "")}
        yield name, pairs, number


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) from cumulative ``(upper bound, count)`` buckets, as PromQL's function does.

    Linear within the bucket it falls in; the ``+Inf`` bucket answers with the
    highest finite bound.  None when there are no observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
