"""Maintenance windows: days, overnight windows, time zones and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specivod.domain.windows import Window, is_open, next_opening, open_until

BERLIN = ZoneInfo("Europe/Berlin")
WEEKEND_NIGHTS = Window(frozenset({5, 6}), time(2, 0), time(5, 0), BERLIN)
OVERNIGHT = Window(frozenset({4}), time(22, 0), time(2, 0), ZoneInfo("UTC"))


def berlin(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def test_open_inside_and_closed_outside() -> None:
    assert is_open([WEEKEND_NIGHTS], berlin(2026, 11, 28, 3, 0))  # Saturday
    assert not is_open([WEEKEND_NIGHTS], berlin(2026, 11, 28, 5, 0))  # end is exclusive
    assert not is_open([WEEKEND_NIGHTS], berlin(2026, 11, 27, 3, 0))  # Friday
    assert is_open([WEEKEND_NIGHTS], berlin(2026, 11, 28, 2, 0))


def test_overnight_window_belongs_to_the_day_it_starts() -> None:
    friday_late = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    saturday_early = datetime(2026, 11, 28, 1, 59, tzinfo=UTC)
    saturday_late = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    assert is_open([OVERNIGHT], friday_late)
    assert is_open([OVERNIGHT], saturday_early)
    assert not is_open([OVERNIGHT], saturday_late)
    assert open_until([OVERNIGHT], friday_late) == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def test_next_opening_in_local_time() -> None:
    wednesday = berlin(2026, 11, 25, 12, 0)
    assert next_opening([WEEKEND_NIGHTS], wednesday) == berlin(2026, 11, 28, 2, 0)
    inside = berlin(2026, 11, 28, 3, 0)
    assert next_opening([WEEKEND_NIGHTS], inside) == berlin(2026, 11, 29, 2, 0)


def test_no_windows_means_never() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    assert not is_open([], now)
    assert next_opening([], now) is None


def test_window_through_the_spring_forward_gap_is_shorter() -> None:
    # 2027-03-28: Berlin clocks jump from 02:00 to 03:00; a 01:00-04:00 window lasts 2 hours.
    sunday = Window(frozenset({6}), time(1, 0), time(4, 0), BERLIN)
    opens = next_opening([sunday], datetime(2027, 3, 27, 12, 0, tzinfo=UTC))
    assert opens == datetime(2027, 3, 28, 0, 0, tzinfo=UTC)
    assert open_until([sunday], opens) == datetime(2027, 3, 28, 2, 0, tzinfo=UTC)


def test_window_through_the_fall_back_change_is_longer() -> None:
    # 2026-10-25: Berlin clocks go from 03:00 back to 02:00; a 01:00-04:00 window lasts 4 hours.
    sunday = Window(frozenset({6}), time(1, 0), time(4, 0), BERLIN)
    opens = next_opening([sunday], datetime(2026, 10, 24, 12, 0, tzinfo=UTC))
    assert opens is not None
    assert open_until([sunday], opens) - opens == timedelta(hours=4)  # type: ignore[operator]


@given(
    st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    )
)
def test_next_opening_is_a_moment_the_window_is_open(now: datetime) -> None:
    opening = next_opening([WEEKEND_NIGHTS], now)
    assert opening is not None and opening > now
    assert is_open([WEEKEND_NIGHTS], opening)
    assert opening - now <= timedelta(days=7, hours=2)


def test_the_window_is_closed_at_its_closing_instant_and_open_until_is_none_then() -> None:
    closing = berlin(2026, 11, 28, 5, 0)

    assert open_until([WEEKEND_NIGHTS], closing - timedelta(microseconds=1)) == closing
    assert open_until([WEEKEND_NIGHTS], closing) is None
    assert open_until([WEEKEND_NIGHTS], berlin(2026, 11, 27, 3, 0)) is None
    assert WEEKEND_NIGHTS.closes_at(closing) is None


def test_next_opening_is_strictly_after_now() -> None:
    opening = berlin(2026, 11, 28, 2, 0)  # Saturday

    assert next_opening([WEEKEND_NIGHTS], opening - timedelta(seconds=1)) == opening
    assert next_opening([WEEKEND_NIGHTS], opening) == berlin(2026, 11, 29, 2, 0)


def test_a_window_without_days_never_opens() -> None:
    never = Window(frozenset(), time(2, 0), time(5, 0), BERLIN)
    now = berlin(2026, 11, 28, 3, 0)

    assert not is_open([never], now)
    assert next_opening([never], now) is None
    assert open_until([never], now) is None


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^window checks need a timezone-aware datetime$"):
        is_open([WEEKEND_NIGHTS], datetime(2026, 11, 28, 3, 0))
