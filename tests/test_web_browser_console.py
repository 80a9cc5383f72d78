"""The operator console's pages in Chromium: Failed, Queues, Workers, a failed photo's Retry, "Failed (recorded)".

A real gearmand, two real gearworker processes (named ``host-a`` and ``host-b``) that record failed
jobs in an sqlite store, and the web app (its own process) given that store and host-a's metrics
address. Tests that need a store of their own (100,000 records, the actions) or a restart start
another web app on the same gearmand.

The console's main promise is pinned by
``test_the_failed_page_lists_unique_ids_and_errors_and_a_rows_retry_is_recorded_anew``: the Failed
page lists each failed job's unique id and error, and its row's Retry resubmits it; the worker
fails it again and records it anew.

With ``GW_SCREENSHOTS=docs/images`` the tests write the docs' pictures of each page there
(light theme, 1,280 px): ``console-failed.png``, ``console-failed-record.png``, ``console-queues.png``,
``console-workers.png``.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gearmand import Gearmand, free_port
from playwright.sync_api import Browser, Page, expect
from support import ROOT, photo_jpeg, wait_until
from test_web_browser import LOGS, SHOTS, WAIT_MS, _start, _stop, browser, shot, start_web, wait_for_js
from test_web_browser_a11y import axe_problems

import gearworker
from gearworker.failed.store import SqliteStore

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # fixtures shared with test_web_browser

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
#: Records below failed from this moment on (2026-01-01T00:00:00Z), one every half second.
BASE = 1_767_225_600.0
GEARMAN = ["gearman", "-h", "127.0.0.1"]


@dataclass
class Console:
    gearmand: Gearmand
    url: str
    store: Path
    workers: dict[str, subprocess.Popen[bytes]]
    logs: Path


def submit(gearmand: Gearmand, function: str, payload: str, *, unique: str | None = None) -> str:
    """A background job through the command line; its handle."""
    cmd = [sys.executable, "-m", "gearworker", "submit", "-b", "--server", gearmand.address, function, payload]
    if unique:
        cmd[4:4] = ["-u", unique]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEARWORKER_")}
    return subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip()


def start_worker(gearmand: Gearmand, name: str, settings: Path, logs: Path, *extra: str) -> subprocess.Popen[bytes]:
    return _start(
        [
            sys.executable,
            "-m",
            "gearworker",
            "--settings",
            str(settings),
            "--server",
            gearmand.address,
            "--handlers",
            "handlers",
            "--processes",
            "1",
            "--client-id",
            name,
            *extra,
        ],
        logs / f"web-console-worker-{name}.log",
    )


def settings_file(path: Path, **values: Any) -> Path:
    path.write_text("".join(f"{k.upper()} = {v!r}\n" for k, v in values.items()))
    return path


def demo_hour(storage: Path, server: str) -> None:
    """A believable past hour in the history file, for the docs' picture of the Queues page.

    ``resize`` jobs pile up for ten minutes and drain; the app was stopped for three minutes (a gap).
    Written through :class:`History` itself, on a thread of its own (Playwright's loop owns this one).
    """
    import asyncio
    import math
    import threading

    from gearworker.web.history import HISTORY_FILE, History

    async def write() -> None:
        history = History(storage / HISTORY_FILE)
        now = int(time.time())
        for t in range(now - 3540, now - 30):
            if now - 1500 <= t < now - 1320:
                continue  # the app was not running
            age = (now - t) / 60  # minutes ago
            burst = max(0.0, math.sin(math.pi * (50 - age) / 14)) if 36 <= age <= 50 else 0.0
            waiting = round(80 * burst + 3 * max(0.0, math.sin(t / 97)))
            running = 2 if waiting else (1 if t % 7 == 0 else 0)
            functions = [{"function": "resize", "queued": waiting + running, "running": running, "workers": 2}]
            history.record(t, [{"address": server, "ok": True, "functions": functions}])
        await history.close()

    thread = threading.Thread(target=lambda: asyncio.run(write()))
    thread.start()
    thread.join()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    logs = LOGS
    logs.mkdir(parents=True, exist_ok=True)
    folder = tmp_path_factory.mktemp("console")
    store = folder / "failed.db"
    worker_settings = settings_file(folder / "worker.py", failed_jobs=str(store))
    metrics = f"127.0.0.1:{free_port()}"
    g = Gearmand().start()
    workers: dict[str, subprocess.Popen[bytes]] = {}
    web = None
    try:
        workers["host-a"] = start_worker(g, "host-a", worker_settings, logs, "--metrics", metrics)
        workers["host-b"] = start_worker(g, "host-b", worker_settings, logs)
        wait_until(
            lambda: all(g.status().get(f, (0, 0, 0))[2] >= 2 for f in ("fail", "slow", "resize", "echo")),
            60,
            what="both workers to register",
            interval=0.1,
        )
        web_settings = settings_file(folder / "web.py", failed_jobs=str(store), web_worker_metrics=[metrics])
        demo_hour(folder / "photos", g.address)
        web, url = start_web(
            [g.address], logs / "web-console.log", "--settings", str(web_settings), storage=folder / "photos"
        )
        yield Console(g, url, store, workers, logs)
    finally:
        if web is not None:
            _stop(web)
        for w in workers.values():
            _stop(w)
        g.stop()


@contextmanager
def opened(browser: Browser, **options: Any) -> Iterator[Page]:
    """A page in a context of its own (UTC, en-US); fails the test on any console error but a 4xx."""
    context = browser.new_context(**{"viewport": DESKTOP, "timezone_id": "UTC", "locale": "en-US", **options})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield page
    finally:
        page.goto("about:blank")  # the page's requests end before its app may stop
        context.close()
    assert [e for e in errors if "status of 4" not in e] == []


def row_of(page: Page, text: str) -> Any:
    return page.locator("#failed-rows tr", has_text=text)


def confirm(page: Page, title: str | re.Pattern[str], button: str) -> None:
    """The confirm dialog is open with ``title``; press its ``button``."""
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text(title)
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).to_be_hidden()


def fill_store(path: Path, rows: list[tuple[Any, ...]]) -> None:
    """Records straight into an sqlite store (the workers' schema), in one executemany."""
    SqliteStore(path, workload_limit=1 << 20)
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO failed_jobs (failed_at, function, handle, unique_id, server, error, attempts, workload, "
            "workload_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def record(i: int, function: str, error: str, unique: str | None = None) -> tuple[Any, ...]:
    body = b'{"order": %d}' % i
    return (BASE + i * 0.5, function, f"H:gm:{i}", unique or f"order-{i}", "gm:4730", error, 3, body, len(body))


def stored(path: Path, where: str = "1", *args: Any) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM failed_jobs WHERE {where}", args).fetchone()[0])


# -- Failed (recorded) on the Jobs page, and a failed job's retry from its record --------------------


def test_a_failed_background_job_reads_failed_recorded_and_opens_its_record(console: Console, browser: Browser) -> None:
    with opened(browser) as page:
        page.goto(f"{console.url}/#jobs")
        expect(page.locator("#function option[value=fail]")).to_have_count(1)
        page.select_option("#function", "fail")
        page.fill("#payload", "recorded")
        page.check("input[name=mode][value=background]")
        page.click("#submit")
        row = page.locator("#job-rows tr", has_text="background")
        expect(row.locator(".badge")).to_have_text("Failed (recorded)", timeout=WAIT_MS)
        expect(row.locator(".result.error")).to_have_text(
            "The job failed: RuntimeError: fail was asked to fail (8 bytes)"
        )
        row.get_by_role("button", name=re.compile("^Open the failed-job record")).click()
        detail = page.locator("#failed-detail")
        expect(detail).to_be_visible()
        expect(page.locator("#tab-failed")).to_have_attribute("aria-selected", "true")
        expect(detail.locator("#fd-error")).to_have_text("RuntimeError: fail was asked to fail (8 bytes)")
        expect(detail.locator("#fd-workload")).to_have_text("recorded")
        page.keyboard.press("Escape")
        expect(detail).to_be_hidden()
        assert page.evaluate("document.getElementById('page-failed').contains(document.activeElement)")


def test_the_failed_page_lists_unique_ids_and_errors_and_a_rows_retry_is_recorded_anew(
    console: Console, browser: Browser
) -> None:
    """From the page: the list shows the job; its Retry runs it again; it is recorded anew."""
    handle = submit(console.gearmand, "fail", "pay order 7", unique="order-7")
    with opened(browser) as page:
        page.goto(f"{console.url}/#failed")
        row = row_of(page, "order-7")
        expect(row).to_have_count(1, timeout=WAIT_MS)  # the first page follows new records every 5 s
        expect(row.locator(".unique")).to_have_text("order-7")
        expect(row.locator(".err .result")).to_have_text("RuntimeError: fail was asked to fail (11 bytes)")
        first = row.get_attribute("data-id")
        row.get_by_role("button", name="Retry order-7 (fail)").click()
        confirm(page, "Retry this job?", "Retry")
        expect(page.locator("#failed-message")).to_have_text("Retried 1 job: submitted again as a background job.")
        anew = page.locator("#failed-rows tr", has_text="order-7")
        expect(anew).to_have_count(1, timeout=WAIT_MS)
        expect(anew).not_to_have_attribute("data-id", first or "", timeout=WAIT_MS)  # a new record, the old one gone
        expect(anew.locator(".err .result")).to_have_text("RuntimeError: fail was asked to fail (11 bytes)")
        assert stored(console.store, "unique_id = 'order-7'") == 1
        assert stored(console.store, "unique_id = 'order-7' AND handle != ?", handle) == 1  # the resubmitted job
        log = console.logs / "web-console.log"
        wait_until(lambda: '"event":"web.failed.retried"' in log.read_text(), 10, what="the retry logged")


# -- 100,000 records ------------------------------------------------------------------------------------

FUNCTIONS = [f"fn{i}" for i in range(10)]
ERRORS = ["ValueError: card declined", "RuntimeError: payment service unreachable", "KeyError: 'customer'"]
LARGE = 100_000

# Click the Failed tab of a page that has not shown it yet; resolve with the milliseconds until it shows
# 50 rows (null after 10 s).
CLICK_TO_ROWS = """() => new Promise((resolve) => {
    const body = document.getElementById("failed-rows");
    const full = () => body.querySelectorAll("tr[data-id]").length === 50;
    const t0 = performance.now();
    const end = (took) => { seen.disconnect(); clearTimeout(timer); resolve(took); };
    const seen = new MutationObserver(() => { if (full()) end(performance.now() - t0); });
    const timer = setTimeout(() => end(null), 10000);
    seen.observe(body, {childList: true});
    document.getElementById("tab-failed").click();
})"""


# Fill the filter's function and text, press Filter; resolve with the milliseconds until the summary changes.
FILTER_TO_ROWS = """([fn, q]) => new Promise((resolve) => {
    const summary = document.getElementById("failed-summary"), before = summary.textContent;
    document.getElementById("f-function").value = fn;
    document.getElementById("f-q").value = q;
    const t0 = performance.now();
    const end = (took) => { seen.disconnect(); clearTimeout(timer); resolve(took); };
    const seen = new MutationObserver(() => { if (summary.textContent !== before) end(performance.now() - t0); });
    const timer = setTimeout(() => end(null), 10000);
    seen.observe(summary, {childList: true, characterData: true, subtree: true});
    document.getElementById("f-apply").click();
})"""


@pytest.fixture(scope="module")
def large(console: Console, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A web app over a store of 100,000 records (10 functions, 3 errors), written before it starts."""
    folder = tmp_path_factory.mktemp("large")
    store = folder / "failed.db"
    fill_store(store, [record(i, FUNCTIONS[i % 10], f"{ERRORS[i % 3]} (order {i})") for i in range(LARGE)])
    settings = settings_file(folder / "web.py", failed_jobs=str(store))
    web, url = start_web(
        [console.gearmand.address],
        console.logs / "web-console-large.log",
        "--settings",
        str(settings),
        storage=folder / "photos",
    )
    yield url
    _stop(web)


@pytest.mark.timeout(300)
def test_100000_failed_records_page_and_filter_within_3_s(large: str, browser: Browser) -> None:
    with opened(browser) as page:
        took = []
        for _ in range(5):
            page.goto("about:blank")  # a new document each time: nothing of the last run is shown
            page.goto(f"{large}/#photos")
            wait_for_js(page, "document.body.dataset.synced !== undefined")
            took.append(page.evaluate(CLICK_TO_ROWS))
        assert None not in took, took
        print(
            f"Failed page, 100,000 records, click to 50 rows: median {statistics.median(took):.0f} ms, "
            f"all {[round(t) for t in took]} ms"
        )
        assert max(took) < 3000, took
        expect(page.locator("#failed-summary")).to_have_text("100,000 failed jobs")
        rows = page.locator("#failed-rows tr[data-id]")
        expect(rows.first.locator(".unique")).to_have_text(f"order-{LARGE - 1}")  # newest first
        expect(page.locator("#failed-page")).to_have_text("1\N{EN DASH}50 of 100,000")

        page.get_by_role("button", name="Older").click()
        expect(page.locator("#failed-page")).to_have_text("51\N{EN DASH}100 of 100,000", timeout=3000)
        expect(rows.first.locator(".unique")).to_have_text(f"order-{LARGE - 51}")
        expect(rows).to_have_count(50)
        page.get_by_role("button", name="Older").click()
        expect(rows.first.locator(".unique")).to_have_text(f"order-{LARGE - 101}", timeout=3000)
        page.get_by_role("button", name="Newer").click()
        expect(rows.first.locator(".unique")).to_have_text(f"order-{LARGE - 51}", timeout=3000)
        page.get_by_role("button", name="Newest").click()
        expect(rows.first.locator(".unique")).to_have_text(f"order-{LARGE - 1}", timeout=3000)

        filtered = {
            name: [page.evaluate(FILTER_TO_ROWS, args) for args in (arguments, ["", ""]) * 3][::2]
            for name, arguments in (("function", ["fn3", ""]), ("text", ["", "(order 12345)"]))
        }
        print("filtered, press to summary:", {k: f"median {statistics.median(v):.0f} ms" for k, v in filtered.items()})
        assert all(t is not None and t < 3000 for v in filtered.values() for t in v), filtered

        # By function: every tenth record.
        page.fill("#f-function", "fn3")
        page.click("#f-apply")
        expect(page.locator("#failed-summary")).to_have_text("10,000 failed jobs match function “fn3”", timeout=3000)
        expect(rows.first.locator(".unique")).to_have_text("order-99993")
        assert set(rows.locator(".fn").all_inner_texts()) == {"fn3"}
        # By text in the error: one record.
        page.fill("#f-function", "")
        page.fill("#f-q", "(order 12345)")
        page.click("#f-apply")
        expect(page.locator("#failed-summary")).to_have_text("1 failed job matches text “(order 12345)”", timeout=3000)
        expect(rows).to_have_count(1)
        expect(rows.locator(".unique")).to_have_text("order-12345")
        # By text in the unique id, and a function: of order-1234 and order-12340 ... order-12349, those of fn4.
        page.fill("#f-q", "order-1234")
        page.fill("#f-function", "fn4")
        page.click("#f-apply")
        expect(rows.locator(".unique")).to_have_text(["order-12344", "order-1234"], timeout=3000)
        # By time: records failed from 00:10:00 to before 00:11:00 (UTC, the browser's zone here) are 120.
        page.click("#f-clear")
        expect(page.locator("#failed-summary")).to_have_text("100,000 failed jobs", timeout=3000)
        page.fill("#f-since", "2026-01-01T00:10:00")
        page.fill("#f-until", "2026-01-01T00:11:00")
        page.click("#f-apply")
        expect(page.locator("#failed-summary")).to_have_text(
            re.compile(r"^120 failed jobs match from 2026-01-01 00:10:00, before 2026-01-01 00:11:00$"), timeout=3000
        )
        expect(rows.first.locator(".when")).to_have_text("2026-01-01 00:10:59")
        expect(page.locator("#failed-page")).to_have_text("1\N{EN DASH}50 of 120")


# -- Retry and delete from the page -----------------------------------------------------------------------


@pytest.fixture
def actions(console: Console, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A web app over a store of its own: 10 records of ``audit`` and 6 of ``parked`` (no worker serves it)."""
    store = tmp_path / "failed.db"
    fill_store(
        store,
        [record(i, "audit", f"ValueError: audit failed ({i})", f"audit-{i}") for i in range(10)]
        + [record(100 + i, "parked", "RuntimeError: parked", f"parked-{i}") for i in range(6)],
    )
    settings = settings_file(tmp_path / "web.py", failed_jobs=str(store))
    web, url = start_web(
        [console.gearmand.address], tmp_path / "web.log", "--settings", str(settings), storage=tmp_path / "photos"
    )
    yield url, store
    _stop(web)


def test_retry_and_delete_one_a_selection_and_all_matching_after_confirming(
    console: Console, browser: Browser, actions: tuple[str, Path]
) -> None:
    url, store = actions
    waiting = lambda: console.gearmand.status().get("parked", (0, 0, 0))[0]  # noqa: E731
    with opened(browser) as page:
        page.goto(f"{url}/#failed")
        expect(page.locator("#failed-summary")).to_have_text("16 failed jobs")

        # One: Cancel leaves it, and the focus goes back to its button; then confirmed, it goes.
        delete = row_of(page, "audit-9").get_by_role("button", name="Delete audit-9 (audit)")
        delete.click()
        confirm(page, "Delete this record?", "Cancel")
        expect(delete).to_be_focused()
        assert stored(store, "function = 'audit'") == 10
        delete.click()
        confirm(page, "Delete this record?", "Delete")
        expect(row_of(page, "audit-9")).to_have_count(0)
        expect(page.locator("#failed-message")).to_have_text("Deleted 1 failed job.")
        assert stored(store, "function = 'audit'") == 9
        assert page.evaluate("document.activeElement !== document.body")

        # A selection of three.
        for i in (8, 7, 6):
            row_of(page, f"audit-{i}").get_by_role("checkbox").check()
        page.get_by_role("button", name="Delete 3 selected").click()
        confirm(page, "Delete 3 failed jobs?", "Delete 3")
        expect(page.locator("#failed-message")).to_have_text("Deleted 3 failed jobs.")
        expect(page.locator("#failed-rows tr[data-id]")).to_have_count(12)
        assert stored(store, "function = 'audit'") == 6
        expect(page.get_by_role("button", name="Delete selected")).to_have_attribute("aria-disabled", "true")

        # Everything matching a filter.
        page.fill("#f-q", "audit failed")
        page.click("#f-apply")
        expect(page.locator("#failed-summary")).to_have_text("6 failed jobs match text “audit failed”")
        page.get_by_role("button", name="Delete all matching").click()
        confirm(page, "Delete 6 failed jobs matching text “audit failed”?", "Delete all")
        expect(page.locator("#failed-message")).to_have_text("Deleted 6 failed jobs.")
        expect(page.locator("#failed-rows")).to_have_text("No failed job matches this filter.")
        assert stored(store, "function = 'audit'") == 0

        # Retry: one, a selection, then all matching: each goes to gearmand's queue (no worker has "parked").
        page.click("#f-clear")
        expect(page.locator("#failed-summary")).to_have_text("6 failed jobs")
        row_of(page, "parked-5").get_by_role("button", name="Retry parked-5 (parked)").click()
        confirm(page, "Retry this job?", "Retry")
        expect(row_of(page, "parked-5")).to_have_count(0)
        wait_until(lambda: waiting() == 1, 10, what="one parked job queued")
        for i in (4, 3):
            row_of(page, f"parked-{i}").get_by_role("checkbox").check()
        page.get_by_role("button", name="Retry 2 selected").click()
        confirm(page, "Retry 2 failed jobs?", "Retry 2")
        expect(page.locator("#failed-message")).to_have_text("Retried 2 jobs: submitted again as background jobs.")
        wait_until(lambda: waiting() == 3, 10, what="three parked jobs queued")
        page.fill("#f-function", "parked")
        page.click("#f-apply")
        expect(page.locator("#failed-summary")).to_have_text("3 failed jobs match function “parked”")
        page.get_by_role("button", name="Retry all matching").click()
        confirm(page, "Retry 3 failed jobs matching function “parked”?", "Retry all")
        expect(page.locator("#failed-message")).to_have_text("Retried 3 jobs: submitted again as background jobs.")
        wait_until(lambda: waiting() == 6, 10, what="six parked jobs queued")
        assert stored(store) == 0
        log = store.parent / "web.log"  # written in batches: the last line may come a moment later
        wait_until(
            lambda: (
                (log.read_text().count('"web.failed.deleted"'), log.read_text().count('"web.failed.retried"')) == (3, 3)
            ),
            10,
            what="each retry and delete logged",
        )


def test_the_confirm_dialog_keeps_the_focus_inside_and_escape_gives_it_back(
    console: Console, browser: Browser, actions: tuple[str, Path]
) -> None:
    url, store = actions
    with opened(browser) as page:
        page.goto(f"{url}/#failed")
        delete = row_of(page, "audit-3").get_by_role("button", name="Delete audit-3 (audit)")
        delete.focus()
        page.keyboard.press("Enter")
        dialog = page.locator("#confirm")
        expect(dialog).to_be_visible()
        expect(page.locator("#confirm-cancel")).to_be_focused()  # a delete: the focus starts on Cancel
        for _ in range(4):
            page.keyboard.press("Tab")
            assert page.evaluate("document.getElementById('confirm').contains(document.activeElement)")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(delete).to_be_focused()
        assert stored(store, "unique_id = 'audit-3'") == 1
        # The record's own dialog, by keyboard: Details, then its Delete asks again, on top.
        row_of(page, "audit-3").get_by_role("button", name="Details audit-3 (audit)").press("Enter")
        detail = page.locator("#failed-detail")
        expect(detail).to_be_visible()
        expect(page.locator("#fd-close")).to_be_focused()
        expect(detail.locator("#fd-workload")).to_have_text('{"order": 3}')
        download = page.locator("#fd-download")
        with page.expect_download() as info:
            download.click()
        assert Path(info.value.path()).read_bytes() == b'{"order": 3}'
        detail.get_by_role("button", name="Delete", exact=True).press("Enter")
        confirm(page, "Delete this record?", "Delete")
        expect(detail).to_be_hidden()
        expect(row_of(page, "audit-3")).to_have_count(0)
        assert stored(store, "unique_id = 'audit-3'") == 0
        assert page.evaluate("document.activeElement !== document.body")


# -- Queues ----------------------------------------------------------------------------------------------


def test_queue_charts_are_drawn_from_the_history_kept_across_a_restart(
    console: Console, browser: Browser, tmp_path: Path
) -> None:
    """Three jobs wait for a function no worker has; the app restarts; the chart still shows them, with a gap."""
    for i in range(3):
        submit(console.gearmand, "history_fn", "x", unique=f"history-{i}")
    port, storage, log = free_port(), tmp_path / "photos", tmp_path / "web.log"
    web, url = start_web([console.gearmand.address], log, port=port, storage=storage)
    try:
        with opened(browser) as page:
            page.goto(f"{url}/#queues")
            row = page.locator('#queue-rows tr[data-function="history_fn"]')
            expect(row.locator("td").nth(1)).to_have_text("3")  # waiting
            expect(row.locator("td").nth(2)).to_have_text("0")  # running
            expect(row.locator("td").nth(3)).to_have_text("0")  # workers
            expect(row).to_have_class(re.compile("unserved"))
            time.sleep(3)  # a few samples, one a second
        _stop(web)  # writes what it still holds
        time.sleep(1.5)  # seconds with no sample: a gap
        web, url = start_web([console.gearmand.address], log, port=port, storage=storage)
        with opened(browser) as page:
            page.goto(f"{url}/#queues")
            expect(page.locator("#chart-function option[value=history_fn]")).to_have_count(1)
            page.select_option("#chart-function", "history_fn")
            chart = page.locator("#chart-jobs svg")
            expect(chart).to_have_attribute(
                "aria-label", re.compile(r"^Jobs waiting and running, last hour: Waiting now 3, at most 3")
            )
            assert int(chart.get_attribute("data-points") or 0) >= 3
            expect(chart).to_have_attribute("data-pieces", re.compile(r"^[2-9]"), timeout=20_000)  # before and after
            assert (chart.locator("path.series-waiting").get_attribute("d") or "").count("M") >= 2
            expect(page.locator("#chart-workers svg")).to_have_attribute("aria-label", re.compile("Workers now 0"))
            page.get_by_label("Last day").check()
            expect(chart).to_have_attribute(
                "aria-label", re.compile(r"^Jobs waiting and running, last day, per minute: ")
            )
            assert int(chart.get_attribute("data-points") or 0) >= 1
    finally:
        _stop(web)


def test_the_queues_page_shows_waiting_running_rates_and_run_times_per_function(
    console: Console, browser: Browser
) -> None:
    """With host-a's metrics given to the app: done per second and run times once its echo jobs are counted."""
    with opened(browser) as page:
        page.goto(f"{console.url}/#queues")
        submit(console.gearmand, "fail", "counted")
        for i in range(40):  # foreground: their workers' metrics count them as they end
            subprocess.run(
                [*GEARMAN, "-p", str(console.gearmand.port), "-f", "echo", str(i)], check=True, capture_output=True
            )
        submit(console.gearmand, "slow", "6")
        row = page.locator('#queue-rows tr[data-function="slow"]')
        expect(row.locator("td").nth(2)).to_have_text("1", timeout=WAIT_MS)  # running
        expect(row.locator("td").nth(1)).to_have_text("0")  # not waiting: gearmand's own count says 1 queued
        echo = page.locator('#queue-rows tr[data-function="echo"]')
        expect(echo.locator("td").nth(5)).not_to_have_text(re.compile(r"^(—|0\.00)$"), timeout=WAIT_MS)  # done/s
        expect(echo.locator("td").nth(7)).to_have_text(re.compile(r"ms$"))  # p50
        expect(page.locator("#queue-note")).to_contain_text("from the metrics of 1 of 1 worker")
        fail = page.locator('#queue-rows tr[data-function="fail"] a.to-failed')
        expect(fail).to_have_count(1, timeout=WAIT_MS)
        wait_for_js(page, "document.querySelector('#chart-jobs svg') !== null")
        shot(page, "console-queues")
        fail.click()  # the failed records of "fail": the Failed page filtered by it
        expect(page.locator("#failed-summary")).to_have_text(re.compile(r"failed jobs? match(es)? function “fail”$"))
        page.goto(f"{console.url}/#queues")
        page.select_option("#queue-server", console.gearmand.address)
        expect(page.locator("#queue-table")).to_have_class(re.compile("per-server"))
        expect(page.locator("#queue-table th", has_text="Failed records")).to_be_hidden()


# -- Workers ---------------------------------------------------------------------------------------------


def test_the_workers_page_groups_worker_processes_by_host_with_pid_and_version(
    console: Console, browser: Browser
) -> None:
    with opened(browser) as page:
        page.goto(f"{console.url}/#workers")
        for name, proc in console.workers.items():
            host = page.locator(f'section.host[data-host="{name}"]')
            expect(host.locator("h2")).to_have_text(name)
            process = host.locator(f'tr[data-pid="{proc.pid}"]')
            expect(process.locator(".proc")).to_have_text(f"pid {proc.pid}")
            expect(process.locator("td").nth(1)).to_have_text(f"gearworker {gearworker.__version__}")
            expect(process.locator("td").nth(2)).to_contain_text("fail")
        expect(page.locator("#workers-summary")).to_contain_text("2 hosts · 2 worker processes")
        shot(page, "console-workers")


# -- Photos and Servers ----------------------------------------------------------------------------------


def test_a_failed_photo_is_resized_again_from_its_original_by_its_retry_button(
    console: Console, browser: Browser, tmp_path: Path
) -> None:
    from gearworker.web.photos import Photo, new_id
    from gearworker.web.storage import PhotoStore

    storage = tmp_path / "photos"
    image = io.BytesIO(photo_jpeg(900, 600, fill=(40, 120, 200), quality=80))
    photo = Photo(
        id=new_id(),
        key="",
        name="cut-off.jpg",
        upload_bytes=len(image.getvalue()),
        state="failed",
        error="The connection to the job server was lost while the job ran.",
    )
    PhotoStore(storage).add(photo, image)  # a resize that failed (gearmand restarted mid-job): its original kept
    web, url = start_web([console.gearmand.address], tmp_path / "web.log", storage=storage)
    try:
        with opened(browser) as page:
            page.goto(f"{url}/#photos")
            card = page.locator(f'.photo[data-photo="{photo.id}"]')
            expect(card).to_have_attribute("data-state", "failed")
            retry = card.get_by_role("button", name="Retry cut-off.jpg")
            retry.focus()
            page.keyboard.press("Enter")
            expect(card).to_have_attribute("data-state", "done", timeout=WAIT_MS)
            expect(card.locator(".copy")).to_have_count(3)  # 900 px: the original size, 512 and 256
            expect(retry).to_be_hidden()
            assert page.evaluate("document.activeElement !== document.body")  # the card keeps it
    finally:
        _stop(web)


def test_the_servers_page_counts_a_running_job_as_running_not_waiting(console: Console, browser: Browser) -> None:
    submit(console.gearmand, "slow", "5")
    with opened(browser) as page:
        page.goto(f"{console.url}/#servers")
        row = page.locator(f'section.server[data-address="{console.gearmand.address}"] tr[data-function="slow"]')
        expect(page.locator("section.server th").nth(1)).to_have_text("Waiting")
        expect(row.locator("td").nth(2)).to_have_text("1", timeout=WAIT_MS)  # running
        expect(row.locator("td").nth(1)).to_have_text("0")  # waiting (gearmand's total says 1)


# -- The pages for everyone: axe-core, phones, the docs' pictures -----------------------------------------


def fill_failed(console: Console) -> None:
    """Failed records of several kinds (once per store): text and binary workloads, a long error, a long unique id."""
    if stored(console.store, "unique_id = 'order-42'"):
        return
    submit(console.gearmand, "fail", '{"order": 42, "customer": "c-17"}', unique="order-42")
    submit(console.gearmand, "fail", "x" * 300, unique="a-long-unique-id-of-a-job-from-a-batch-import-2026-01-01")
    with sqlite3.connect(console.store) as db:
        db.execute(
            "INSERT INTO failed_jobs (failed_at, function, handle, unique_id, server, error, attempts, workload, "
            "workload_size) VALUES (?, 'resize', 'H:gm:9', 'photo-9', ?, ?, 3, ?, 64)",
            (
                time.time(),
                console.gearmand.address,
                "ImageError: not an image we can read " + "(detail) " * 40,
                b"\xff\xd8\xff\xe0" + bytes(range(28)),
            ),
        )
    wait_until(lambda: stored(console.store, "unique_id = 'order-42'") >= 1, 20, what="the record of order-42")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_or_critical_axe_violation_on_the_console_pages(
    console: Console, browser: Browser, scheme: str
) -> None:
    """axe-core on Failed (the list, a record, a confirm dialog), Queues and Workers, 1,280 and 390 px.

    At 390 px nothing scrolls sideways on any of them.
    """
    fill_failed(console)
    found: dict[str, list[str]] = {}
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        with opened(browser, viewport=viewport, color_scheme=scheme) as page:
            page.goto(f"{console.url}/#failed")
            expect(row_of(page, "order-42")).to_have_count(1, timeout=WAIT_MS)
            axe_problems(page, f"failed/{name}/{scheme}", found)
            if (name, scheme) == ("desktop", "light"):
                shot(page, "console-failed")
            wide(page, viewport)
            row_of(page, "photo-9").get_by_role("button", name="Details photo-9 (resize)").click()
            expect(page.locator("#fd-workload")).to_contain_text("ff d8 ff e0")
            axe_problems(page, f"failed-record/{name}/{scheme}", found)
            if (name, scheme) == ("desktop", "light"):
                shot(page, "console-failed-record")
            wide(page, viewport)
            page.locator("#fd-delete").click()
            expect(page.locator("#confirm")).to_be_visible()
            axe_problems(page, f"failed-confirm/{name}/{scheme}", found)
            page.keyboard.press("Escape")
            page.keyboard.press("Escape")
            expect(page.locator("#failed-detail")).to_be_hidden()

            page.goto(f"{console.url}/#queues")
            wait_for_js(page, "document.querySelector('#chart-jobs svg') !== null")
            expect(page.locator('#queue-rows tr[data-function="fail"]')).to_have_count(1)
            axe_problems(page, f"queues/{name}/{scheme}", found)
            wide(page, viewport)
            page.goto(f"{console.url}/#workers")
            expect(page.locator("section.host")).to_have_count(2)
            axe_problems(page, f"workers/{name}/{scheme}", found)
            wide(page, viewport)
            if name == "phone":
                page.screenshot(path=str(SHOTS / f"console-workers-phone-{scheme}.png"), full_page=True)
    print(
        f"axe-core, console pages, {scheme} theme:",
        {impact: len(items) for impact, items in found.items()} or "no violations",
    )
    for impact, items in found.items():
        for item in items:
            print(f"  {impact}: {item}")
    assert not found.get("serious") and not found.get("critical"), found


def wide(page: Page, viewport: dict[str, int]) -> None:
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= viewport["width"], f"{page.url} is {width} px wide at {viewport['width']} px"
