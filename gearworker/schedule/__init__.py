"""Scheduled handlers: ``@handler("report", schedule=60)`` or ``schedule="30 2 * * *"``.

:mod:`.rules` says when each tick falls and which worker process submits it
(pure functions, imported by ``@handler``); :mod:`.runner` is the loop that
submits the ticks' background jobs in a running worker.
"""

from .rules import Cron, Interval, Schedule, ScheduleError, WorkerEntry, elect, parse, tick_unique

__all__ = ["Cron", "Interval", "Schedule", "ScheduleError", "WorkerEntry", "elect", "parse", "tick_unique"]
