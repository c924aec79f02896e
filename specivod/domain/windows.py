"""Maintenance windows: on which days, from when to when, in which IANA time zone.

A window belongs to the local day it starts on; an ``end`` at or before ``start`` means it runs
past midnight into the next day (``00:00``-``00:00`` is the whole day). Wall-clock times that do not
exist on a DST change are resolved the way ``zoneinfo`` resolves them (fold=0). With no windows
configured, no window is ever open: unattended upgrades need an explicit window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    """One recurring maintenance window."""

    days: frozenset[int]
    start: time
    end: time
    timezone: ZoneInfo

    def _interval(self, day: date) -> tuple[datetime, datetime]:
        opens = datetime.combine(day, self.start, tzinfo=self.timezone)
        closes_on = day if self.end > self.start else day + timedelta(days=1)
        closes = datetime.combine(closes_on, self.end, tzinfo=self.timezone)
        return opens.astimezone(UTC), closes.astimezone(UTC)

    def _intervals_around(self, now: datetime, days_ahead: int) -> list[tuple[datetime, datetime]]:
        today = now.astimezone(self.timezone).date()
        return [
            self._interval(day)
            for offset in range(-1, days_ahead + 1)
            if (day := today + timedelta(days=offset)).weekday() in self.days
        ]

    def contains(self, now: datetime) -> bool:
        return any(opens <= now < closes for opens, closes in self._intervals_around(now, 0))

    def next_opening(self, now: datetime) -> datetime | None:
        """The first time after ``now`` at which this window opens."""
        openings = [opens for opens, _ in self._intervals_around(now, 8) if opens > now]
        return min(openings, default=None)

    def closes_at(self, now: datetime) -> datetime | None:
        """When the interval containing ``now`` closes, or ``None`` when it is closed."""
        ends = [closes for opens, closes in self._intervals_around(now, 0) if opens <= now < closes]
        return max(ends, default=None)


def _require_aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("window checks need a timezone-aware datetime")
    return now.astimezone(UTC)


def is_open(windows: Sequence[Window], now: datetime) -> bool:
    moment = _require_aware(now)
    return any(window.contains(moment) for window in windows)


def next_opening(windows: Sequence[Window], now: datetime) -> datetime | None:
    """The next time after ``now`` that any window opens (``None`` without windows)."""
    moment = _require_aware(now)
    openings = [opening for w in windows if (opening := w.next_opening(moment)) is not None]
    return min(openings, default=None)


def open_until(windows: Sequence[Window], now: datetime) -> datetime | None:
    """When the currently open window closes, or ``None`` when none is open."""
    moment = _require_aware(now)
    closings = [closing for w in windows if (closing := w.closes_at(moment)) is not None]
    return max(closings, default=None)
