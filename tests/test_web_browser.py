"""The web app end to end in a real browser.

Debian's chromium, driven by Playwright, against a real gearmand, a real
gearworker (``python -m gearworker``) and the web app (``python -m gearworker
web``), each its own process.  Screenshots of every page go to
``artifacts/screenshots/``.

These use Playwright's sync API, which refuses to run inside an event loop:
the tests are plain functions (pytest-asyncio leaves them alone).
"""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gearmand import Gearmand, free_port, wait_for_port
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support import ROOT, wait_until

pytestmark = pytest.mark.browser

SHOTS = ROOT / "artifacts" / "screenshots"
LOGS = ROOT / "artifacts" / "logs"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Generous: the machine is shared and the pool processes start cold.
WAIT_MS = 60_000
expect.set_options(timeout=20_000)


def wait_for_js(page: Page, condition: str, timeout: float = WAIT_MS) -> None:
    """Wait until the JavaScript expression ``condition`` is true in ``page``.

    Playwright evaluates a wait_for_function string with ``eval``. Only its first check runs in the
    DevTools call, where the page's CSP does not apply; each later poll runs in the page, where the
    app's ``script-src 'self'`` forbids ``eval``. A function is evaluated once and then only called,
    so the condition is wrapped in one: a bare expression fails whenever its first check is false.
    """
    page.wait_for_function(f"() => ({condition})", timeout=timeout)


@dataclass
class Stack:
    gearmand: Gearmand
    url: str
    logs: Path


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEARWORKER_")}
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_web(
    servers: list[str], log: Path, *extra: str, port: int | None = None, storage: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    storage = storage or log.with_suffix(".photos")
    cmd = [sys.executable, "-m", "gearworker", "web", "--port", str(port), "--storage-root", str(storage), *extra]
    for server in servers:
        cmd += ["--server", server]
    proc = _start(cmd, log)
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        _stop(proc)
        raise RuntimeError(f"the web app did not start: {log.read_text()[-3000:]}") from None
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Logs where CI keeps them (artifacts/), fresh for each run.
    logs = LOGS
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("web-*.log"):
        old.unlink()
    g = Gearmand().start()
    worker_log = logs / "web-worker.log"
    worker = _start(
        [sys.executable, "-m", "gearworker", "--server", g.address, "--handlers", "handlers", "--processes", "2"],
        worker_log,
    )
    web = None
    try:
        functions = {"echo", "fail", "slow", "resize"}
        wait_until(
            lambda: functions <= {f for f, (_, _, workers) in g.status().items() if workers},
            60,
            what=f"workers to register {sorted(functions)}",
            interval=0.1,
            detail=lambda: worker_log.read_text()[-3000:],
            process=worker,
        )
        web, url = start_web([g.address], logs / "web-app.log", storage=tmp_path_factory.mktemp("photos"))
        yield Stack(g, url, logs)
    finally:
        if web is not None:
            _stop(web)
        _stop(worker)
        g.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        page.screenshot(path=str(SHOTS / f"failed-{request.node.name}.png"), full_page=True)
    context.close()
    # An error page or a CSP violation would show here; 4xx answers the test asked for are fine, and so
    # are the errors a test provokes on purpose (its console_errors marker names them).
    marker = request.node.get_closest_marker("console_errors")
    expected = marker.args if marker else ()
    assert [e for e in errors if "status of 4" not in e and not any(x in e for x in expected)] == []


def photo(path: Path, width: int, height: int, hue: int) -> Path:
    """A JPEG with some structure (gradient bands and a circle), so the copies look like photos."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(0, height, 8):
        shade = int(255 * y / height)
        draw.rectangle([0, y, width, y + 8], fill=((hue + shade) % 256, (120 + shade // 2) % 256, 255 - shade))
    r = min(width, height) // 4
    draw.ellipse([width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r], fill=(250, 245, 230))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    path.write_bytes(out.getvalue())
    return path


#: Where the docs' pictures of the pages go, when asked for (a folder, relative to the repository): not a
#: GEARWORKER_ name, since every gearworker process refuses an unknown setting in its environment.
DOC_SHOTS = os.environ.get("GW_SCREENSHOTS")


def shot(page: Page, name: str) -> None:
    """The page as the test left it, in artifacts/screenshots; also in ``$GW_SCREENSHOTS`` (the docs' pictures)."""
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    if DOC_SHOTS:
        folder = ROOT / DOC_SHOTS
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=False)


# -- The tests' own helper ---------------------------------------------------------


def test_wait_for_js_waits_for_a_condition_that_is_false_at_first_under_the_apps_csp(stack: Stack, page: Page) -> None:
    """The app forbids eval (CSP script-src 'self'); wait_for_js still polls until the condition holds.

    A bare wait_for_function expression fails here on its second check, as a slow thumbnail once made
    it fail in CI.
    """
    page.goto(f"{stack.url}/#photos")
    page.evaluate("setTimeout(() => { window.__later = 1 }, 300)")
    wait_for_js(page, "window.__later === 1", timeout=10_000)
    assert page.evaluate("window.__later") == 1


# -- Photos -----------------------------------------------------------------------


def test_two_photos_show_progress_to_100_and_their_thumbnails(stack: Stack, page: Page, tmp_path: Path) -> None:
    """Upload two photos: both bars climb through WORK_STATUS values to 100%, then the copies appear."""
    files = [photo(tmp_path / "harbour.jpg", 2400, 1600, 30), photo(tmp_path / "tårn.jpg", 1200, 1800, 140)]
    page.goto(f"{stack.url}/#photos")
    # Record every value each bar shows, to prove progress moved in steps and was not just set at the end.
    page.evaluate("""() => {
        window.__seen = {};
        new MutationObserver((records) => {
            for (const r of records) {
                const card = r.target.closest('.photo');
                if (!card || r.attributeName !== 'aria-valuenow') continue;
                (window.__seen[card.id] ||= []).push(Number(r.target.getAttribute('aria-valuenow')));
            }
        }).observe(document.getElementById('photo-list'), {attributes: true, subtree: true});
    }""")
    page.set_input_files("#file-input", [str(f) for f in files])
    cards = page.locator("#photo-list .photo").filter(has_text=re.compile("harbour.jpg|tårn.jpg"))
    expect(cards).to_have_count(2)
    expect(cards.and_(page.locator('[data-state="done"]'))).to_have_count(2, timeout=WAIT_MS)
    for i in range(2):
        card = cards.nth(i)
        expect(card.locator(".progress")).to_have_attribute("aria-valuenow", "100")
        expect(card.locator(".photo-state")).to_have_text("Done")
        expect(card.locator(".copy")).to_have_count(4)  # 2048/1024/512/256 px bounds; 2048 keeps the original
    seen = page.evaluate("window.__seen")
    assert len(seen) == 2
    for values in seen.values():
        assert values[-1] == 100
        assert any(0 < v < 100 for v in values), values  # at least one WORK_STATUS step before the end
    wait_for_js(page, "[...document.querySelectorAll('.copy img')].every(i => i.complete && i.naturalWidth > 0)")
    tower = page.locator(".photo", has_text="tårn.jpg")
    expect(tower.locator(".copy-meta .dim")).to_have_text(
        [f"{w} \N{MULTIPLICATION SIGN} {h} px" for w, h in ((1200, 1800), (683, 1024), (341, 512), (171, 256))]
    )
    with page.expect_download() as info:
        tower.get_by_role("link", name="Download").nth(1).click()
    download = info.value
    assert download.suggested_filename == "tårn-683x1024.jpg"  # a non-ASCII name survives the header
    assert Image.open(download.path()).size == (683, 1024)
    shot(page, "photos")


def test_a_photo_dropped_on_the_drop_zone_is_resized(stack: Stack, page: Page, tmp_path: Path) -> None:
    data = photo(tmp_path / "dropped.jpg", 800, 600, 60).read_bytes()
    page.goto(f"{stack.url}/#photos")
    page.evaluate(
        """(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"}));
        const zone = document.getElementById("drop");
        for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }
    }""",
        base64.b64encode(data).decode(),
    )
    card = page.locator(".photo", has_text="dropped.jpg")
    expect(card).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(card.locator(".copy")).to_have_count(3)  # 2048 and 1024 collapse into the 800 px original


def test_a_photo_list_read_while_queued_and_answered_after_done_does_not_undo_done(
    stack: Stack, page: Page, tmp_path: Path
) -> None:
    """The page's first photo list, held until the stream said "done", leaves the card done.

    CI once showed a card with its copies under a "Queued" badge: the list read at first contact
    had come back after the job ended. The views carry revisions, and the page keeps the newest.
    """
    held: list[Any] = []
    page.route("**/api/photos?offset=*", lambda route: held.append(route))
    page.goto(f"{stack.url}/#photos")
    with page.expect_response(lambda r: r.request.method == "POST" and "/api/photos?" in r.url) as upload:
        page.set_input_files("#file-input", str(photo(tmp_path / "late.jpg", 700, 500, 30)))
    queued = upload.value.json()  # the photo's view when it was queued: what a list read then would hold
    assert queued["state"] == "queued"
    card = page.locator(".photo", has_text="late.jpg")
    expect(card).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    assert len(held) == 1
    held[0].fulfill(json={"photos": [queued], "total": 1, "offset": 0, "limit": 20})
    wait_for_js(page, "document.body.dataset.synced !== undefined")
    expect(card).to_have_attribute("data-state", "done")
    expect(card.locator(".photo-state")).to_have_text("Done")
    assert card.locator(".progress").get_attribute("aria-valuenow") == "100"


def test_a_file_that_is_not_an_image_is_refused_in_plain_words(stack: Stack, page: Page, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo at all")
    page.goto(f"{stack.url}/#photos")
    page.set_input_files("#file-input", str(notes))
    card = page.locator("#photo-list .photo", has_text="notes.jpg")
    expect(card).to_have_attribute("data-state", "failed")
    expect(card.locator(".photo-detail")).to_have_text(
        "“notes.jpg” is not an image we can read (we take JPEG, PNG, WebP, GIF or TIFF)."
    )


def test_a_corrupt_image_shows_the_job_failed(stack: Stack, page: Page, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo(tmp_path / "ok.jpg", 400, 300, 0).read_bytes()[:300])
    page.goto(f"{stack.url}/#photos")
    page.set_input_files("#file-input", str(broken))
    card = page.locator("#photo-list .photo", has_text="broken.jpg")
    expect(card).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
    expect(card.locator(".photo-detail")).to_contain_text("The job failed: ")


# -- Jobs --------------------------------------------------------------------------


def test_jobs_form_submits_copies_in_parallel_and_shows_results(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.url}/#jobs")
    expect(page.locator("#function option[value=echo]")).to_have_count(1)  # the list comes from the servers
    page.select_option("#function", "echo")
    page.fill("#payload", "hello from the browser")
    page.fill("#copies", "3")
    page.click("#submit")
    done = page.locator('#job-rows tr[data-state="done"]')
    expect(done).to_have_count(3)
    expect(done.locator(".result")).to_have_text(["hello from the browser"] * 3)

    page.select_option("#function", "fail")
    page.fill("#copies", "1")
    page.fill("#payload", "x")
    page.click("#submit")
    failed = page.locator('#job-rows tr[data-state="failed"]')
    expect(failed.locator(".result.error")).to_have_text(
        "The job failed: RuntimeError: fail was asked to fail (1 bytes)"
    )
    expect(failed.locator(".warning")).to_have_count(0)  # the worker's warning repeats the reason: shown once

    page.select_option("#function", "slow")
    page.fill("#payload", "4")  # 4 s with progress each second: the 1 s status poll cannot miss it
    page.check("input[name=mode][value=background]")
    page.click("#submit")
    background = page.locator("#job-rows tr", has_text="background")
    expect(background.locator(".result").first).to_have_text(re.compile(r"^H:"))  # the handle, at once
    expect(background).to_have_attribute("data-state", "running")  # the status refreshes
    expect(background.locator("td").nth(4)).to_contain_text("/4")  # with the worker's progress
    expect(background).to_have_attribute("data-state", "finished", timeout=WAIT_MS)
    shot(page, "jobs")


def test_a_submit_answer_arriving_after_the_stream_said_done_leaves_the_row_done(stack: Stack, page: Page) -> None:
    """The form's answer (state "submitted"), held until the stream showed the job done, does not undo it."""
    held: list[tuple[Any, Any]] = []
    page.route("**/api/jobs?*", lambda route: held.append((route, route.fetch())))
    page.goto(f"{stack.url}/#jobs")
    expect(page.locator("#function option[value=echo]")).to_have_count(1)
    page.select_option("#function", "echo")
    page.fill("#payload", "late answer")
    page.click("#submit")
    row = page.locator("#job-rows tr", has_text="late answer")
    expect(row).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    route, answer = held[0]
    assert [j["state"] for j in answer.json()["jobs"]] == ["submitted"]
    route.fulfill(response=answer)
    expect(page.locator("#submit")).to_be_enabled()  # the page has read the answer
    expect(row).to_have_attribute("data-state", "done")


# Headless tabs are all "visible": make one look hidden (or shown) to the page's own code.
HIDE = """() => { Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
                  document.dispatchEvent(new Event("visibilitychange")); }"""
SHOW = """() => { Object.defineProperty(document, "visibilityState", {value: "visible", configurable: true});
                  document.dispatchEvent(new Event("visibilitychange")); }"""


def test_hidden_tabs_give_back_their_connection_and_catch_up_when_shown(stack: Stack, page: Page) -> None:
    """A hidden tab closes its live stream, so background tabs cannot use up the browser's six connections per host.

    Then, shown again, it catches up on what it missed.
    """
    tabs = [page.context.new_page() for _ in range(7)]
    for tab in tabs:
        tab.goto(f"{stack.url}/#jobs")
        expect(tab.locator("#function option[value=echo]")).to_have_count(1)
        tab.evaluate(HIDE)
    page.goto(f"{stack.url}/#jobs")
    expect(page.locator("#function option[value=reverse]")).to_have_count(1)
    page.select_option("#function", "reverse")
    page.fill("#payload", "stressed")
    page.click("#submit")
    expect(page.locator('#job-rows tr[data-state="done"] .result')).to_have_text("desserts")
    # The first tab submits while hidden (its stream closed), then is shown: the result is replayed.
    first = tabs[0]
    first.select_option("#function", "echo")
    first.fill("#payload", "while hidden")
    first.click("#submit")
    first.evaluate(SHOW)
    expect(first.locator('#job-rows tr[data-state="done"] .result')).to_have_text("while hidden")
    for tab in tabs:
        tab.close()


# -- Servers -------------------------------------------------------------------------


def test_servers_table_lists_the_functions_with_their_workers(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.url}/#servers")
    server = page.locator(f'section.server[data-address="{stack.gearmand.address}"]')
    expect(server.locator(".badge").first).to_have_text("up")
    for function in ("echo", "fail", "resize", "reverse", "slow", "slow_cpu"):
        row = server.locator(f'tr[data-function="{function}"]')
        expect(row.locator("td").nth(3)).to_have_text("1")  # one worker process serves each function
    shot(page, "servers")


# -- No server -------------------------------------------------------------------------


def test_no_job_server_is_said_in_plain_words(page: Page, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    web, url = start_web([dead], tmp_path / "web.log", "--max-upload-bytes", "20000")
    try:
        page.goto(f"{url}/#servers")
        expect(page.locator("#banner")).to_have_text(f"No job server reachable at {dead}.")
        expect(page.locator("section.server .server-error")).to_have_text(f"No job server reachable at {dead}.")
        shot(page, "servers-down")
        page.goto(f"{url}/#photos")
        page.set_input_files(
            "#file-input",
            [str(photo(tmp_path / "small.jpg", 120, 90, 0)), str(photo(tmp_path / "large.jpg", 1600, 1200, 0))],
        )
        small = page.locator(".photo", has_text="small.jpg")
        expect(small.locator(".photo-detail")).to_have_text(f"No job server reachable at {dead}.")
        large = page.locator(".photo", has_text="large.jpg")
        expect(large.locator(".photo-detail")).to_have_text("That file is too big: photos may be up to 19.5 KB.")
        shot(page, "photos-errors")
        # The server enforces the limit too, for a client that skips the page's check.
        answer = page.evaluate("""async () => {
            const body = new FormData();
            body.append("photo", new Blob([new Uint8Array(3_000_000).fill(255)], {type: "image/jpeg"}), "huge.jpg");
            const token = document.cookie.match(/gw_csrf=([^;]+)/)[1];  // what the page itself sends
            const r = await fetch("/api/photos?session=abcdefgh12345678",
                                  {method: "POST", body, headers: {"x-csrf-token": token}});
            return [r.status, (await r.json()).error];
        }""")
        assert answer == [413, "That file is too big: photos may be up to 19.5 KB."]
    finally:
        page.goto("about:blank")  # close the page's live streams before the app goes away
        _stop(web)
