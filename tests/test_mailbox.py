"""gearworker.worker.mailbox.Mailbox: one copy in, one copy out, across processes, growing as needed.

The pool's own tests (test_pool.py) send big jobs through real slots; these
pin the mailbox alone, with a real second process started the way the pool
starts its processes (forkserver, the mailbox among the start-up arguments).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from gearworker.worker import mailbox
from gearworker.worker.mailbox import Mailbox

_box: Mailbox | None = None


def _keep(box: Mailbox) -> None:
    global _box
    _box = box


def _reverse(size: int, grow_to: int) -> int:
    """In the other process: read ``size`` bytes, write them back reversed and padded to ``grow_to``."""
    assert _box is not None
    data = _box.take(size)[::-1]
    return _box.put(data + b"!" * (grow_to - len(data)))


def test_put_then_take_returns_a_copy_of_exactly_what_was_put() -> None:
    """take() gives the bytes put, not a view: a later put does not change an earlier take."""
    box = Mailbox()
    try:
        first = os.urandom(200_000)
        assert box.put(first) == len(first)
        out = box.take(len(first))
        assert out == first and type(out) is bytes
        box.put(b"\0" * 200_000)
        assert out == first
    finally:
        box.close()


def test_the_mailbox_grows_for_a_bigger_payload_and_keeps_no_stale_length() -> None:
    """A payload longer than any before grows the memory; a shorter one reads back at its own length."""
    box = Mailbox()
    try:
        for size in (70_000, 3_000_000, 100_000, 9_000_000):
            data = os.urandom(size)
            box.put(data)
            assert box.take(size) == data
    finally:
        box.close()


def test_taking_more_than_was_ever_put_is_an_error_not_garbage() -> None:
    box = Mailbox()
    try:
        box.put(b"x" * 70_000)
        with pytest.raises(ValueError, match="mailbox holds"):
            box.take(50_000_000)
    finally:
        box.close()


def test_the_other_process_reads_ours_and_we_read_its_reply_grown_past_our_mapping() -> None:
    """The pool process maps the same memory; its bigger reply grows it, and our side remaps to read it."""
    box = Mailbox()
    ctx = multiprocessing.get_context("forkserver")
    try:
        with ProcessPoolExecutor(1, mp_context=ctx, initializer=_keep, initargs=(box,)) as other:
            data = os.urandom(300_000)
            box.put(data)
            n = other.submit(_reverse, len(data), 4_000_000).result(timeout=60)
            assert n == 4_000_000
            assert box.take(n) == data[::-1] + b"!" * (n - len(data))
    finally:
        box.close()


def test_close_releases_our_descriptor() -> None:
    before = len(os.listdir("/proc/self/fd"))
    box = Mailbox()
    box.put(b"y" * 100_000)
    box.close()
    box.close()  # twice is harmless
    assert len(os.listdir("/proc/self/fd")) == before


def test_without_memfd_put_refuses_and_a_started_process_gets_an_unusable_mailbox_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where memfd_create fails, put() raises OSError (the pool then uses the pipe) instead of the worker failing."""

    def unsupported(name: str, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", unsupported)
    box = Mailbox()
    with pytest.raises(OSError, match="no mailbox"):
        box.put(b"z" * 100_000)
    ctx = multiprocessing.get_context("forkserver")
    with (
        ProcessPoolExecutor(1, mp_context=ctx, initializer=_keep, initargs=(box,)) as other,
        pytest.raises(OSError, match="no mailbox"),
    ):
        other.submit(_reverse, 0, 100_000).result(timeout=60)
    box.close()


def test_no_memory_to_grow_is_an_oserror_up_front_not_a_sigbus_in_mid_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pages are allocated before the copy: when that fails, put() raises and the mailbox keeps its old size."""
    box = Mailbox()
    try:
        box.put(b"a" * 100_000)

        def full(fd: int, offset: int, length: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", full)
        with pytest.raises(OSError, match="No space left"):
            box.put(b"b" * 5_000_000)
        assert box.put(b"c" * 100_000) == 100_000  # what fits still goes through
        assert box.take(100_000) == b"c" * 100_000
    finally:
        box.close()


def test_small_and_huge_payloads_keep_the_pipe() -> None:
    """Under MIN_SIZE the pickle is cheaper; over MAX_SIZE a mailbox would pin too much memory."""
    assert not mailbox.fits(mailbox.MIN_SIZE - 1)
    assert mailbox.fits(mailbox.MIN_SIZE) and mailbox.fits(mailbox.MAX_SIZE)
    assert not mailbox.fits(mailbox.MAX_SIZE + 1)
