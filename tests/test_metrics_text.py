"""Reading worker metrics back: the text format, PromQL's histogram_quantile, rates over a reset."""

from __future__ import annotations

import math

from gearworker.metrics.prometheus import Metrics
from gearworker.metrics.text import histogram_quantile, parse
from gearworker.web.workerstats import WorkerStats, _Sample, read_metrics


def test_a_workers_own_metrics_read_back_as_counters_and_buckets() -> None:
    m = Metrics(process_metrics=False)
    for duration in (0.003, 0.004, 0.2):
        m.job_started('we"ird')
        m.job_finished('we"ird', "complete", duration)
    m.job_started("f")
    m.job_finished("f", "timeout", 1.5)
    sample = read_metrics(m.render().decode(), at=0.0)
    assert sample.jobs[('we"ird', "complete")] == 3 and sample.jobs[("f", "timeout")] == 1
    buckets = sample.buckets['we"ird']
    assert buckets[0.005] == 2 and buckets[0.25] == 3 and buckets[math.inf] == 3
    assert list(parse('x{a="1"} 2\n# HELP y\nbad line\nz 3 1700000000\n')) == [("x", {"a": "1"}, 2.0), ("z", {}, 3.0)]


def test_quantiles_interpolate_within_a_bucket_as_promql_does() -> None:
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 40.0)]
    assert histogram_quantile(0.25, buckets) == 0.1  # rank 10: the top of the first bucket
    assert histogram_quantile(0.5, buckets) == 0.1 + 0.4 * (20 - 10) / 20
    assert histogram_quantile(0.95, buckets) == 0.5 + 0.5 * (38 - 30) / 10
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0  # in +Inf: the highest finite bound
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None


def test_rates_count_a_restarted_worker_from_zero() -> None:
    stats = WorkerStats(["w1:9100", "w2:9100"])
    first, second = stats.targets
    first.samples.extend(
        [
            _Sample(0.0, {("f", "complete"): 100.0, ("f", "fail"): 5.0}, {"f": {0.1: 90.0, math.inf: 105.0}}),
            _Sample(10.0, {("f", "complete"): 30.0, ("f", "fail"): 1.0}, {"f": {0.1: 31.0, math.inf: 31.0}}),
        ]
    )  # restarted between the two scrapes: 30 done and 1 failed since
    second.samples.extend(
        [
            _Sample(0.0, {("f", "complete"): 0.0}, {"f": {0.1: 0.0, math.inf: 0.0}}),
            _Sample(10.0, {("f", "complete"): 20.0}, {"f": {0.1: 0.0, math.inf: 20.0}}),
        ]
    )
    row = stats.summary()["functions"]["f"]
    assert (row["done_per_s"], row["failed_per_s"]) == (5.0, 0.1)
    assert row["p50"] == round(0.1 * 25.5 / 31, 6)  # 31 of 51 within 0.1 s: the median is inside that bucket
    assert row["p95"] == 0.1  # in the +Inf bucket: its lower bound
