"""What the Photos page downloads, and how much it moves while loading, in Chromium.

    .venv/bin/python -m bench.web_page_weight                      # 4 photos of 12 MP
    .venv/bin/python -m bench.web_page_weight --app-root DIR       # the web app of another checkout

One gearmand, one worker (2 pool processes) and the web app; ``--photos``
photos of 4000x3000 are uploaded through the API and resized.  Then a fresh
Chromium (Debian's, through Playwright; no cache, 1280x860, device scale 1)
opens ``/#photos`` and waits until the network is idle, then scrolls to the
bottom and waits again.  Printed: bytes on the wire (encoded, as Chromium's
network domain counts them) for the first view and after scrolling, split
into photo copies and the rest, and the cumulative layout shift (CLS).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gearmand import Gearmand, free_port, wait_for_port

from bench.web_photo_modes import photo_12mp

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CLS = """new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (!e.hadRecentInput) window.__cls = (window.__cls || 0) + e.value;
}).observe({type: "layout-shift", buffered: true});"""


def upload(base: str, count: int) -> None:
    data = photo_12mp()
    with httpx.Client(base_url=base, cookies={"gw_csrf": TOKEN}, headers={"x-csrf-token": TOKEN}, timeout=120) as c:
        ids = []
        for i in range(count):
            r = c.post("/api/photos?session=benchsession1", files={"photo": (f"IMG_{i:04d}.jpg", data, "image/jpeg")})
            r.raise_for_status()
            ids.append(r.json()["id"])
        while True:
            states = {p["id"]: p["state"] for p in c.get("/api/photos?limit=100").json()["photos"]}
            if all(states.get(i) in ("done", "failed") for i in ids):
                return
            time.sleep(0.2)


def measure(base: str) -> dict[str, Any]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
        context.add_init_script(CLS)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        urls: dict[str, str] = {}
        sizes = {"copies": 0, "other": 0, "requests": 0}
        cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))

        def finished(e: dict[str, Any]) -> None:
            kind = "copies" if "/photos/" in urls.get(e["requestId"], "") else "other"
            sizes[kind] += int(e["encodedDataLength"])
            sizes["requests"] += 1

        cdp.on("Network.loadingFinished", finished)
        page.goto(f"{base}/#photos")
        page.wait_for_selector('.photo[data-state="done"]')
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1000)
        first = dict(sizes)
        cls = float(page.evaluate("window.__cls || 0"))
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_timeout(500)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1000)
        scrolled = dict(sizes)
        browser.close()
    return {"first": first, "scrolled": scrolled, "cls": cls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the tree whose web app is measured")
    args = parser.parse_args()
    app_root = args.app_root.resolve()
    g = Gearmand().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEARWORKER_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "gearworker", "--server", g.address, "--handlers", "handlers", "--processes", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    storage = Path(tempfile.mkdtemp(prefix="web-weight-"))
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gearworker", "web", "--port", str(port), "--server", g.address],
        cwd=app_root,
        env={**env, "PYTHONPATH": str(app_root), "GEARWORKER_WEB_STORAGE_ROOT": str(storage)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not g.status().get("resize", (0, 0, 0))[2]:
            time.sleep(0.1)
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        upload(base, args.photos)
        result = measure(base)
    finally:
        web.terminate()
        web.wait(20)
        worker.terminate()
        worker.wait(30)
        g.stop()
    print(f"web app from {app_root}; {args.photos} photos of 4000x3000, Photos page at 1280x860, no cache")
    for label, key in (("first view", "first"), ("after scrolling to the end", "scrolled")):
        s = result[key]
        total = s["copies"] + s["other"]
        print(
            f"  {label:<28} {total / 2**20:6.2f} MiB in {s['requests']} requests "
            f"(photo copies {s['copies'] / 2**20:.2f} MiB, the rest {s['other'] / 2**10:.0f} KiB)"
        )
    print(f"  cumulative layout shift      {result['cls']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
