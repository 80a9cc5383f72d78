"""Jobs from the Jobs form: running them, honest states, cancel, and picking them up after a restart.

States a row goes through::

    foreground: submitted -> (waiting: no worker) -> running -> done | failed | cancelled | lost
    background: submitted -> queued (waiting) -> running -> finished | failed (recorded) | lost | unknown

A background job's result never reaches a client (Gearman keeps none): the
server just forgets the handle.  "finished" is said only when nothing
disturbed the watch; when the server restarted meanwhile (its ``getpid``
changed, or it stopped answering), a forgotten handle is "lost" (queued jobs
of a server without a persistent queue are gone), and a job picked up from a
page after the web app restarted is "unknown" when the server no longer
knows it.  When the app reads the workers' failed-job store (``failed_jobs``),
a forgotten handle is first looked up there: a record of it says the job
failed for good ("failed", with ``record`` set: the page's "Failed (recorded)").
A worker commits the record before it reports the failure, so it is there
when gearmand forgets the handle; a folder store's listing may lag by a
second, so a job said "finished" is looked up again after
:data:`RECORD_RECHECKS` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from ..client import Client, Handle, Priority, RunningJob
from .events import EVENT_TTL, Hub, revision
from .service import Gateway, explain, watch_for_workers

log = structlog.get_logger("gearworker.web")

#: How often a background job's status is asked for, and for how long at most.
BACKGROUND_POLL = 1.0
BACKGROUND_WATCH = 3600.0
#: Longest result text sent to the page.
MAX_RESULT_CHARS = 4000
#: Rows a page keeps (for cancel and re-sync); the oldest go first.
MAX_ROWS = 1000
#: Rows all pages together keep; the oldest go first.
MAX_TOTAL_ROWS = 5000
#: How long a row is kept after its job ended (as long as the events a page away could catch up on).
ENDED_ROW_TTL = EVENT_TTL
#: After a background job was said "finished", look for its failure record again this many seconds later.
RECORD_RECHECKS = (1.5, 5.0)
#: A record counts for a job when it failed after the job was sent, less this (the worker's clock may differ).
CLOCK_SLACK = 10.0
FINAL = frozenset({"done", "failed", "cancelled", "lost", "finished", "unknown"})
ROW_ID_RE = re.compile(r"^[0-9a-f]{8}-b[0-9]{1,9}-[0-9]{1,3}$")

LOST_RESTART = (
    "The job server restarted (or could not be reached) while this job was queued or running: "
    "it is not known whether it ran."
)
LOST_WEB = (
    "The web app restarted while this job ran: its result can no longer reach this page "
    "(the worker may still have finished it)."
)
UNKNOWN = "The job server no longer knows this job: it ended, or was lost while the web app restarted."
FORGOTTEN = (
    "This page was away longer than the web app keeps what became of its jobs: "
    "this one has ended or was dropped, and its outcome is no longer known."
)


def result_view(result: bytes) -> dict[str, Any]:
    """A job result as the page shows it: text when it is text, else its size."""
    try:
        text = result.decode("utf-8")
    except UnicodeDecodeError:
        return {"text": None, "bytes": len(result), "binary": True}
    cut = len(text) > MAX_RESULT_CHARS
    return {"text": text[:MAX_RESULT_CHARS] + ("…" if cut else ""), "bytes": len(result), "binary": False}


@dataclass
class JobRow:
    """One submission from the Jobs form, as the page shows it."""

    id: str
    batch: str
    index: int
    function: str
    background: bool
    priority: Priority
    state: str = "submitted"
    handle: str | None = None
    server: str | None = None
    numerator: int = 0
    denominator: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # time.monotonic() when it reached a final state
    duration: float | None = None
    submitted_at: float = field(default_factory=time.time)  # wall clock: failure records are looked up after it
    record: dict[str, Any] | None = None  # the failed-job store's record of this job, once found
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    running: RunningJob | None = field(default=None, repr=False)  # a foreground job once sent
    cancel_requested: bool = False

    def learn_handle(self) -> None:
        """Copy the handle of a foreground job once the server has created it."""
        if self.handle is None and self.running is not None and self.running.handle:
            self.handle = self.running.handle.decode("utf-8", "replace")

    def view(self) -> dict[str, Any]:
        """What the page shows of the row; the page keeps the view with the larger ``revision``."""
        view = {
            k: getattr(self, k)
            for k in (
                "id",
                "batch",
                "index",
                "function",
                "background",
                "priority",
                "state",
                "handle",
                "server",
                "numerator",
                "denominator",
                "result",
                "error",
                "messages",
                "duration",
                "submitted_at",
                "record",
            )
        }
        view["revision"] = revision()
        return view

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def finish(self, state: str) -> None:
        self.state = state
        self.ended = time.monotonic()
        self.duration = round(self.ended - self.started, 3)
        # The client's job (its result bytes, its queue) and the task are not needed once it ended:
        # a row kept for re-sync holds its view only.
        self.running, self.task = None, None


class JobBook:
    """Rows by session and id: what Cancel and a re-syncing page look up.

    Bounded: :data:`MAX_ROWS` a page and :data:`MAX_TOTAL_ROWS` in all (the oldest go first), and a
    row is forgotten :data:`ENDED_ROW_TTL` after its job ended (:meth:`trim`).  A forgotten row's
    task, if it still runs, goes on; only Cancel and re-sync no longer find it.
    """

    def __init__(self) -> None:
        self._rows: dict[str, OrderedDict[str, JobRow]] = {}
        self._all: OrderedDict[tuple[str, str], JobRow] = OrderedDict()  # every row, oldest first

    def __len__(self) -> int:
        return len(self._all)

    def add(self, session: str, row: JobRow) -> None:
        rows = self._rows.setdefault(session, OrderedDict())
        rows[row.id] = row
        self._all[(session, row.id)] = row
        while len(rows) > MAX_ROWS:
            self._drop(session, next(iter(rows)))
        while len(self._all) > MAX_TOTAL_ROWS:
            self._drop(*self._oldest_ended())

    def _oldest_ended(self) -> tuple[str, str]:
        """The oldest row whose job ended (among the oldest few hundred), else the oldest: Cancel needs the rest."""
        for n, (key, row) in enumerate(self._all.items()):
            if row.final or n >= 500:
                return key
        return next(iter(self._all))

    def get(self, session: str, row_id: str) -> JobRow | None:
        rows = self._rows.get(session)
        return rows.get(row_id) if rows is not None else None

    def trim(self, *, now: float | None = None) -> None:
        """Forget the rows whose job ended more than :data:`ENDED_ROW_TTL` ago."""
        now = time.monotonic() if now is None else now
        for (session, row_id), row in list(self._all.items()):
            if row.ended is not None and now - row.ended > ENDED_ROW_TTL:
                self._drop(session, row_id)

    def _drop(self, session: str, row_id: str) -> None:
        self._all.pop((session, row_id), None)
        rows = self._rows.get(session)
        if rows is not None:
            rows.pop(row_id, None)
            if not rows:
                del self._rows[session]


#: Looks up the failed-job store's record of a job handle failed at or after ``since`` (the console's).
RecordLookup = Callable[..., Awaitable[dict[str, Any] | None]]


@dataclass
class JobContext:
    """What a job's task needs besides the row."""

    gateway: Gateway
    hub: Hub
    timeout: float = 300.0
    #: Set when the app reads the workers' failed-job store: ``recorded(handle, since=...)``.
    recorded: RecordLookup | None = None


async def run_job(ctx: JobContext, session: str, row: JobRow, payload: bytes) -> None:
    """Submit one job from the form and publish what happens to it."""

    def publish() -> None:
        ctx.hub.publish(session, "job", row.view())

    publish()
    try:
        client = await ctx.gateway.client()
        if row.background:
            handle = await client.submit_background(row.function, payload, priority=row.priority)
            row.handle, row.server, row.state = handle.decode("utf-8", "replace"), handle.server or None, "queued"
            publish()
            await watch_background(ctx, session, row, handle, resumed=False)
            return
        await _foreground(ctx, client, row, payload, publish)
    except asyncio.CancelledError:
        if not row.cancel_requested:
            raise  # the app is stopping
        await _cancelled(ctx, row)
    except TimeoutError:
        row.error = (
            f"No worker took the job within {ctx.timeout:g} s: no worker has “{row.function}”."
            if row.state == "waiting"
            else f"The job took too long: no worker finished it within {ctx.timeout:g} s (web_job_timeout)."
        )
        row.finish("failed")
    except Exception as e:
        row.error = explain(e, ctx.gateway.servers)
        # Our worker sends its failure text as a WORK_WARNING first: don't show it twice.
        row.messages = [m for m in row.messages if m not in row.error]
        row.finish("failed")
    log.info(
        "web.job.done", function=row.function, job=row.id, handle=row.handle, outcome=row.state, duration=row.duration
    )
    publish()


async def _foreground(ctx: JobContext, client: Client, row: JobRow, payload: bytes, publish: Any) -> None:
    def waiting(none: bool) -> None:
        state = "waiting" if none else "submitted"
        known = row.handle
        row.learn_handle()
        # Publish a change of state, and also a handle learnt since: the first check can come
        # before gearmand's JOB_CREATED, and a waiting row would never show its handle.
        if row.state in ("submitted", "waiting") and (row.state != state or row.handle != known):
            row.state = state
            publish()

    watcher = asyncio.ensure_future(
        watch_for_workers(ctx.gateway, row.function, lambda: row.state in ("submitted", "waiting"), waiting)
    )
    try:
        async with client.start(row.function, payload, priority=row.priority, timeout=ctx.timeout) as job:
            row.running = job
            async for p in job:
                row.learn_handle()
                row.state = "running"
                if p.kind == "status":
                    row.numerator, row.denominator = p.numerator, p.denominator
                elif p.kind == "warning" and p.data:
                    row.messages.append(bytes(p.data).decode("utf-8", "replace")[:500])
                publish()
            result = await job.result()
            row.learn_handle()
    finally:
        watcher.cancel()
    row.result = result_view(bytes(result))
    row.finish("done")


async def _cancelled(ctx: JobContext, row: JobRow) -> None:
    """The page's Cancel: stop waiting, and ask the server to drop the job if no worker has it yet."""
    dropped = False
    row.learn_handle()
    if row.handle and row.state in ("submitted", "waiting", "queued"):
        with contextlib.suppress(Exception):
            client = await ctx.gateway.client()
            await client.admin(f"cancel job {row.handle}", server=row.server or None)
            dropped = True
    row.error = (
        "Cancelled: the job server was asked to drop the queued job."
        if dropped
        else "Cancelled: this page stopped waiting. A worker that already has the job may still finish it "
        "(Gearman cannot stop a running job)."
    )
    row.finish("cancelled")


async def watch_background(ctx: JobContext, session: str, row: JobRow, handle: bytes, *, resumed: bool) -> None:
    """Ask for a background job's status until the server forgets it; tell finished from lost."""

    def publish() -> None:
        ctx.hub.publish(session, "job", row.view())

    server = row.server or (ctx.gateway.servers[0] if len(ctx.gateway.servers) == 1 else None)
    pid = await ctx.gateway.server_pid(server) if server else None
    disturbed = server is None and resumed
    seen = not resumed  # a resumed job must be seen once before "gone" can mean "finished"
    deadline = time.monotonic() + BACKGROUND_WATCH
    client = await ctx.gateway.client()
    while time.monotonic() < deadline:
        await asyncio.sleep(BACKGROUND_POLL)
        try:
            status = await client.status(Handle(handle, server or ""), server=server)
        except Exception as e:
            disturbed = True
            row.error = explain(e, ctx.gateway.servers)
            publish()
            continue
        now_pid = await ctx.gateway.server_pid(server) if server else None
        if pid is not None and now_pid is not None and now_pid != pid:
            disturbed = True
        row.error = None
        if not status.known:
            if disturbed:
                row.error = LOST_RESTART
                row.finish("lost")
            elif await _found_record(ctx, row):
                pass  # failed for good: the store has its record
            elif not seen:
                row.error = UNKNOWN
                row.finish("unknown")
            else:
                row.finish("finished")  # Gearman keeps no result for background jobs: "no longer known" is all
            log.info("web.job.done", function=row.function, job=row.id, handle=row.handle, outcome=row.state)
            publish()
            if row.state in ("finished", "unknown") and ctx.recorded is not None:
                for delay in RECORD_RECHECKS:  # a folder store's listing may not show the newest file yet
                    await asyncio.sleep(delay)
                    if await _found_record(ctx, row):
                        log.info("web.job.done", function=row.function, job=row.id, handle=row.handle, outcome="failed")
                        publish()
                        break
            return
        announce = resumed and not seen  # the first answer about a picked-up job: the page learns it is watched
        seen = True
        state = "running" if status.running else "queued"
        if state == "queued":
            workers = await ctx.gateway.workers_for(row.function)
            state = "waiting" if workers == 0 else state
        changed = (state, status.numerator, status.denominator) != (row.state, row.numerator, row.denominator)
        row.state, row.numerator, row.denominator = state, status.numerator, status.denominator
        if changed or announce:
            publish()


async def _found_record(ctx: JobContext, row: JobRow) -> bool:
    """Look the row's job up in the failed-job store; when it is there, the row says it failed, with the record."""
    if ctx.recorded is None or not row.handle:
        return False
    try:
        record = await ctx.recorded(row.handle, since=row.submitted_at - CLOCK_SLACK)
    except Exception as e:  # the store is the console's concern: a job row just stays as it is
        log.warning("web.job.record_lookup_failed", handle=row.handle, error=f"{type(e).__name__}: {e}")
        return False
    if record is None or record.get("function") != row.function:
        return False
    row.record = {k: record.get(k) for k in ("id", "attempts", "failed_at", "failed_at_utc", "error", "unique")}
    row.error = f"The job failed: {record.get('error')}"
    if row.final:
        row.state = "failed"  # said "finished" a moment ago: it keeps its duration
    else:
        row.finish("failed")
    return True


def resume_rows(
    ctx: JobContext, book: JobBook, session: str, known: Sequence[Any], spawn: Callable[[Any], asyncio.Task[None]]
) -> list[JobRow]:
    """The unfinished rows of a page that syncs again, each as it is now.

    After a restart of the web app: background ones are watched again, foreground ones are lost.
    In this boot (the page missed events that were dropped): the rows still kept, as they are;
    those already forgotten (ended past the age limit, or past the bounds) are "unknown".
    """
    rows: list[JobRow] = []
    for item in known[:MAX_ROWS]:
        if not isinstance(item, dict) or not ROW_ID_RE.match(str(item.get("id", ""))):
            continue
        if str(item.get("state")) in FINAL:
            continue
        kept = book.get(session, item["id"])
        if kept is not None:
            rows.append(kept)
            continue
        batch, index = str(item["id"]).rsplit("-", 1)
        row = JobRow(
            id=str(item["id"]),
            batch=batch,
            index=int(index),
            function=str(item.get("function", ""))[:255],
            background=bool(item.get("background")),
            priority=cast(Priority, item.get("priority") if item.get("priority") in ("high", "low") else "normal"),
            state=str(item.get("state")),
            handle=_text(item.get("handle")),
            server=_server(ctx, item),
            submitted_at=_moment(item.get("submitted_at")),
        )
        book.add(session, row)
        rows.append(row)
        if row.id.startswith(f"{ctx.hub.boot}-"):
            row.error = FORGOTTEN
            row.finish("unknown")
            ctx.hub.publish(session, "job", row.view())
        elif row.background and row.handle:
            row.task = spawn(watch_background(ctx, session, row, row.handle.encode(), resumed=True))
        else:
            row.error = LOST_WEB
            row.finish("lost")
            ctx.hub.publish(session, "job", row.view())
    return rows


def _text(value: Any) -> str | None:
    return str(value)[:200] if isinstance(value, str) and value else None


def _moment(value: Any) -> float:
    """When a picked-up row's job was sent (its view says); else the longest a background job is watched ago."""
    now = time.time()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and now - BACKGROUND_WATCH <= value <= now:
        return float(value)
    return now - BACKGROUND_WATCH


def _server(ctx: JobContext, item: dict[str, Any]) -> str | None:
    server = item.get("server")
    return server if server in ctx.gateway.servers else None
