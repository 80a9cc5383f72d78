"""Resize benchmark: is the fast path as good as a plain full-resolution resize, and how much faster?

    .venv/bin/python bench/resize_bench.py              # 12 MP photo, 5 runs, worker with 1 and 2 processes
    .venv/bin/python bench/resize_bench.py --no-worker  # only the in-process comparison

One 4000x3000 photo-like JPEG (gradients, texture, noise, hard edges) is made
at run time and turned into JPEG copies at 2048/1024/512/256 px (q85) by

* naive:   Pillow, LANCZOS from the full-size image for every copy (the reference);
* draft:   Pillow, JPEG draft mode (DCT-domain shrink) + each copy from the previous;
* fast:    gearworker.resize (libvips: shrink-on-load + each copy from the previous).

Quality is PSNR and SSIM (luma) of each *encoded* copy against the naive path's
copy *before* encoding, so the naive path's own figures show what JPEG alone
costs and the others should match them.  Timings are medians, one core each.
Throughput runs the real worker (gearmand + ``gearworker run --processes N``)
and submits the photo many times through :class:`gearworker.Client`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gearmand import Gearmand  # noqa: E402
from images import samples  # noqa: E402

from gearworker.resize import Limits, Options, pack_request, plan, resize, unpack_result  # noqa: E402

SIZES = (2048, 1024, 512, 256)
QUALITY = 85
Method = Callable[[bytes], list[bytes]]


def _targets(width: int, height: int) -> list[tuple[int, int]]:
    # The same dimensions for every method (never upscaled), so copies compare pixel for pixel.
    return [(w, h) for _, w, h in plan(width, height, SIZES)]


def _save(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=QUALITY, progressive=True, optimize=True)
    return buf.getvalue()


def naive_frames(data: bytes) -> list[Image.Image]:
    """The reference: full decode, orientation applied, LANCZOS from full size for each copy (not encoded)."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    return [image.resize(size, Image.Resampling.LANCZOS) for size in _targets(*image.size)]


def naive(data: bytes) -> list[bytes]:
    return [_save(frame) for frame in naive_frames(data)]


def draft(data: bytes) -> list[bytes]:
    with Image.open(io.BytesIO(data)) as opened:
        full = opened.size
        first = _targets(*full)[0]
        opened.draft("RGB", first)  # libjpeg scales by 1/2, 1/4 or 1/8 while decoding, never below `first`
        image = ImageOps.exif_transpose(opened).convert("RGB")
    out = []
    for size in _targets(*full):
        image = image.resize(size, Image.Resampling.LANCZOS)
        out.append(_save(image))
    return out


def fast(data: bytes) -> list[bytes]:
    return [c.data for c in resize(data, Options(sizes=SIZES, quality=QUALITY), Limits()).copies]


METHODS: dict[str, Method] = {
    "naive Pillow LANCZOS": naive,
    "Pillow draft + cascade": draft,
    "gearworker (libvips)": fast,
}


# --- quality ------------------------------------------------------------------------------------------------------


def luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _box(x: np.ndarray, k: int = 8) -> np.ndarray:
    """Mean over every k x k window (valid part only), by summed-area table."""
    s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    box: np.ndarray = (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / (k * k)
    return box


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over 8x8 windows (Wang et al. 2004 constants)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = _box(a), _box(b)
    va, vb, cov = _box(a * a) - ma * ma, _box(b * b) - mb * mb, _box(a * b) - ma * mb
    return float(np.mean(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))))


def quality(data: bytes) -> dict[str, list[tuple[float, float]]]:
    """(PSNR, SSIM) of each method's encoded copies against the unencoded reference."""
    reference = [luma(f) for f in naive_frames(data)]
    scores = {}
    for name, method in METHODS.items():
        row = []
        for ref, encoded in zip(reference, method(data), strict=True):
            got = luma(Image.open(io.BytesIO(encoded)))
            if got.shape != ref.shape:
                raise SystemExit(f"{name}: copy is {got.shape}, reference {ref.shape}")
            row.append((psnr(got, ref), ssim(got, ref)))
        scores[name] = row
    return scores


# --- speed --------------------------------------------------------------------------------------------------------


def timings(data: bytes, runs: int) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms) per photo for each method, after one warm-up run.

    CPU time is the steadier figure on a shared machine: other processes stretch
    the wall clock, much less the CPU time this process needs.
    """
    out = {}
    for name, method in METHODS.items():
        method(data)
        wall, cpu = [], []
        for _ in range(runs):
            w, c = time.perf_counter(), time.process_time()
            method(data)
            wall.append((time.perf_counter() - w) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        out[name] = (statistics.median(wall), statistics.median(cpu))
    return out


def worker_rate(data: bytes, processes: int, jobs: int) -> float | None:
    """Images per second through gearmand and the real worker with a pool of ``processes``; None if it failed."""
    from gearworker.client import Client

    gearmand = Gearmand().start()
    env = {**os.environ, "GEARWORKER_STORAGE_ROOTS": "[]"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearworker",
            "run",
            "--server",
            gearmand.address,
            "--handlers",
            str(ROOT / "handlers"),
            "--processes",
            str(processes),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workload = pack_request(data, sizes=list(SIZES), quality=QUALITY)

    async def go() -> float:
        async with Client([gearmand.address]) as client:
            await asyncio.wait_for(asyncio.gather(*(client.submit("resize", workload) for _ in range(processes))), 60)
            start = time.perf_counter()
            results = await asyncio.wait_for(
                asyncio.gather(*(client.submit("resize", workload) for _ in range(jobs))), 600
            )
            elapsed = time.perf_counter() - start
        for r in results:
            assert len(unpack_result(bytes(r))) == len(plan(*Image.open(io.BytesIO(data)).size, SIZES))
        return jobs / elapsed

    try:
        return asyncio.run(go())
    except Exception as e:
        print(f"worker with {processes} process(es) failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    finally:
        worker.terminate()
        worker.wait(30)
        gearmand.stop()


def pool_rate(data: bytes, processes: int, jobs: int) -> float:
    """Fallback: images per second through a forkserver ProcessPoolExecutor, no Gearman."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(fast, [data] * processes))
        start = time.perf_counter()
        list(pool.map(fast, [data] * jobs))
        return jobs / (time.perf_counter() - start)


# --- report -------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=30, help="photos per throughput run")
    parser.add_argument("--no-worker", action="store_true", help="skip the worker throughput runs")
    args = parser.parse_args()
    # Keep the client's info logs out of the Markdown tables.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    data = samples.jpeg(samples.photo(args.width, args.height, seed=7), quality=92)
    mp = args.width * args.height / 1e6
    print(
        f"source: {args.width}x{args.height} ({mp:.1f} MP) JPEG, {len(data) / 1e6:.1f} MB; "
        f"copies {'/'.join(map(str, SIZES))} px, JPEG q{QUALITY} progressive; libvips threads 1; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )

    scores = quality(data)
    ms = timings(data, args.runs)
    base_wall, base_cpu = ms["naive Pillow LANCZOS"]
    steps = plan(args.width, args.height, SIZES)
    print(
        f"| method | wall ms per photo (median of {args.runs}) | CPU ms | speed-up (wall / CPU) | "
        + " | ".join(f"{w}x{h} PSNR dB / SSIM" for _, w, h in steps)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(steps))
    for name in METHODS:
        wall, cpu = ms[name]
        cells = " | ".join(f"{p:.2f} / {s:.4f}" for p, s in scores[name])
        print(f"| {name} | {wall:.0f} | {cpu:.0f} | {base_wall / wall:.2f}x / {base_cpu / cpu:.2f}x | {cells} |")
    worst = max(
        abs(p - q)
        for (p, _), (q, _) in zip(scores["gearworker (libvips)"], scores["naive Pillow LANCZOS"], strict=True)
    )
    print(f"\nlargest PSNR gap between gearworker and the naive path, any size: {worst:.3f} dB")

    print("\n| pool processes | images/s | via |")
    print("|---|---|---|")
    for n in (1, 2):
        rate = None if args.no_worker else worker_rate(data, n, args.jobs)
        via = "gearmand + gearworker run (Client, all jobs in flight)"
        if rate is None:
            rate, via = pool_rate(data, n, args.jobs), "ProcessPoolExecutor in-process (worker not used)"
        print(f"| {n} | {rate:.2f} | {via} |")


if __name__ == "__main__":
    main()
