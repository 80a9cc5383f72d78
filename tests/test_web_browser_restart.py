"""The web app in Chromium across a restart of its process, and against a page from another origin.

A page left open while the web app restarts re-syncs by itself (the event
stream's boot id changes): photos are still there (from disk), a background
job is watched again, and new jobs and uploads update live.  A page served
from another port tries a form POST, a fetch and an upload: all refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gearmand import free_port
from playwright.sync_api import Page, expect
from test_web_browser import WAIT_MS, Stack, _stop, browser, page, photo, shot, stack, start_web, wait_for_js

pytestmark = pytest.mark.browser
__all__ = ["browser", "page", "stack"]  # fixtures shared with test_web_browser


@pytest.mark.console_errors("ERR_CONNECTION_REFUSED")  # the stream retrying while the app is down
def test_a_page_left_open_resyncs_after_the_web_app_restarts(stack: Stack, page: Page, tmp_path: Path) -> None:
    """Restart the web app under an open page: it re-syncs without a reload, and new work updates live."""
    port, storage, log = free_port(), tmp_path / "photos", tmp_path / "web.log"
    web, url = start_web([stack.gearmand.address], log, port=port, storage=storage)
    try:
        page.goto(f"{url}/#photos")
        page.set_input_files("#file-input", str(photo(tmp_path / "before.jpg", 1200, 800, 90)))
        before = page.locator(".photo", has_text="before.jpg")
        expect(before).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        photo_id = before.get_attribute("data-photo")
        page.goto(f"{url}/#jobs")  # same page, another tab of it: no reload
        page.select_option("#function", "slow")
        page.fill("#payload", "10")  # long enough to outlive the restart: the new process must see it running
        page.check("input[name=mode][value=background]")
        page.click("#submit")
        background = page.locator("#job-rows tr", has_text="background")
        expect(background).to_have_attribute("data-state", "running")
        old_boot = page.evaluate("document.body.dataset.boot")

        _stop(web)
        web, _ = start_web([stack.gearmand.address], log, port=port, storage=storage)
        listening = time.monotonic()
        page.wait_for_function(
            "(old) => document.body.dataset.synced && document.body.dataset.synced !== old",
            arg=old_boot,
            timeout=WAIT_MS,
        )
        resync = time.monotonic() - listening
        print(f"re-synced {resync:.2f} s after the new web app listened")
        new_boot = page.evaluate("document.body.dataset.boot")
        assert new_boot != old_boot

        # The background job is watched again by the new process, to its end.
        expect(background).to_have_attribute("data-state", "finished", timeout=WAIT_MS)
        # New jobs update live, with row ids of the new boot (no collision with the old ones).
        page.check("input[name=mode][value=foreground]")
        page.select_option("#function", "reverse")
        page.fill("#payload", "restart")
        page.click("#submit")
        row = page.locator('#job-rows tr[data-state="done"]', has_text="trats")
        expect(row).to_have_count(1)
        assert (row.get_attribute("id") or "").startswith(f"job-{new_boot}-b1-")
        # The photo is still listed (from disk), its copies load, and a new upload updates live.
        page.goto(f"{url}/#photos")
        kept = page.locator(f'.photo[data-photo="{photo_id}"]')
        expect(kept).to_have_attribute("data-state", "done")
        wait_for_js(
            page,
            f"""[...document.querySelectorAll('.photo[data-photo="{photo_id}"] img')]
                              .every(i => i.complete && i.naturalWidth > 0)""",
        )
        page.set_input_files("#file-input", str(photo(tmp_path / "after.jpg", 900, 600, 200)))
        expect(page.locator(".photo", has_text="after.jpg")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        shot(page, "photos-after-restart")
    finally:
        page.goto("about:blank")
        _stop(web)


EVIL_PAGE = """<!doctype html><meta charset="utf-8"><title>another site</title>
<form id="f" method="POST" enctype="text/plain" action="{url}/api/jobs?session=evilsession1">
<input name='{{"function": "slow", "priority": "high", "background": true, "payload": "30", "x": "' value='"}}'>
</form>"""


@pytest.fixture
def evil_site(stack: Stack) -> Iterator[tuple[str, list[str]]]:
    """A second local web server (another origin) whose page targets the web app; yields its URL."""
    pages: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages[-1].encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pages.append(EVIL_PAGE.format(url=stack.url))
    yield f"http://127.0.0.1:{server.server_address[1]}/", pages
    server.shutdown()


@pytest.mark.console_errors("has been blocked by CORS policy", "net::ERR_FAILED")  # what the test provokes
def test_a_page_from_another_origin_can_neither_submit_nor_upload(
    stack: Stack, page: Page, evil_site: tuple[str, list[str]]
) -> None:
    evil_url, _ = evil_site
    queued_before = stack.gearmand.status().get("slow", (0, 0, 0))[0]
    photos_before = page.request.get(f"{stack.url}/api/photos").json()["total"]
    page.goto(evil_url)
    # fetch with JSON (needs a CORS preflight this app never grants), a "simple" no-cors fetch, and an upload.
    outcomes = page.evaluate(
        """async (url) => {
        const tries = {
            json: () => fetch(`${url}/api/jobs?session=evilsession1`, {method: "POST", credentials: "include",
                headers: {"content-type": "application/json"}, body: JSON.stringify({function: "echo", payload: "x"})}),
            simple: () => fetch(`${url}/api/jobs?session=evilsession1`, {method: "POST", mode: "no-cors",
                credentials: "include", body: JSON.stringify({function: "slow", payload: "30", background: true})}),
            upload: () => { const b = new FormData();
                b.append("photo", new Blob([new Uint8Array([255, 216, 255, 0])], {type: "image/jpeg"}), "x.jpg");
                return fetch(`${url}/api/photos?session=evilsession1`, {method: "POST", mode: "no-cors",
                    credentials: "include", body: b}); },
        };
        const out = {};
        for (const [name, attempt] of Object.entries(tries)) {
            try { const r = await attempt(); out[name] = r.type === "opaque" ? "opaque" : r.status; }
            catch (e) { out[name] = "blocked"; }
        }
        return out;
    }""",
        stack.url,
    )
    assert outcomes == {"json": "blocked", "simple": "opaque", "upload": "opaque"}  # the browser hides the answers
    # The form POST navigates to the app's answer.
    with page.expect_navigation():
        page.evaluate("document.getElementById('f').submit()")
    assert json.loads(page.inner_text("body")) == {"error": "Refused: this request came from another web site."}
    # And nothing happened: no job queued, no photo stored.
    assert stack.gearmand.status().get("slow", (0, 0, 0))[0] == queued_before
    assert page.request.get(f"{stack.url}/api/photos").json()["total"] == photos_before
    log = (stack.logs / "web-app.log").read_text()
    assert log.count("web.request.refused") >= 3
