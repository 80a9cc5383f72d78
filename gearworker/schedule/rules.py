"""Schedules: when a scheduled handler's ticks fall, and which worker submits each one.

A handler declared with ``@handler("report", schedule=60)`` (every 60 s) or
``schedule="*/5 * * * *"`` (a cron expression) gets a background job at each
tick.  Two questions have to be answered for every tick:

*When.*  :class:`Interval` ticks fall on multiples of the interval since the
Unix epoch, not "every N s since this process started", so every process on
every host computes the same tick times.  :class:`Cron` ticks are whole
minutes of UTC (not the host's local time zone: hosts in different zones must
agree on the tick, and UTC has no daylight-saving gaps or repeats).

*Who.*  Several worker processes (or hosts) serve the same function; each
tick must run once.  Gearman's unique ids merge two submits of the same id
only while the first job is still queued or running, so a per-tick unique id
alone lets a fast job run twice.  The job server itself breaks the tie: its
admin ``workers`` list names every connection's client id and functions, and
at each tick every process asks it and only the one with the lowest client id
among those registered for the function submits (:func:`elect`).  Every
process sees the same list, so exactly one submits, and nothing but gearmand
has to be shared.  The unique id per tick (:func:`tick_unique`) stays as a
second guard for the moments when two processes disagree (one joins or leaves
between their two queries).

Clocks: each process fires at the tick time by its own clock, but only the
elected one submits, and the tick's id comes from the tick time, not the
moment of submission, so a steady skew between hosts changes nothing while the
elected process stays the same.  When the elected process goes away, the next
one takes over on its own clock: if that clock is behind by d seconds, a tick
within d of the change may run a second time; if ahead, one may be skipped.
Keep hosts on NTP (skews are then milliseconds, far below a tick).
"""

from __future__ import annotations

import calendar
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ..errors import GearworkerError

__all__ = ["Cron", "Interval", "Schedule", "ScheduleError", "WorkerEntry", "elect", "parse", "tick_unique"]

#: gearmand 1.1.20's safe unique id length (see gearworker.client.MAX_UNIQUE_SIZE).
_MAX_UNIQUE = 63


class ScheduleError(GearworkerError, ValueError):
    """A schedule (interval or cron expression) is not valid."""


class Schedule(Protocol):
    """When ticks fall: the first tick strictly after a moment."""

    def next_after(self, epoch: float) -> int:
        """The first tick (Unix time, whole seconds) strictly after ``epoch``."""
        ...


@dataclass(frozen=True, slots=True)
class Interval:
    """A tick every ``seconds``, on multiples of ``seconds`` since the Unix epoch."""

    seconds: int

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int) or self.seconds < 1:
            raise ScheduleError(f"an interval must be a whole number of seconds >= 1, got {self.seconds!r}")

    def next_after(self, epoch: float) -> int:
        return (math.floor(epoch) // self.seconds + 1) * self.seconds

    def __str__(self) -> str:
        return f"every {self.seconds}s"


_MONTHS = {
    name: i
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _WEEKDAYS),  # 0 and 7 are both Sunday
)


@dataclass(frozen=True, slots=True)
class Cron:
    """A standard 5-field cron expression, evaluated in UTC.

    ``minute hour day-of-month month day-of-week``; each field is ``*``, a
    number, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n``, or a
    comma-separated list of those.  Months and weekdays take names (``jan``,
    ``mon-fri``); Sunday is 0 or 7.  As in Vixie cron, when both day fields are
    restricted a day matching either one matches.  ``@hourly``, ``@daily``,
    ``@weekly``, ``@monthly`` and ``@yearly`` are accepted too.
    """

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day of month is "*"
    any_weekday: bool  # day of week is "*"

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse ``text``; raise :class:`ScheduleError` saying which field is wrong."""
        spec = _MACROS.get(text.strip().lower(), text)
        parts = spec.split()
        if len(parts) != 5:
            raise ScheduleError(
                f"cron expression {text!r} has {len(parts)} fields, expected 5 "
                "(minute hour day-of-month month day-of-week)"
            )
        sets = [_parse_field(part, f, text) for part, f in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        cron = cls(text.strip(), sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")
        if cron.any_weekday and not any(_day_exists(m, d) for m in cron.months for d in cron.days):
            raise ScheduleError(f"cron expression {text!r} names a day that never exists in its months")
        return cron

    def _day_matches(self, day: datetime) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, epoch: float) -> int:
        # Start at the next whole minute, then skip whole months, days and hours
        # that cannot match: at most a few hundred steps even for rare
        # expressions (a leap day is found within 8 years of day steps).
        t = datetime.fromtimestamp(math.floor(epoch), UTC).replace(second=0) + timedelta(minutes=1)
        limit = t + timedelta(days=366 * 8 + 2)
        while t < limit:
            if t.month not in self.months:
                t = _next_month(t)
            elif not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
            elif t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return calendar.timegm(t.utctimetuple())
        raise ScheduleError(f"cron expression {self.text!r} never matches")  # pragma: no cover - parse() rules it out

    def __str__(self) -> str:
        return self.text


def _next_month(t: datetime) -> datetime:
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month, day=1, hour=0, minute=0)


def _day_exists(month: int, day: int) -> bool:
    return day <= calendar.monthrange(2024, month)[1]  # 2024: a leap year, so Feb 29 exists


def _parse_field(text: str, f: _Field, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        try:
            values.update(_parse_item(item.strip().lower(), f))
        except ScheduleError as e:
            raise ScheduleError(f"cron expression {expression!r}: {f.name} field {text!r}: {e}") from None
    return frozenset(values)


def _parse_item(item: str, f: _Field) -> Iterable[int]:
    if not item:
        raise ScheduleError("empty list item")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        step = _number(step_text, f, what="step", low=1, high=f.high - f.low + 1)
    if base == "*":
        low, high = f.low, f.high
    elif "-" in base:
        a, _, b = base.partition("-")
        low, high = _value(a, f), _value(b, f)
        if low > high:
            raise ScheduleError(f"range {base!r} runs backwards")
    else:
        low = _value(base, f)
        high = f.high if slash else low  # "5/15": from 5 to the end, every 15
    return range(low, high + 1, step)


def _value(text: str, f: _Field) -> int:
    if f.names is not None and text in f.names:
        return f.names[text]
    return _number(text, f, what="value", low=f.low, high=f.high)


def _number(text: str, f: _Field, *, what: str, low: int, high: int) -> int:
    if not text.isdigit():
        names = f" or a name ({', '.join(f.names)})" if f.names else ""
        raise ScheduleError(f"{what} {text!r} is not a number{names}")
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"{what} {value} is outside {low}-{high}")
    return value


def parse(value: object) -> Interval | Cron:
    """A schedule from a decorator's ``schedule=``: seconds (int) or a cron expression (str)."""
    if isinstance(value, str):
        return Cron.parse(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Interval(value)
    raise ScheduleError(f"schedule must be whole seconds (int >= 1) or a cron expression (str), got {value!r}")


def tick_unique(function: str, tick: int) -> str:
    """The unique id of ``function``'s job for ``tick``: ``sched:<function>:<tick>``.

    Function names too long for gearmand's 63-byte limit are replaced by a
    hash of the name, so every process still computes the same id.
    """
    unique = f"sched:{function}:{tick}"
    if len(unique.encode()) <= _MAX_UNIQUE:
        return unique
    digest = hashlib.blake2b(function.encode(), digest_size=12).hexdigest()
    return f"sched:{digest}:{tick}"


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    """One connection in a job server's ``workers`` list (see :class:`gearworker.protocol.WorkerRow`)."""

    client_id: str
    functions: tuple[str, ...]


def elect(rows: Iterable[WorkerEntry], function: str) -> str | None:
    """The client id that submits ``function``'s ticks: the lowest among connections registered for it.

    Connections without a client id (gearmand shows ``-``) are not ours and
    cannot be told apart, so they never win.  ``None`` when no connection
    serves the function (e.g. every worker is between reconnects).
    """
    ids = [r.client_id for r in rows if function in r.functions and r.client_id not in ("", "-")]
    return min(ids) if ids else None
