"""TLS to job servers, through stunnel4 in front of gearmand (Debian's gearmand serves plaintext even with
--ssl: it is built without SSL)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from gearmand import Gearmand
from netlab import HERE, MakeStunnel, Pki
from support import WorkerProcess, handlers_dir, run_gearworker, wait_until

from gearworker import Client
from gearworker.errors import GearworkerError, JobFailed
from gearworker.failed import open_query
from gearworker.failed.query import FailedFilter


def _worker_env(pki: Pki, *, ca: str, client_cert: bool) -> dict[str, str]:
    env = {"GEARWORKER_TLS": "true", "GEARWORKER_TLS_CA_FILE": ca, "GEARWORKER_TLS_SERVER_HOSTNAME": "localhost"}
    if client_cert:
        env |= {"GEARWORKER_TLS_CERT_FILE": str(pki.client_cert), "GEARWORKER_TLS_KEY_FILE": str(pki.client_key)}
    return env


def _context(pki: Pki, *, ca: str, client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if client_cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-cert-only", "client-cert-required"])
async def test_worker_and_client_over_tls(
    gearmand: Gearmand, pki: Pki, stunnel_factory: MakeStunnel, client_cert: bool
) -> None:
    """Worker (settings tls, tls_ca_file, optional tls_cert_file/tls_key_file, tls_server_hostname) and client
    (tls=SSLContext) reach gearmand only through TLS and a job runs end to end."""
    tunnel = stunnel_factory(pki=pki, target_port=gearmand.port, require_client_cert=client_cert)
    worker = WorkerProcess(
        [tunnel.address], handlers=HERE / "handlers", env=_worker_env(pki, ca=str(pki.ca), client_cert=client_cert)
    )
    try:
        worker.start(wait_for="net_echo", gearmand=gearmand)
        async with Client([tunnel.address], tls=_context(pki, ca=str(pki.ca), client_cert=client_cert)) as c:
            assert await c.submit("net_echo", b"over tls", timeout=20) == b"over tls"
    finally:
        worker.stop(timeout=5)


def _tls_verify_failed(text: str) -> bool:
    """OpenSSL's reason, as its code (CERTIFICATE_VERIFY_FAILED) or in words (certificate verify failed)."""
    return "certificate_verify_failed" in text.lower().replace(" ", "_")


def _connections(gearmand: Gearmand) -> int:
    """Connections gearmand has, besides the admin one asking."""
    return len([line for line in gearmand.admin("workers").splitlines() if line != "."]) - 1


async def test_wrong_ca_fails_clearly_and_never_falls_back_to_plaintext(
    gearmand: Gearmand, pki: Pki, stunnel_factory: MakeStunnel
) -> None:
    """A server certificate not signed by the configured CA: the worker logs an error naming the server and the
    TLS cause and never reaches gearmand (no plaintext fallback); the client's submit raises a GearworkerError
    naming both."""
    tunnel = stunnel_factory(pki=pki, target_port=gearmand.port)
    worker = WorkerProcess(
        [tunnel.address], handlers=HERE / "handlers", env=_worker_env(pki, ca=str(pki.other_ca), client_cert=False)
    )
    try:
        worker.start()
        wait_until(
            lambda: _tls_verify_failed(worker.log_text()),
            20,
            what="a TLS error logged",
            interval=0.1,
            detail=lambda: worker.log_text()[-2000:],
        )
        lines = [line for line in worker.log_text().splitlines() if _tls_verify_failed(line)]
        assert any(tunnel.address in line for line in lines), lines
        assert _connections(gearmand) == 0, "nothing may reach gearmand without TLS"
        assert worker.proc is not None and worker.proc.poll() is None, "it keeps retrying, like any down server"
    finally:
        worker.stop(timeout=5)

    async with Client([tunnel.address], tls=_context(pki, ca=str(pki.other_ca), client_cert=False)) as c:
        with pytest.raises(GearworkerError) as caught:
            await c.submit("net_echo", b"x", timeout=20)
    message = str(caught.value) + str(caught.value.__cause__ or "")
    assert tunnel.address in message and _tls_verify_failed(message), message
    assert _connections(gearmand) == 0


#: A one-second schedule: the scheduler's election (admin ``workers``) and submits.
TICKS = """
import os
from gearworker import handler


@handler("net_tick", schedule=1)
async def net_tick(job):
    with open(os.environ["NET_TICKS"], "a") as f:
        f.write(job.unique.decode() + "\\n")
"""

#: A job that always fails: the failed-job recorder's status check, ``gearworker failed retry``.
FAILS = """
from gearworker import handler


@handler("net_fail")
async def net_fail(job):
    raise ValueError("refused " + job.workload.decode())
"""


def _tls_only_worker(tunnel_address: str, pki: Pki, handlers: Path, **env: str) -> WorkerProcess:
    """A worker whose only way to gearmand is TLS, configured by its settings alone (environment)."""
    return WorkerProcess(
        [tunnel_address], handlers=handlers, env=_worker_env(pki, ca=str(pki.ca), client_cert=True) | env
    )


async def test_the_scheduler_elects_and_submits_over_tls(
    gearmand: Gearmand, pki: Pki, stunnel_factory: MakeStunnel, tmp_path: Path
) -> None:
    """A worker with a one-second schedule, TLS on in its settings and gearmand behind stunnel (client
    certificate required): its scheduler's client connects as the settings say, so the election (admin
    ``workers``) and the tick's SUBMIT_JOB_BG go over TLS, ticks run, and no server is ever marked down."""
    tunnel = stunnel_factory(pki=pki, target_port=gearmand.port, require_client_cert=True)
    ticks = tmp_path / "ticks"
    ticks.touch()
    worker = _tls_only_worker(tunnel.address, pki, handlers_dir(tmp_path, ticks=TICKS), NET_TICKS=str(ticks))
    try:
        worker.start(wait_for="net_tick", gearmand=gearmand)
        wait_until(lambda: len(ticks.read_text().split()) >= 2, 20, what="two ticks to run", process=worker)
    finally:
        worker.stop(timeout=5)
    assert worker.log_records("schedule.submitted")
    assert not worker.log_records("schedule.error"), worker.log_text()[-3000:]
    assert not worker.log_records("client.server_down"), worker.log_text()[-3000:]


async def test_failed_jobs_are_checked_recorded_and_retried_over_tls(
    gearmand: Gearmand, pki: Pki, stunnel_factory: MakeStunnel, tmp_path: Path
) -> None:
    """A worker with ``failed_jobs`` set and TLS on, gearmand behind stunnel (client certificate required).
    The recorder asks gearmand over TLS whether a client waits for a failed job: a foreground job's failure
    (its client waited) is not recorded, a background job's is.  ``gearworker failed retry`` (TLS from the
    settings too) submits the recorded job again and drops its record; the job fails and is recorded again."""
    tunnel = stunnel_factory(pki=pki, target_port=gearmand.port, require_client_cert=True)
    store = tmp_path / "failed.db"
    worker = _tls_only_worker(
        tunnel.address, pki, handlers_dir(tmp_path, fails=FAILS), GEARWORKER_FAILED_JOBS=str(store)
    )
    query = open_query(store)
    try:
        worker.start(wait_for="net_fail", gearmand=gearmand)
        async with Client([tunnel.address], tls=_context(pki, ca=str(pki.ca), client_cert=True)) as c:
            with pytest.raises(JobFailed, match="refused fg"):
                await c.submit("net_fail", b"fg", unique="fg-1", timeout=20)
            await c.submit_background("net_fail", b"bg", unique="bg-1")
        wait_until(lambda: store.exists() and query.counts_by_function(), 20, what="a record", process=worker)
        [entry] = query.page(FailedFilter()).entries
        assert (entry.unique, entry.error) == ("bg-1", "ValueError: refused bg")
        assert [r["unique"] for r in worker.log_records("failed.not_recorded")] == ["fg-1"]

        retried = run_gearworker(
            "failed",
            "retry",
            entry.id,
            "--server",
            tunnel.address,
            env=_worker_env(pki, ca=str(pki.ca), client_cert=True) | {"GEARWORKER_FAILED_JOBS": str(store)},
        )
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.splitlines()[-1].startswith("H:"), retried.stdout  # the new job's handle
        wait_until(
            lambda: len(worker.log_records("failed.recorded")) == 2,
            20,
            what="the retried job to fail and be recorded again",
            process=worker,
        )
        assert entry.id not in [e.id for e in query.page(FailedFilter()).entries]  # retried: its record is gone
    finally:
        worker.stop(timeout=5)
    assert not worker.log_records("client.server_down"), worker.log_text()[-3000:]


async def test_the_command_line_client_takes_tls_from_the_settings(
    gearmand: Gearmand, pki: Pki, stunnel_factory: MakeStunnel
) -> None:
    """``gearworker submit`` and ``gearworker status`` with ``--server`` and TLS in the settings: a job and the
    admin ``status`` table, through stunnel (client certificate required)."""
    tunnel = stunnel_factory(pki=pki, target_port=gearmand.port, require_client_cert=True)
    env = _worker_env(pki, ca=str(pki.ca), client_cert=True)
    worker = WorkerProcess([tunnel.address], handlers=HERE / "handlers", env=env)
    try:
        worker.start(wait_for="net_echo", gearmand=gearmand)
        submitted = run_gearworker("submit", "net_echo", "from the shell", "--server", tunnel.address, env=env)
        assert (submitted.returncode, submitted.stdout) == (0, "from the shell"), submitted.stderr
        status = run_gearworker("status", "--server", tunnel.address, env=env)
        assert status.returncode == 0, status.stderr
        assert "net_echo" in status.stdout, status.stdout
    finally:
        worker.stop(timeout=5)
