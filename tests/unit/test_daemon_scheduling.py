"""When the daemon may start an unattended upgrade: inside a window, and only if the expected
duration fits before it closes — on ordinary days and on DST change days."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from specivod.daemon.scheduling import Gate, expected_duration, window_verdict
from specivod.domain.windows import Window

SUNDAY = frozenset({6})


def window(zone: str, start: time = time(1, 0), end: time = time(4, 0)) -> Window:
    return Window(SUNDAY, start, end, ZoneInfo(zone))


def at(zone: str, text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def test_an_upgrade_that_does_not_fit_before_the_window_closes_does_not_start() -> None:
    berlin = [window("Europe/Berlin")]
    now = at("Europe/Berlin", "2026-03-22T03:10")  # an ordinary Sunday, 50 minutes left

    fits = window_verdict(berlin, now, timedelta(minutes=45))
    too_long = window_verdict(berlin, now, timedelta(minutes=55))

    assert fits.open and fits.fits
    assert too_long.open and not too_long.fits
    assert "50m left is less than the 55m" in too_long.reason
    assert not Gate(window=too_long).may_start
    assert Gate(window=fits).may_start


@pytest.mark.parametrize(
    ("zone", "day", "real_hours"),
    [
        ("Europe/Berlin", "2026-03-22", 3),  # ordinary
        ("Europe/Berlin", "2026-03-29", 2),  # 02:00 → 03:00: the window loses an hour
        ("Europe/Berlin", "2026-10-25", 4),  # 03:00 → 02:00: the window gains an hour
        ("America/New_York", "2026-03-01", 3),
        ("America/New_York", "2026-03-08", 2),
        ("America/New_York", "2026-11-01", 4),
    ],
)
def test_fits_before_close_counts_real_time_on_dst_days(
    zone: str, day: str, real_hours: int
) -> None:
    windows = [window(zone)]
    opening = at(zone, f"{day}T01:00")
    just_fits = timedelta(hours=real_hours) - timedelta(minutes=1)
    too_long = timedelta(hours=real_hours) + timedelta(minutes=1)

    assert window_verdict(windows, opening, just_fits).fits
    verdict = window_verdict(windows, opening, too_long)
    assert verdict.open and not verdict.fits
    assert verdict.closes_at == at(zone, f"{day}T04:00").astimezone(UTC)
    assert verdict.closes_at - opening.astimezone(UTC) == timedelta(hours=real_hours)


def test_closed_window_names_the_next_opening() -> None:
    windows = [window("Europe/Berlin")]
    verdict = window_verdict(windows, at("Europe/Berlin", "2026-03-23T12:00"), timedelta(0))

    assert not verdict.open and not verdict.fits
    assert verdict.next_opening == at("Europe/Berlin", "2026-03-29T01:00").astimezone(UTC)
    assert "next opens 2026-03-29T00:00:00+00:00" in verdict.reason


def test_no_window_means_never_unattended() -> None:
    verdict = window_verdict([], datetime(2026, 3, 29, tzinfo=UTC), timedelta(0))

    assert not verdict.fits
    assert verdict.next_opening is None
    assert "never unattended" in (Gate(window=verdict).blocked_by or "")


def test_expected_duration_is_the_longest_recent_upgrade_or_the_default() -> None:
    default = timedelta(minutes=30)

    assert expected_duration([], default) == default
    assert expected_duration([100.0, 400.0, 50.0], default) == timedelta(seconds=400)
    # only the five newest count
    assert expected_duration([10, 10, 10, 10, 10, 9000], default) == timedelta(seconds=10)


def test_a_person_needed_outranks_a_pause_and_an_open_window() -> None:
    open_window = window_verdict(
        [Window(frozenset(range(7)), time(0), time(0), ZoneInfo("UTC"))],
        datetime(2026, 3, 29, 12, tzinfo=UTC),
        timedelta(minutes=30),
    )

    gate = Gate(window=open_window, paused="paused", needs_a_person="ROLLBACK_FAILED")

    assert gate.blocked_by == "ROLLBACK_FAILED"
    assert Gate(window=open_window, paused="paused").blocked_by == "paused"
    assert Gate(window=open_window, pin_problem="pins 'latest'").blocked_by == "pins 'latest'"
