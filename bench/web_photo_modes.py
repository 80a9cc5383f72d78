"""The web app's two photo modes side by side: bytes (photo in the job) vs file (worker uses the shared folder).

    .venv/bin/python -m bench.web_photo_modes            # 12 photos of 12 MP per run, 2 runs per mode
    .venv/bin/python -m bench.web_photo_modes --photos 4 --runs 1

One gearmand and one worker (2 pool processes, its storage_roots = the web
app's storage root) serve both modes; each run starts a fresh web app in the
mode under test, uploads the photos at once, and waits until every one is
resized.  Printed per mode: wall time per photo (upload to last copy on
disk), and the web app's peak resident memory (VmHWM).  Runs alternate
(bytes, file, bytes, file) so a noisy neighbour slows both alike.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gearmand import Gearmand, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench"


def photo_12mp() -> bytes:
    """A 4000x3000 JPEG with structure and noise (about 4 MB, like a camera's)."""
    image = Image.effect_noise((4000, 3000), 40).convert("RGB")
    draw = ImageDraw.Draw(image)
    for x in range(0, 4000, 50):
        draw.line([(x, 0), (4000 - x, 3000)], fill=(x % 256, 120, 200), width=7)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def run(mode: str, server: str, storage: Path, data: bytes, photos: int) -> tuple[float, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEARWORKER_")}
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearworker",
            "web",
            "--port",
            str(port),
            "--server",
            server,
            "--storage-root",
            str(storage),
            "--photo-mode",
            mode,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            cookies={"gw_csrf": TOKEN},
            headers={"x-csrf-token": TOKEN},
            timeout=120,
        ) as client:
            started = time.monotonic()
            ids = []
            for i in range(photos):
                r = client.post(
                    "/api/photos?session=benchsession1&format=jpeg", files={"photo": (f"p{i}.jpg", data, "image/jpeg")}
                )
                r.raise_for_status()
                ids.append(r.json()["id"])
            while True:
                listed = {p["id"]: p["state"] for p in client.get("/api/photos?limit=100").json()["photos"]}
                if all(listed.get(i) in ("done", "failed") for i in ids):
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            failed = [i for i in ids if listed[i] != "done"]
            if failed:
                raise RuntimeError(f"{mode}: {len(failed)} photos failed")
            return elapsed / photos, peak_rss_mib(web.pid)
    finally:
        web.terminate()
        web.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    data = photo_12mp()
    g = Gearmand().start()
    storage = Path(tempfile.mkdtemp(prefix="web-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEARWORKER_")}
    env["GEARWORKER_STORAGE_ROOTS"] = str(storage.resolve())
    worker = subprocess.Popen(
        [sys.executable, "-m", "gearworker", "--server", g.address, "--handlers", "handlers", "--processes", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, list[tuple[float, float]]] = {"bytes": [], "file": []}
    try:
        while not g.status().get("resize", (0, 0, 0))[2]:
            time.sleep(0.1)
        run("bytes", g.address, storage, data, 2)  # warm up the pool processes
        for _ in range(args.runs):
            for mode in ("bytes", "file"):
                results[mode].append(run(mode, g.address, storage, data, args.photos))
    finally:
        worker.terminate()
        worker.wait(30)
        g.stop()
    print(
        f"{args.photos} photos of 4000x3000 ({len(data) / 2**20:.1f} MiB JPEG) per run, {args.runs} runs, "
        "2 worker processes"
    )
    print(f"{'mode':<6} {'s per photo':>12} {'web app peak RSS':>18}")
    for mode, rows in results.items():
        print(
            f"{mode:<6} {statistics.median(r[0] for r in rows):>12.3f} "
            f"{statistics.median(r[1] for r in rows):>15.1f} MiB"
        )
    b, f = (statistics.median(r[0] for r in results[m]) for m in ("bytes", "file"))
    print(f"file / bytes time: {f / b:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
