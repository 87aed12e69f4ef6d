"""Unit tests of retention.rules: periods, calendar expiry, and time zones."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.rules import (
    Period,
    PeriodError,
    Window,
    expired_as_of,
    expired_windows,
    expiry,
    last_expired_date,
    parse_period,
    to_wall_time,
    wall_time_to_utc,
)

PARIS = ZoneInfo("Europe/Paris")
HOUR = timedelta(hours=1)
MICROSECOND = timedelta(microseconds=1)


def reference_expiry(clock: datetime, period: Period) -> datetime:
    """Calendar months first (clamped to the month's end), then exact days and seconds."""
    shifted: datetime = clock + relativedelta(months=period.months)
    return shifted + timedelta(days=period.days, seconds=period.seconds)


def in_some_window(clock: datetime, windows: tuple[Window, ...]) -> bool:
    return any(
        (window.start is None or window.start <= clock) and clock <= window.end
        for window in windows
    )


# --- parse_period -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "months", "days", "seconds"),
    [
        ("7d", 0, 7, 0),
        ("2w", 0, 14, 0),
        ("6mo", 6, 0, 0),
        ("1y", 12, 0, 0),
        ("5y", 60, 0, 0),
        ("10y", 120, 0, 0),
        ("0d", 0, 0, 0),
        ("1y6mo", 18, 0, 0),
        ("1y2w3d", 12, 17, 0),
        ("12h", 0, 0, 43_200),
        ("30min", 0, 0, 1_800),
        ("10s", 0, 0, 10),
        ("1d12h", 0, 1, 43_200),
        ("P1Y6M", 18, 0, 0),
        ("P90D", 0, 90, 0),
        ("PT12H", 0, 0, 43_200),
        ("PT30M", 0, 0, 1_800),
        ("P1M", 1, 0, 0),
        ("P2W", 0, 14, 0),
        ("P1M1D", 1, 1, 0),
        ("P1DT2H3M4S", 0, 1, 7_384),
        ("p1y", 12, 0, 0),
    ],
)
def test_parse_period_accepts_short_units_and_iso_8601(
    text: str, months: int, days: int, seconds: int
) -> None:
    period = parse_period(text)

    assert (period.months, period.days, period.seconds) == (months, days, seconds)
    assert period.text == text
    assert str(period) == text


def test_parse_period_strips_surrounding_blanks() -> None:
    assert parse_period("  90d ") == Period(days=90, text="90d")


@pytest.mark.parametrize(
    ("text", "has_time_part"), [("1y", False), ("7d", False), ("12h", True), ("P1DT1S", True)]
)
def test_has_time_part_is_true_only_with_hours_minutes_or_seconds(
    text: str, has_time_part: bool
) -> None:
    assert parse_period(text).has_time_part is has_time_part


@pytest.mark.parametrize("number", [7, 7.0, True])
def test_parse_period_refuses_a_non_string_saying_a_bare_number_is_ambiguous(
    number: object,
) -> None:
    with pytest.raises(PeriodError, match="must be a string") as caught:
        parse_period(number)  # type: ignore[arg-type]

    assert "ambiguous" in str(caught.value)


def test_parse_period_refuses_none() -> None:
    with pytest.raises(PeriodError, match=r"must be a string.*NoneType"):
        parse_period(None)  # type: ignore[arg-type]


def test_parse_period_refuses_a_string_of_digits_and_suggests_units() -> None:
    with pytest.raises(PeriodError, match="has no unit") as caught:
        parse_period("7")

    assert "'7d'" in str(caught.value)
    assert "'7y'" in str(caught.value)


@pytest.mark.parametrize("text", ["", "   "])
def test_parse_period_refuses_an_empty_string_and_shows_0d(text: str) -> None:
    with pytest.raises(PeriodError, match="cannot be empty") as caught:
        parse_period(text)

    assert "'0d'" in str(caught.value)


def test_parse_period_refuses_m_alone_and_points_to_mo_and_min() -> None:
    with pytest.raises(PeriodError, match="'7m' is not a period") as caught:
        parse_period("7m")

    assert "'mo' for months" in str(caught.value)
    assert "'min' for minutes" in str(caught.value)


@pytest.mark.parametrize("text", ["1.5y", "-1d", "d7", "7 d", "1y 6mo", "7days", "y", "7d!"])
def test_parse_period_refuses_malformed_short_periods_and_lists_units(text: str) -> None:
    with pytest.raises(PeriodError, match="is not a period") as caught:
        parse_period(text)

    assert "y, mo, w, d, h, min, s" in str(caught.value)


def test_parse_period_refuses_a_repeated_unit() -> None:
    with pytest.raises(PeriodError, match="repeats the unit 'd'"):
        parse_period("1d1d")


@pytest.mark.parametrize("text", ["P", "PT", "P1YT", "P1.5Y", "P-1D", "P1D2Y", "PXY", "pt"])
def test_parse_period_refuses_malformed_iso_durations(text: str) -> None:
    with pytest.raises(PeriodError, match="not an ISO 8601 duration") as caught:
        parse_period(text)

    assert "fractions and negative durations are not accepted" in str(caught.value)


def test_period_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="is not a period"):
        parse_period("forever")


# --- expiry and expired_windows -----------------------------------------------------------------


def test_one_year_after_a_leap_day_is_the_28th_of_february() -> None:
    assert expiry(datetime(2024, 2, 29, 10), parse_period("1y")) == datetime(2025, 2, 28, 10)
    assert expiry(datetime(2024, 2, 29, 10), parse_period("P1Y")) == datetime(2025, 2, 28, 10)


@pytest.mark.parametrize(
    ("clock", "period", "expected"),
    [
        (datetime(2026, 1, 31, 8), "1mo", datetime(2026, 2, 28, 8)),
        (datetime(2024, 1, 31, 8), "1mo", datetime(2024, 2, 29, 8)),
        (datetime(2026, 1, 31, 8), "P1M1D", datetime(2026, 3, 1, 8)),
        (datetime(2026, 3, 31, 8), "1mo", datetime(2026, 4, 30, 8)),
        (datetime(2026, 3, 1, 8), "90d", datetime(2026, 5, 30, 8)),
        (datetime(2026, 3, 1, 20), "12h", datetime(2026, 3, 2, 8)),
        (datetime(2026, 3, 1, 20), "0d", datetime(2026, 3, 1, 20)),
    ],
)
def test_expiry_adds_calendar_months_then_days_and_time(
    clock: datetime, period: str, expected: datetime
) -> None:
    assert expiry(clock, parse_period(period)) == expected


@pytest.mark.parametrize(
    ("clock", "expired"),
    [
        (datetime(2024, 2, 28, 10), True),
        (datetime(2024, 2, 28, 10, 0, 1), False),
        (datetime(2024, 2, 28, 23), False),
        (datetime(2024, 2, 29, 0), True),
        (datetime(2024, 2, 29, 10), True),
        (datetime(2024, 2, 29, 10, 0, 0, 1), False),
        (datetime(2024, 2, 29, 10, 0, 1), False),
        (datetime(2024, 3, 1), False),
        (datetime(2023, 2, 28, 10), True),
    ],
)
def test_one_year_as_of_the_28th_of_february_expires_the_leap_day_up_to_the_same_time(
    clock: datetime, expired: bool
) -> None:
    as_of = datetime(2025, 2, 28, 10)
    windows = expired_windows(parse_period("1y"), as_of)

    assert in_some_window(clock, windows) is expired
    assert (expiry(clock, parse_period("1y")) <= as_of) is expired


def test_one_year_as_of_the_28th_of_february_has_a_window_for_the_leap_day() -> None:
    assert expired_windows(parse_period("1y"), datetime(2025, 2, 28, 10)) == (
        Window(None, datetime(2024, 2, 28, 10)),
        Window(datetime(2024, 2, 29), datetime(2024, 2, 29, 10)),
    )


@pytest.mark.parametrize("as_of", [datetime(2026, 3, 31, 9), datetime(2026, 3, 30, 9)])
def test_one_month_before_the_30th_or_31st_of_march_is_all_of_february(as_of: datetime) -> None:
    windows = expired_windows(parse_period("1mo"), as_of)

    assert windows == (Window(None, datetime(2026, 3, 1) - MICROSECOND),)
    assert in_some_window(datetime(2026, 2, 28, 23, 59, 59), windows)
    assert not in_some_window(datetime(2026, 3, 1), windows)


def test_one_month_before_the_29th_of_march_in_a_common_year_is_all_of_february() -> None:
    windows = expired_windows(parse_period("1mo"), datetime(2026, 3, 29, 9))

    assert windows == (Window(None, datetime(2026, 3, 1) - MICROSECOND),)


def test_one_month_before_the_29th_of_march_in_a_leap_year_stops_at_the_same_time() -> None:
    windows = expired_windows(parse_period("1mo"), datetime(2024, 3, 29, 9))

    assert windows == (Window(None, datetime(2024, 2, 29, 9)),)


def test_one_month_before_the_last_day_of_a_common_february_covers_the_end_of_january() -> None:
    as_of = datetime(2026, 2, 28, 10)
    expected = (
        Window(None, datetime(2026, 1, 28, 10)),
        Window(datetime(2026, 1, 29), datetime(2026, 1, 29, 10)),
        Window(datetime(2026, 1, 30), datetime(2026, 1, 30, 10)),
        Window(datetime(2026, 1, 31), datetime(2026, 1, 31, 10)),
    )

    assert expired_windows(parse_period("1mo"), as_of) == expected
    assert expired_windows(parse_period("P1M1D"), as_of + timedelta(days=1)) == expected


def test_one_month_before_the_middle_of_a_month_is_a_single_window() -> None:
    assert expired_windows(parse_period("1mo"), datetime(2026, 2, 15, 10)) == (
        Window(None, datetime(2026, 1, 15, 10)),
    )


def test_zero_days_expires_everything_up_to_as_of_itself() -> None:
    as_of = datetime(2026, 11, 23, 12, 34, 56, 789)

    assert expired_windows(parse_period("0d"), as_of) == (Window(None, as_of),)


def test_a_time_part_shifts_the_cutoff_by_exact_hours() -> None:
    assert expired_windows(parse_period("PT12H"), datetime(2025, 3, 1, 10)) == (
        Window(None, datetime(2025, 2, 28, 22)),
    )


def test_a_month_with_a_time_part_shifts_the_time_before_inverting_the_months() -> None:
    windows = expired_windows(parse_period("1mo12h"), datetime(2026, 3, 1, 10))

    assert windows == (
        Window(None, datetime(2026, 1, 28, 22)),
        Window(datetime(2026, 1, 29), datetime(2026, 1, 29, 22)),
        Window(datetime(2026, 1, 30), datetime(2026, 1, 30, 22)),
        Window(datetime(2026, 1, 31), datetime(2026, 1, 31, 22)),
    )


@pytest.mark.parametrize(
    ("period", "as_of", "expected"),
    [
        ("1y", datetime(2025, 3, 1, 8), date(2024, 2, 29)),
        ("1y", datetime(2025, 2, 28, 23), date(2024, 2, 27)),
        ("1mo", datetime(2026, 3, 1), date(2026, 1, 31)),
        ("1mo", datetime(2026, 3, 31), date(2026, 2, 28)),
        ("0d", datetime(2026, 3, 31, 23, 59), date(2026, 3, 30)),
        ("7d", datetime(2026, 3, 31), date(2026, 3, 23)),
    ],
)
def test_last_expired_date_is_the_last_day_whose_expiry_day_is_over(
    period: str, as_of: datetime, expected: date
) -> None:
    assert last_expired_date(parse_period(period), as_of) == expected


def test_last_expired_date_refuses_a_period_with_a_time_part() -> None:
    with pytest.raises(PeriodError, match="'12h' has a time part"):
        last_expired_date(parse_period("12h"), datetime(2026, 3, 1))


PROPERTY_PERIODS = [
    "0d",
    "1d",
    "7d",
    "90d",
    "12h",
    "PT30M",
    "1mo",
    "P1M1D",
    "1mo12h",
    "6mo",
    "18mo",
    "1y",
    "2y",
    "3y",
    "5y",
    "10y",
    "P1Y1D",
]
DATE_PERIODS = [text for text in PROPERTY_PERIODS if not parse_period(text).has_time_part]
NEAR_SECONDS = 4 * 24 * 3600


def wall_time(month_index: int, day: int, seconds: int, microseconds: int) -> datetime:
    """A naive instant in month ``month_index`` after January 2000; ``day`` counts from the end of
    the month when it is zero or negative (0: the last day)."""
    year, month = 2000 + month_index // 12, month_index % 12 + 1
    last_day = calendar.monthrange(year, month)[1]
    chosen = min(day, last_day) if day > 0 else last_day + day
    return datetime(year, month, chosen) + timedelta(seconds=seconds, microseconds=microseconds)


wall_times = st.builds(
    wall_time,
    st.integers(0, 41 * 12 - 1),
    st.one_of(st.integers(-3, 1), st.integers(1, 31)),
    st.one_of(st.just(0), st.integers(0, 86_399)),
    st.sampled_from([0, 1, 999_999]),
)


SWEEP = [
    timedelta(days=days, microseconds=microseconds)
    for days in range(-1, 4)
    for microseconds in (-1, 0, 1)
]


@settings(max_examples=800, deadline=None)
@given(
    as_of=wall_times,
    period_text=st.sampled_from(PROPERTY_PERIODS),
    offset_seconds=st.integers(-NEAR_SECONDS, NEAR_SECONDS),
)
def test_a_clock_value_is_in_a_window_exactly_when_it_has_expired(
    as_of: datetime, period_text: str, offset_seconds: int
) -> None:
    period = parse_period(period_text)
    windows = expired_windows(period, as_of)
    boundary = as_of - relativedelta(months=period.months, days=period.days, seconds=period.seconds)
    midnight = datetime.combine(boundary.date(), time())
    random_clock = boundary + timedelta(seconds=offset_seconds)
    clocks = [random_clock] + [anchor + step for anchor in (boundary, midnight) for step in SWEEP]

    assert expiry(random_clock, period) == reference_expiry(random_clock, period)
    for clock in clocks:
        expired = reference_expiry(clock, period) <= as_of
        assert in_some_window(clock, windows) is expired, clock


@settings(max_examples=800, deadline=None)
@given(as_of=wall_times, period_text=st.sampled_from(DATE_PERIODS))
def test_a_date_is_at_most_the_last_expired_date_exactly_when_its_expiry_day_is_over(
    as_of: datetime, period_text: str
) -> None:
    period = parse_period(period_text)
    shift = relativedelta(months=period.months, days=period.days)
    last = last_expired_date(period, as_of)
    start = as_of.date() - shift

    for offset in range(-5, 6):
        day = start + timedelta(days=offset)
        assert (day <= last) is (day + shift < as_of.date()), day


# --- time zones ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wall", "upper", "expected"),
    [
        (datetime(2026, 3, 29, 2, 30), True, datetime(2026, 3, 29, 0, 30, tzinfo=UTC)),
        (datetime(2026, 3, 29, 2, 30), False, datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        (datetime(2026, 10, 25, 2, 30), True, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        (datetime(2026, 10, 25, 2, 30), False, datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
        (datetime(2026, 7, 1, 12), True, datetime(2026, 7, 1, 10, tzinfo=UTC)),
        (datetime(2026, 7, 1, 12), False, datetime(2026, 7, 1, 10, tzinfo=UTC)),
        (datetime(2026, 1, 15, 12), True, datetime(2026, 1, 15, 11, tzinfo=UTC)),
    ],
)
def test_wall_time_to_utc_takes_the_earlier_instant_for_upper_and_the_later_for_lower_bounds(
    wall: datetime, upper: bool, expected: datetime
) -> None:
    assert wall_time_to_utc(wall, PARIS, upper=upper) == expected


def test_to_wall_time_shows_the_zone_s_clock_without_a_zone() -> None:
    wall = to_wall_time(datetime(2026, 7, 1, 12, tzinfo=UTC), PARIS)

    assert wall == datetime(2026, 7, 1, 14)
    assert wall.tzinfo is None


def test_to_wall_time_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        to_wall_time(datetime(2026, 7, 1, 12), PARIS)


@pytest.mark.parametrize(
    ("as_of", "cutoff", "span"),
    [
        (datetime(2026, 3, 29, 8, tzinfo=UTC), datetime(2026, 3, 28, 9, tzinfo=UTC), 23 * HOUR),
        (datetime(2026, 3, 30, 8, tzinfo=UTC), datetime(2026, 3, 29, 8, tzinfo=UTC), 24 * HOUR),
        (datetime(2026, 10, 25, 9, tzinfo=UTC), datetime(2026, 10, 24, 8, tzinfo=UTC), 25 * HOUR),
        (datetime(2026, 10, 26, 9, tzinfo=UTC), datetime(2026, 10, 25, 9, tzinfo=UTC), 24 * HOUR),
    ],
    ids=["spring-day", "day-after-spring", "autumn-day", "day-after-autumn"],
)
def test_one_day_in_paris_is_the_same_wall_time_the_day_before_across_dst(
    as_of: datetime, cutoff: datetime, span: timedelta
) -> None:
    expired = expired_as_of(parse_period("1d"), as_of, PARIS)

    assert expired.cutoff == cutoff
    assert as_of - expired.cutoff == span
    assert (
        to_wall_time(expired.cutoff, PARIS).time()
        == to_wall_time(as_of, PARIS).time()
        == (datetime(2026, 1, 1, 10).time())
    )


@pytest.mark.parametrize(
    "as_of",
    [datetime(2026, 3, 29, 8, tzinfo=UTC), datetime(2026, 10, 25, 9, tzinfo=UTC)],
)
def test_one_day_in_utc_is_always_24_hours(as_of: datetime) -> None:
    expired = expired_as_of(parse_period("1d"), as_of, ZoneInfo("UTC"))

    assert expired.cutoff == as_of - 24 * HOUR
    assert expired.windows == (Window(None, as_of - 24 * HOUR),)


def test_expired_as_of_returns_utc_windows_with_the_leap_day_window() -> None:
    expired = expired_as_of(
        parse_period("1y"), datetime(2025, 2, 28, 10, tzinfo=UTC), ZoneInfo("UTC")
    )

    assert expired.windows == (
        Window(None, datetime(2024, 2, 28, 10, tzinfo=UTC)),
        Window(datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 2, 29, 10, tzinfo=UTC)),
    )
    assert all(window.end.utcoffset() == timedelta(0) for window in expired.windows)


def test_expired_as_of_converts_extra_windows_from_the_policy_zone() -> None:
    expired = expired_as_of(parse_period("1y"), datetime(2025, 2, 28, 9, tzinfo=UTC), PARIS)

    assert expired.windows == (
        Window(None, datetime(2024, 2, 28, 9, tzinfo=UTC)),
        Window(datetime(2024, 2, 28, 23, tzinfo=UTC), datetime(2024, 2, 29, 9, tzinfo=UTC)),
    )


@pytest.mark.parametrize(
    ("zone", "expected"),
    [(PARIS, date(2026, 3, 28)), (ZoneInfo("UTC"), date(2026, 3, 27))],
)
def test_last_date_uses_the_date_on_the_policy_zone_s_calendar(
    zone: ZoneInfo, expected: date
) -> None:
    as_of = datetime(2026, 3, 29, 23, 30, tzinfo=UTC)

    assert expired_as_of(parse_period("1d"), as_of, zone).last_date == expected


def test_last_date_is_none_for_a_period_with_a_time_part() -> None:
    expired = expired_as_of(parse_period("12h"), datetime(2026, 7, 1, 12, tzinfo=UTC), PARIS)

    assert expired.last_date is None
    assert expired.cutoff == datetime(2026, 7, 1, tzinfo=UTC)


def test_a_cutoff_in_the_spring_gap_takes_the_earlier_instant() -> None:
    as_of = datetime(2026, 3, 30, 0, 30, tzinfo=UTC)

    expired = expired_as_of(parse_period("1d"), as_of, PARIS)

    assert to_wall_time(as_of, PARIS) == datetime(2026, 3, 30, 2, 30)
    assert expired.cutoff == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert to_wall_time(expired.cutoff, PARIS) + timedelta(days=1) <= to_wall_time(as_of, PARIS)


def test_a_cutoff_in_the_autumn_fold_takes_the_first_of_the_two_instants() -> None:
    as_of = datetime(2026, 10, 26, 1, 30, tzinfo=UTC)

    expired = expired_as_of(parse_period("1d"), as_of, PARIS)

    assert to_wall_time(as_of, PARIS) == datetime(2026, 10, 26, 2, 30)
    assert expired.cutoff == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_a_time_part_is_exact_elapsed_time_across_a_dst_change() -> None:
    as_of = datetime(2026, 3, 29, 10, tzinfo=UTC)

    assert expired_as_of(parse_period("12h"), as_of, PARIS).cutoff == as_of - 12 * HOUR


def test_non_ascii_digits_are_not_a_period() -> None:
    with pytest.raises(PeriodError):
        parse_period("\u0667d")
