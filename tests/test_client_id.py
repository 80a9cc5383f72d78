"""The client id a worker process gives gearmand names its host, pid and version, and reads back the same.

The scheduler's election compares these ids (tests/test_schedule.py); here: their format, that
gearmand's ``workers`` list carries them whole through our admin parser, and the setting's limits.
"""

from __future__ import annotations

import os
import socket

import pytest
from gearmand import Gearmand
from support import start_worker

import gearworker
from gearworker import config
from gearworker.clientid import ClientId, parse_client_id, worker_client_id
from gearworker.errors import ConfigError
from gearworker.protocol import WorkerRow
from gearworker.schedule.rules import WorkerEntry, elect


def test_a_worker_id_names_host_pid_and_version_and_parses_back() -> None:
    text = worker_client_id("web-7f3a", pid=4211, version="0.1.0")
    assert text == "web-7f3a-4211@gearworker/0.1.0"
    assert parse_client_id(text) == ClientId("web-7f3a", 4211, "0.1.0")
    assert parse_client_id(worker_client_id()) == ClientId(socket.gethostname(), os.getpid(), gearworker.__version__)


@pytest.mark.parametrize("other", ["-", "", "php-worker", "host-1234", "a b-1@gearworker/1", "x-@gearworker/1"])
def test_ids_of_other_clients_are_not_taken_for_ours(other: str) -> None:
    assert parse_client_id(other) is None


def test_the_election_still_picks_one_lowest_id_across_versions() -> None:
    """During a rolling upgrade the processes' versions differ: each compares the same strings."""
    rows = [
        WorkerEntry(worker_client_id("b", pid=1, version="0.2.0"), ("tick",)),
        WorkerEntry(worker_client_id("a", pid=99, version="0.1.0"), ("tick",)),
        WorkerEntry(worker_client_id("a", pid=100, version="0.2.0"), ("tick",)),
        WorkerEntry("-", ("tick",)),
    ]
    assert elect(rows, "tick") == "a-100@gearworker/0.2.0"
    assert elect(list(reversed(rows)), "tick") == "a-100@gearworker/0.2.0"


@pytest.mark.parametrize(
    ("value", "words"),
    [("two words", "one word"), ("x" * 65, "at most 64"), ("tab\tbed", "one word")],
)
def test_a_client_id_setting_that_would_break_the_workers_list_is_refused(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(env={}, overrides={"client_id": value})
    assert "client_id" in str(info.value) and words in str(info.value)


def test_gearmand_lists_a_worker_process_under_its_whole_id(gearmand: Gearmand) -> None:
    """A real worker's id survives gearmand's `workers` list and our parser of it: host, pid, version."""
    worker = start_worker([gearmand.address], "--client-id", "console-test", wait_for="echo", gearmand=gearmand)
    try:
        lines = [line for line in gearmand.admin("workers").splitlines() if line not in ("", ".")]
        ours = [WorkerRow.parse(line) for line in lines if "@gearworker/" in line]
        assert any("echo" in r.functions for r in ours)  # one row per connection (a group of functions each)
        assert {parse_client_id(r.client_id) for r in ours} == {
            ClientId("console-test", worker.pid, gearworker.__version__)
        }
    finally:
        worker.stop()
