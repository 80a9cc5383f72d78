"""gearworker.worker.capacity.Bucket: one limit's accounting of running jobs and outstanding grabs."""

from __future__ import annotations

from typing import Any, cast

import pytest

from gearworker.worker.capacity import Bucket


def test_a_new_bucket_is_entirely_free() -> None:
    """Nothing used, nothing reserved: free equals the limit."""
    bucket = Bucket("concurrency", 4)
    assert (bucket.used, bucket.reserved, bucket.free) == (0, 0, 4)


def test_free_counts_both_running_jobs_and_outstanding_grabs() -> None:
    """A reserved place (a GRAB_JOB in flight) is as taken as a running job."""
    bucket = Bucket("pool", 5, used=2, reserved=1)
    assert bucket.free == 2
    bucket.reserved += 2
    assert bucket.free == 0


def test_free_follows_used_and_reserved_as_they_change() -> None:
    """free is computed, not stored: a grab turning into a job keeps it unchanged, a job ending frees a place."""
    bucket = Bucket("h", 2)
    bucket.reserved += 1  # a grab goes out
    assert bucket.free == 1
    bucket.reserved -= 1  # ...and comes back with a job
    bucket.used += 1
    assert bucket.free == 1
    bucket.used -= 1  # the job ends
    assert bucket.free == 2


def test_free_can_go_negative_when_over_committed() -> None:
    """free is not clamped, so over-commitment shows (a caller checks free > 0, never free != 0)."""
    bucket = Bucket("h", 1, used=1, reserved=1)
    assert bucket.free == -1


def test_buckets_compare_by_identity_so_equal_limits_stay_distinct() -> None:
    """eq=False: two buckets with the same name and numbers are different limits (and hashable, for sets/dicts)."""
    a, b = Bucket("h", 3), Bucket("h", 3)
    assert a != b
    assert len({a, b}) == 2


def test_a_bucket_has_no_instance_dict() -> None:
    """slots=True: a typo such as ``bucket.reserverd += 1`` raises instead of silently adding an attribute."""
    bucket = Bucket("h", 1)
    with pytest.raises(AttributeError):
        cast(Any, bucket).reserverd = 1  # the typo mypy catches, caught at run time too
