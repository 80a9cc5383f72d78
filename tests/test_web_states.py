"""Honest job states in the web app, against real gearmands (httpx against the ASGI app).

A background job lost in a gearmand restart says "lost", not "finished"; a
job whose function has no worker says "waiting for a worker"; a foreground
job times out after ``web_job_timeout`` and can be cancelled.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gearmand import Gearmand
from starlette.applications import Starlette
from support import start_worker

from gearworker.web.app import ConsoleOptions, create_app
from gearworker.web.jobs import LOST_RESTART

SESSION = "statesession1"
TOKEN = "t0k3n"


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[tuple[Starlette, httpx.AsyncClient]] = []

    async def build(servers: list[str], **options: Any) -> tuple[Starlette, httpx.AsyncClient]:
        app = create_app(servers, storage_root=str(tmp_path / "photos"), connect_timeout=1.0, **options)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://localhost",
            cookies={"gw_csrf": TOKEN},
            headers={"x-csrf-token": TOKEN},
        )
        made.append((app, client))
        return app, client

    yield build
    for app, client in made:
        await client.aclose()
        await app.state.web.close()  # what the app's lifespan does at shutdown


async def wait_for_row(app: Starlette, check: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
    """Follow the page's event stream until a job row passes ``check``."""
    hub = app.state.web.hub

    async def follow() -> dict[str, Any]:
        async for chunk in hub.stream(SESSION, f"{hub.boot}-0"):
            if chunk.startswith("id: ") and "event: job" in chunk:
                row: dict[str, Any] = json.loads(chunk.split("data: ", 1)[1])
                if check(row):
                    return row
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(follow(), timeout)


async def submit(client: httpx.AsyncClient, **form: Any) -> dict[str, Any]:
    r = await client.post(f"/api/jobs?session={SESSION}", json=form)
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()["jobs"][0]
    return job


async def test_a_background_job_lost_in_a_gearmand_restart_is_lost_not_finished(make: Any, gearmand: Gearmand) -> None:
    app, client = await make([gearmand.address])
    job = await submit(client, function="nobody_serves_this", payload="x", background=True)
    await wait_for_row(app, lambda r: r["id"] == job["id"] and r["state"] == "waiting")  # queued, no worker
    await asyncio.to_thread(gearmand.restart)  # no persistent queue: the job is gone
    row = await wait_for_row(app, lambda r: r["id"] == job["id"] and r["state"] in ("lost", "finished"))
    assert (row["state"], row["error"]) == ("lost", LOST_RESTART)


async def test_a_background_job_that_ran_is_finished(make: Any, gearmand: Gearmand) -> None:
    worker = subprocess.Popen(
        [
            "gearman",
            "-h",
            "127.0.0.1",
            "-p",
            str(gearmand.port),
            "-w",
            "-f",
            "sleepy",
            "--",
            "sh",
            "-c",
            "sleep 1.5; cat",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        app, client = await make([gearmand.address])
        for _ in range(100):
            if gearmand.status().get("sleepy", (0, 0, 0))[2]:
                break
            await asyncio.sleep(0.05)
        job = await submit(client, function="sleepy", payload="x", background=True)
        row = await wait_for_row(app, lambda r: r["id"] == job["id"] and r["state"] in ("finished", "lost"))
        assert row["state"] == "finished" and row["error"] is None
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.parametrize("store_name", ["failed.db", "failed"])
async def test_a_background_job_that_failed_for_good_reads_failed_recorded_not_finished(
    make: Any, gearmand: Gearmand, tmp_path: Path, store_name: str
) -> None:
    """With the workers' failed-job store given to the app, a failed background job's row carries its record.

    A job that succeeded beside it still reads "finished": only a record of its handle makes a row failed.
    """
    store = tmp_path / store_name
    worker = start_worker(
        [gearmand.address],
        "--processes",
        "1",
        env={"GEARWORKER_FAILED_JOBS": str(store)},
        wait_for="fail",
        gearmand=gearmand,
    )
    try:
        app, client = await make([gearmand.address], console=ConsoleOptions(failed_jobs=str(store)))
        failing = await submit(client, function="fail", payload="abc", background=True)
        fine = await submit(client, function="echo", payload="abc", background=True)
        row = await wait_for_row(app, lambda r: r["id"] == failing["id"] and r["state"] == "failed")
        assert row["error"] == "The job failed: RuntimeError: fail was asked to fail (3 bytes)"
        record = row["record"]
        assert record is not None and record["attempts"] >= 1 and record["id"]
        listed = (await client.get("/api/failed", params={"handle": row["handle"]})).json()["records"]
        assert [r["id"] for r in listed] == [record["id"]]
        done = await wait_for_row(app, lambda r: r["id"] == fine["id"] and r["state"] in ("finished", "failed"))
        assert (done["state"], done["record"]) == ("finished", None)
    finally:
        worker.stop()


async def test_a_foreground_job_without_a_worker_waits_then_times_out_in_plain_words(
    make: Any, gearmand: Gearmand
) -> None:
    app, client = await make([gearmand.address], job_timeout=2.5)
    job = await submit(client, function="nobody_serves_this", payload="x")
    # The first check for workers can beat gearmand's JOB_CREATED: the row is then published again
    # once its handle is known (before that fix this wait timed out now and then).
    waiting = await wait_for_row(app, lambda r: r["id"] == job["id"] and r["state"] == "waiting" and r["handle"])
    assert waiting["handle"].startswith("H:")
    row = await wait_for_row(app, lambda r: r["id"] == job["id"] and r["state"] == "failed")
    assert row["error"] == "No worker took the job within 2.5 s: no worker has “nobody_serves_this”."


async def test_cancel_drops_a_queued_foreground_job(make: Any, gearmand: Gearmand) -> None:
    app, client = await make([gearmand.address])
    job = await submit(client, function="nobody_serves_this", payload="x")
    await wait_for_row(app, lambda r: r["id"] == job["id"] and r["state"] == "waiting")
    r = await client.post(f"/api/jobs/{job['id']}/cancel?session={SESSION}")
    assert r.status_code == 202
    row = await wait_for_row(app, lambda r: r["id"] == job["id"] and r["state"] == "cancelled")
    assert row["error"] == "Cancelled: the job server was asked to drop the queued job."
    again = await client.post(f"/api/jobs/{job['id']}/cancel?session={SESSION}")
    assert again.status_code == 409


async def test_after_a_web_restart_open_background_jobs_are_watched_again(make: Any, gearmand: Gearmand) -> None:
    """A page re-syncing after a restart hands back its open rows: background ones are watched, foreground lost."""
    old_app, old = await make([gearmand.address])
    job = await submit(old, function="nobody_serves_this", background=True)
    queued = await wait_for_row(old_app, lambda r: r["id"] == job["id"] and r["state"] == "waiting")
    app, fresh = await make([gearmand.address])  # the restarted app: it knows nothing of this page's rows
    foreground = {**queued, "id": queued["id"][:-1] + "2", "background": False, "state": "running", "handle": None}
    r = await fresh.post(f"/api/jobs/resume?session={SESSION}", json={"jobs": [queued, foreground]})
    states = {row["id"]: row["state"] for row in r.json()["jobs"]}
    assert states[foreground["id"]] == "lost"
    watched = await wait_for_row(app, lambda r: r["id"] == queued["id"] and r["state"] == "waiting")
    assert watched["handle"] == queued["handle"]


@pytest.mark.parametrize("mode", ["bytes", "file"])
async def test_a_photo_a_restart_interrupted_is_resized_again_from_disk(
    gearmand: Gearmand, tmp_path: Path, mode: str
) -> None:
    """Both photo modes: the original kept on disk is resized by a real worker when the app starts again."""
    import io

    from PIL import Image
    from support import WorkerProcess, photo_jpeg

    from gearworker.web.photos import Photo, new_id
    from gearworker.web.storage import PhotoStore

    root = tmp_path / "photos"
    image = io.BytesIO(photo_jpeg(900, 600, fill=(30, 90, 200), quality=75))
    photo = Photo(id=new_id(), key="", name="cut.jpg", upload_bytes=len(image.getvalue()), state="resizing")
    PhotoStore(root).add(photo, image)  # what the app had stored when it stopped mid-resize
    worker = WorkerProcess(
        [gearmand.address], args=["--processes", "1"], env={"GEARWORKER_STORAGE_ROOTS": str(root.resolve())}
    )
    worker.start(wait_for="resize", gearmand=gearmand, timeout=60)
    try:
        app = create_app([gearmand.address], storage_root=str(root), photo_mode=mode)
        web = app.state.web
        async with web.lifespan(app):
            await asyncio.wait_for(asyncio.gather(*web.tasks), timeout=60)
            kept = web.photos.get(photo.id)
            assert kept is not None and (kept.state, kept.error) == ("done", None)
            assert [(c.width, c.height, c.file) for c in kept.copies] == [
                (900, 600, "copy-1024.jpg"),
                (512, 341, "copy-512.jpg"),
                (256, 171, "copy-256.jpg"),
            ]
            for c in kept.copies:
                assert Image.open(root / photo.id / c.file).size == (c.width, c.height)
    finally:
        worker.stop()
