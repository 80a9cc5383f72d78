"""The no-op handler under another name, for ``bench.paired --against``: a second gearworker beside the first."""

from __future__ import annotations

from gearworker import Job, handler


@handler("php_noop")
async def noop(job: Job) -> None:
    """Return nothing, as bench/handlers' noop (the name is the B side's of bench/php/paired.php)."""
    return None
