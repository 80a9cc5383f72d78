"""What the web app keeps of past jobs and events: bounded per page, in total, and by age (in-process).

Job rows (for Cancel and re-sync) and the events a page may still catch up on
used to be kept for as long as the process lived: 100 pages of 100 jobs with
3 KB results held about 127 MiB for good.  ``bench/web_memory.py`` measures the
real server; these tests pin the bounds.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

from gearworker.web import events, jobs
from gearworker.web.app import create_app
from gearworker.web.events import Hub
from gearworker.web.jobs import JobBook, JobRow, result_view

RESULT = b"r" * 3000  # a 3 KB result, as in the measurement


def row(batch: str, i: int, *, ended: bool = True) -> JobRow:
    made = JobRow(id=f"{batch}-{i}", batch=batch, index=i, function="echo", background=False, priority="normal")
    if ended:
        made.result = result_view(RESULT)
        made.finish("done")
    return made


def session(n: int) -> str:
    return f"page{n:08d}"


# -- job rows ----------------------------------------------------------------------------------


def test_a_page_keeps_at_most_max_rows_job_rows_the_oldest_going_first() -> None:
    book = JobBook()
    for i in range(jobs.MAX_ROWS + 50):
        book.add(session(1), row("0badc0de-b1", i))
    assert book.get(session(1), "0badc0de-b1-0") is None
    assert book.get(session(1), f"0badc0de-b1-{jobs.MAX_ROWS + 49}") is not None
    assert len(book) == jobs.MAX_ROWS


def test_all_pages_together_keep_at_most_max_total_rows() -> None:
    book = JobBook()
    pages = jobs.MAX_TOTAL_ROWS // 100 + 20
    for p in range(pages):
        for i in range(100):
            book.add(session(p), row(f"0badc0de-b{p}", i))
    assert len(book) == jobs.MAX_TOTAL_ROWS
    assert book.get(session(0), "0badc0de-b0-0") is None  # the oldest page's rows went first
    assert book.get(session(pages - 1), f"0badc0de-b{pages - 1}-99") is not None


def test_ended_rows_are_forgotten_after_the_age_limit_and_running_ones_kept() -> None:
    book = JobBook()
    ended, running = row("0badc0de-b1", 1), row("0badc0de-b1", 2, ended=False)
    book.add(session(1), ended)
    book.add(session(1), running)
    book.trim(now=time.monotonic() + jobs.ENDED_ROW_TTL - 5)
    assert book.get(session(1), ended.id) is ended
    book.trim(now=time.monotonic() + jobs.ENDED_ROW_TTL + 1)
    assert book.get(session(1), ended.id) is None
    assert book.get(session(1), running.id) is running  # its task still runs; Cancel must find it
    assert len(book) == 1


async def test_an_ended_row_lets_go_of_the_clients_job_and_its_task() -> None:
    """What a kept row holds once its job ended is its view: not the client's job (its result bytes) nor its task."""
    r = row("0badc0de-b1", 1, ended=False)
    r.running, r.task = object(), asyncio.get_running_loop().create_task(asyncio.sleep(0))  # type: ignore[assignment]
    await r.task
    r.finish("done")
    assert (r.running, r.task) == (None, None)


# -- the events pages may catch up on ------------------------------------------------------------


def test_the_events_kept_for_all_pages_are_bounded_in_total_and_by_age() -> None:
    hub = Hub()
    for p in range(events.MAX_EVENTS // 100 + 20):
        for i in range(100):
            hub.publish(session(p), "job", {"id": i})
    for i in range(50):
        hub.broadcast("photo", {"id": i})
    assert hub.events == events.MAX_EVENTS
    hub.trim(now=time.monotonic() + events.EVENT_TTL + 1)
    assert hub.events == 0
    assert hub.sessions == 0  # nobody listens: the pages' sessions go with their events


def test_a_page_that_gets_many_events_holds_a_bounded_amount_of_memory() -> None:
    """Past its backlog, a page's oldest events go, and so does what the hub knew of their order."""
    hub = Hub()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(50_000):
            hub.publish(session(1), "job", i)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert hub.events == events.BACKLOG
    assert held < 2 * 2**20, f"{held / 2**20:.1f} MiB held for {hub.events} events"


async def test_a_page_back_after_its_events_were_dropped_is_told_to_sync_again() -> None:
    """Its cursor is older than events it never got: ``hello`` says ``resync``, and the page reloads its views."""
    hub = Hub(boot="0badc0de")
    hub.publish(session(1), "job", {"id": "r1"})
    for i in range(events.BACKLOG + 5):
        hub.publish(session(1), "job", {"id": i})
    hub.close()
    chunks = [c async for c in hub.stream(session(1), "0badc0de-1")]
    assert chunks[2] == 'event: hello\ndata: {"boot":"0badc0de","resync":true}\n\n'
    # A page whose session was forgotten altogether (away longer than the age limit) is told so too.
    hub = Hub(boot="0badc0de")
    hub.close()
    chunks = [c async for c in hub.stream(session(2), "0badc0de-7")]
    assert chunks[2] == 'event: hello\ndata: {"boot":"0badc0de","resync":true}\n\n'
    # A new page, and one that missed nothing, are not.
    hub = Hub(boot="0badc0de")
    hub.publish(session(3), "job", {"id": "r1"})
    hub.close()
    assert [c async for c in hub.stream(session(4))][2:] == []
    assert all("resync" not in c for c in [c async for c in hub.stream(session(3), "0badc0de-0")])


async def test_a_page_syncing_again_gets_its_known_rows_and_learns_which_were_forgotten(tmp_path: Path) -> None:
    app = create_app(["127.0.0.1:1"], storage_root=str(tmp_path / "photos"), connect_timeout=0.5)
    web = app.state.web
    token: dict[str, Any] = {"cookies": {"gw_csrf": "t"}, "headers": {"x-csrf-token": "t"}}
    kept = row(f"{web.hub.boot}-b1", 1)
    web.jobs.add(session(1), kept)
    forgotten = {**row(f"{web.hub.boot}-b1", 2, ended=False).view(), "state": "running"}
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", **token)
    async with client:
        r = await client.post(
            f"/api/jobs/resume?session={session(1)}", json={"jobs": [{**kept.view(), "state": "running"}, forgotten]}
        )
    await web.close()
    states = {j["id"]: (j["state"], j["error"]) for j in r.json()["jobs"]}
    assert states[kept.id] == ("done", None)
    assert states[forgotten["id"]] == ("unknown", jobs.FORGOTTEN)


# -- what it adds up to ---------------------------------------------------------------------------


def fill(book: JobBook, hub: Hub, pages: int, per_page: int) -> None:
    """What 100 pages of 100 echo jobs leave behind: each row and the views its page was sent."""
    for p in range(pages):
        for i in range(per_page):
            r = row(f"0badc0de-b{p}", i, ended=False)
            book.add(session(p), r)
            hub.publish(session(p), "job", r.view())
            r.state = "running"
            hub.publish(session(p), "job", r.view())
            r.result = result_view(RESULT + str(i).encode())
            r.finish("done")
            hub.publish(session(p), "job", r.view())


def test_100_pages_of_100_jobs_with_3_kb_results_hold_a_bounded_amount_of_memory_and_none_once_old() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        book, hub = JobBook(), Hub()
        before = tracemalloc.get_traced_memory()[0]
        fill(book, hub, 100, 100)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        later = time.monotonic() + max(jobs.ENDED_ROW_TTL, events.EVENT_TTL) + 1
        book.trim(now=later)
        hub.trim(now=later)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 40 * 2**20, f"{held / 2**20:.1f} MiB held for 10,000 jobs"
    assert after < 1 * 2**20, f"{after / 2**20:.1f} MiB still held once every job is past the age limit"
