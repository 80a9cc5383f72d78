"""The benchmark's PNG: throughput against jobs in flight, and latency percentiles."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {
    "gearworker": "gearworker (1 process)",
    "php": "PHP GearmanWorker (1 process)",
    "tasks": "gearworker, handlers started as Tasks (before eager start)",
}
PERCENTILES: tuple[float, ...] = (50, 90, 99, 99.9)


def draw(path: Path, sweep: dict[str, dict[int, float]] | None, latency: dict[str, list[float]] | None) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if sweep:
        for kind, points in sweep.items():
            levels = sorted(points)
            left.plot(levels, [points[x] for x in levels], marker="o", label=LABELS.get(kind, kind))
        left.set_xscale("log")
        left.set_xlabel("jobs in flight from the client (100-byte echo)")
        left.set_ylabel("jobs/s")
        left.set_title("Throughput vs in-flight jobs")
        left.grid(True, which="both", alpha=0.3)
        left.legend()
    if latency:
        from .cases import percentile

        width = 0.8 / len(latency)
        for i, (kind, samples) in enumerate(latency.items()):
            values = [percentile(samples, p) for p in PERCENTILES]
            xs = [j + i * width for j in range(len(PERCENTILES))]  # bar positions
            right.bar(xs, values, width, label=LABELS.get(kind, kind))
        right.set_xticks(
            [j + width * (len(latency) - 1) / 2 for j in range(len(PERCENTILES))], [f"p{p:g}" for p in PERCENTILES]
        )
        right.set_ylabel("microseconds")
        right.set_title("Latency of one no-op job at a time")
        right.grid(True, axis="y", alpha=0.3)
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
