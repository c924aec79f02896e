"""When the daemon may start an unattended upgrade: pure decisions over an injected ``now``.

Rule: only inside a maintenance window, and only when the upgrade can be expected to finish
before that window closes. The expectation is the longest of the recent finished upgrades (a
rollback must fit too), or ``policy.expected_duration`` before any has run. No window configured
means never. A pause, a ROLLBACK_FAILED nobody resolved, a Docker Engine that does not answer
and a pin that is not a release each stop unattended upgrades with a reason the status shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from specivod.domain.durations import format_duration
from specivod.domain.windows import Window, is_open, next_opening, open_until

RECENT_UPGRADES = 5


def expected_duration(recent_seconds: Iterable[float], default: timedelta) -> timedelta:
    """The longest of the last ``RECENT_UPGRADES`` finished upgrades (newest first), or
    ``default`` when none has finished yet."""
    recent = [seconds for seconds in recent_seconds if seconds >= 0][:RECENT_UPGRADES]
    return timedelta(seconds=max(recent)) if recent else default


@dataclass(frozen=True)
class WindowVerdict:
    open: bool
    fits: bool
    closes_at: datetime | None
    next_opening: datetime | None
    reason: str


def window_verdict(windows: Sequence[Window], now: datetime, expected: timedelta) -> WindowVerdict:
    """Whether an upgrade expected to take ``expected`` may start at ``now``. Arithmetic is in
    UTC: adding to a wall-clock ``now`` would count a DST change's hour wrong."""
    now = now.astimezone(UTC)
    upcoming = next_opening(windows, now)
    if not windows:
        return WindowVerdict(
            False, False, None, None, "no maintenance window is configured: never unattended"
        )
    if not is_open(windows, now):
        when = upcoming.isoformat() if upcoming else "never"
        return WindowVerdict(False, False, None, upcoming, f"window closed; next opens {when}")
    closes = open_until(windows, now)
    assert closes is not None  # an open window has an end
    if now + expected > closes:
        left = format_duration(max(closes - now, timedelta(0)))
        return WindowVerdict(
            True,
            False,
            closes,
            upcoming,
            f"window open until {closes.isoformat()}, but {left} left is less than the "
            f"{format_duration(expected)} an upgrade is expected to take",
        )
    return WindowVerdict(True, True, closes, upcoming, f"window open until {closes.isoformat()}")


@dataclass(frozen=True)
class Gate:
    """Why an unattended upgrade may not start now; ``None`` fields mean no objection."""

    window: WindowVerdict
    paused: str | None = None
    needs_a_person: str | None = None
    pin_problem: str | None = None
    engine: str | None = None
    """The Docker Engine does not answer: an upgrade would only abort."""

    @property
    def blocked_by(self) -> str | None:
        for reason in (self.needs_a_person, self.engine, self.pin_problem, self.paused):
            if reason is not None:
                return reason
        return None if self.window.fits else self.window.reason

    @property
    def may_start(self) -> bool:
        return self.blocked_by is None
