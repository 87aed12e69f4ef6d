"""Pure retention arithmetic: periods, and which clock values a rule considers expired.

A record expires when ``clock + period <= as_of`` on the calendar of the policy's time zone
(one year after 2024-02-29 is 2025-02-28). Databases cannot do that arithmetic portably, so this
module inverts it: given ``as_of`` and a period it returns the exact set of clock values that are
expired, as a few closed intervals that any SQL dialect can compare against. No I/O here.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)

# The longest period, and the instants a plan may be made as of. Together they keep every cutoff
# (as_of minus a period, a day or two of calendar clamping and time zones aside) inside the
# years a datetime and the databases can hold: 1970 - 1000 years is still year 970.
LONGEST_PERIOD_YEARS = 1000
_LONGEST_FROM = datetime(2000, 1, 1)
_LONGEST_TO = datetime(2000 + LONGEST_PERIOD_YEARS, 1, 1)
EARLIEST_AS_OF = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_AS_OF = datetime(9999, 1, 1, tzinfo=UTC)

_SHORT_UNIT_PATTERN = re.compile(r"([0-9]+)(y|mo|w|d|h|min|s)")
_ISO_PATTERN = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?",
    re.ASCII,
)


class PeriodError(ValueError):
    """A period that cannot be understood; the message says why and what is accepted."""


@dataclass(frozen=True)
class Period:
    """A calendar period: whole months (years are 12), then days, then an exact time part."""

    months: int = 0
    days: int = 0
    seconds: int = 0
    text: str = ""

    @property
    def has_time_part(self) -> bool:
        return self.seconds != 0

    def as_relativedelta(self) -> relativedelta:
        return relativedelta(months=self.months, days=self.days, seconds=self.seconds)

    def __str__(self) -> str:
        return self.text


def parse_period(text: str) -> Period:
    """Given a period as written in the config, return it as a Period.

    Accepted: short units ``7d``, ``2w``, ``6mo``, ``1y``, ``12h``, ``30min``, ``10s`` (combinable:
    ``1y6mo``) and ISO 8601 durations (``P1Y6M``, ``P90D``, ``PT12H``). A bare number is refused:
    nothing guesses whether it meant seconds or days. Nor is a period longer than 1000 years
    (``LONGEST_PERIOD_YEARS``): its cutoff would fall off the calendar. Example:
    ``parse_period("1y6mo")`` returns ``Period(months=18, days=0, seconds=0, text="1y6mo")``.
    """
    if not isinstance(text, str):
        raise PeriodError(
            f"a period must be a string such as '90d' or 'P1Y', not {type(text).__name__} "
            f"{text!r} (a bare number is ambiguous: seconds? days?)"
        )
    spelled = text.strip()
    if not spelled:
        raise PeriodError("a period cannot be empty; write e.g. '0d', '90d', '1y' or 'P1Y'")
    if spelled.isascii() and spelled.isdigit():
        raise PeriodError(
            f"{text!r} has no unit; write e.g. '{spelled}d' (days) or '{spelled}y' (years) "
            "— units: y, mo, w, d, h, min, s, or ISO 8601 like 'P1Y'"
        )
    try:
        period = _parse_iso_period(spelled) if spelled[0] in "Pp" else _parse_short_period(spelled)
    except PeriodError:
        raise
    except ValueError:  # a number of thousands of digits, too long for int()
        period = None
    if period is None or not _within_longest(period):
        raise PeriodError(
            f"{text!r} is longer than {LONGEST_PERIOD_YEARS} years, the longest period accepted "
            f"(e.g. '{LONGEST_PERIOD_YEARS}y')"
        )
    return period


def _within_longest(period: Period) -> bool:
    """Measured from 2000-01-01: '1000y', '12000mo' and '365243d' fit, '1000y1d' does not."""
    try:
        return _LONGEST_FROM + period.as_relativedelta() <= _LONGEST_TO
    except (OverflowError, ValueError):
        return False


def _parse_short_period(text: str) -> Period:
    position = 0
    months = days = seconds = 0
    seen_units: set[str] = set()
    for match in _SHORT_UNIT_PATTERN.finditer(text):
        if match.start() != position:
            break
        amount, unit = int(match.group(1)), match.group(2)
        if unit in seen_units:
            raise PeriodError(f"{text!r} repeats the unit {unit!r}")
        seen_units.add(unit)
        position = match.end()
        if unit == "y":
            months += 12 * amount
        elif unit == "mo":
            months += amount
        elif unit == "w":
            days += 7 * amount
        elif unit == "d":
            days += amount
        elif unit == "h":
            seconds += 3600 * amount
        elif unit == "min":
            seconds += 60 * amount
        else:
            seconds += amount
    if position != len(text) or position == 0:
        raise PeriodError(
            f"{text!r} is not a period; write a whole number and a unit (y, mo, w, d, h, min, s), "
            "e.g. '7d', '6mo', '1y6mo', or ISO 8601 like 'P1Y6M' ('m' alone is ambiguous: "
            "use 'mo' for months, 'min' for minutes)"
        )
    return Period(months=months, days=days, seconds=seconds, text=text)


def _parse_iso_period(text: str) -> Period:
    match = _ISO_PATTERN.fullmatch(text.upper())
    if match is None or text.upper() in ("P", "PT") or text.upper().endswith("T"):
        raise PeriodError(
            f"{text!r} is not an ISO 8601 duration of whole units (e.g. 'P1Y', 'P1Y6M', 'P90D', "
            "'PT12H'); fractions and negative durations are not accepted"
        )
    parts = {name: int(value) if value else 0 for name, value in match.groupdict().items()}
    return Period(
        months=12 * parts["years"] + parts["months"],
        days=7 * parts["weeks"] + parts["days"],
        seconds=3600 * parts["hours"] + 60 * parts["minutes"] + parts["seconds"],
        text=text,
    )


def parse_zone(name: str) -> ZoneInfo:
    """Given an IANA time zone name, return the zone; raise ValueError when it is unknown.

    Example: ``parse_zone("Europe/Paris")`` returns ``ZoneInfo("Europe/Paris")``.
    """
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'UTC')") from error


def expiry(clock: datetime, period: Period) -> datetime:
    """Given a wall-clock value and a period, return the wall-clock instant it expires at.

    Example: ``expiry(datetime(2024, 2, 29, 10), parse_period("1y"))`` returns
    ``datetime(2025, 2, 28, 10)`` (end-of-month clamping).
    """
    result: datetime = clock + period.as_relativedelta()
    return result


@dataclass(frozen=True)
class Window:
    """A closed interval of expired clock values; ``start`` None means unbounded below."""

    start: datetime | None
    end: datetime


def expired_windows(period: Period, as_of: datetime) -> tuple[Window, ...]:
    """Given a period and ``as_of`` as naive wall-clock time, return the expired clock values.

    The result is exact: a clock value ``c`` is in one of the windows if and only if
    ``expiry(c, period) <= as_of``. Month arithmetic clamps to the end of the month, so the set is
    not always a single ``c <= cutoff``: on 2025-02-28 10:00 a one-year rule has expired
    everything up to 2024-02-28 10:00 *and* 2024-02-29 00:00-10:00. Example:
    ``expired_windows(parse_period("1y"), datetime(2025, 2, 28, 10))`` returns
    ``(Window(None, datetime(2024, 2, 28, 10)),
    Window(datetime(2024, 2, 29), datetime(2024, 2, 29, 10)))``.
    """
    # Days and the time part are plain timedelta arithmetic, exactly invertible.
    shifted = as_of - timedelta(days=period.days, seconds=period.seconds)
    if period.months == 0:
        return (Window(None, shifted),)
    source_year, source_month = _shift_month(shifted.year, shifted.month, -period.months)
    source_last_day = calendar.monthrange(source_year, source_month)[1]
    shifted_last_day = calendar.monthrange(shifted.year, shifted.month)[1]
    if shifted.day > source_last_day:
        # The whole source month lands on days before shifted.day, whatever the time of day.
        next_year, next_month = _shift_month(source_year, source_month, 1)
        return (Window(None, datetime(next_year, next_month, 1) - _ONE_MICROSECOND),)
    windows = [Window(None, shifted.replace(year=source_year, month=source_month))]
    if shifted.day == shifted_last_day:
        # Later days of a longer source month clamp onto shifted.day: expired up to its time.
        for day in range(shifted.day + 1, source_last_day + 1):
            day_start = datetime(source_year, source_month, day)
            windows.append(Window(day_start, datetime.combine(day_start.date(), shifted.time())))
    return tuple(windows)


def last_expired_date(period: Period, as_of: datetime) -> date:
    """Given a period and ``as_of`` as naive wall-clock time, return the last expired date value.

    A date-valued clock means the whole day: it expires when that day plus the period has passed,
    so ``d`` is expired if and only if ``d + period < as_of.date()``. Example:
    ``last_expired_date(parse_period("1y"), datetime(2025, 3, 1, 8))`` returns
    ``date(2024, 2, 29)`` (2024-02-29 + 1y = 2025-02-28, a day that is over).
    """
    if period.has_time_part:
        raise PeriodError(
            f"the period {period.text!r} has a time part; a date column cannot use it"
        )
    limit = as_of.date() - _ONE_DAY
    delta = relativedelta(months=period.months, days=period.days)
    candidate: date = (limit - timedelta(days=period.days)) - relativedelta(months=period.months)
    # Month clamping can map a few later dates onto the same expiry day.
    while candidate + _ONE_DAY + delta <= limit:
        candidate += _ONE_DAY
    return candidate


def _shift_month(year: int, month: int, offset: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + offset
    return index // 12, index % 12 + 1


def to_wall_time(moment: datetime, zone: ZoneInfo) -> datetime:
    """Given an aware instant, return the naive wall-clock time it shows in ``zone``.

    Example: ``to_wall_time(datetime(2026, 7, 1, 12, tzinfo=UTC), ZoneInfo("Europe/Paris"))``
    returns ``datetime(2026, 7, 1, 14)``.
    """
    if moment.tzinfo is None:
        raise ValueError("an instant must be timezone-aware")
    return moment.astimezone(zone).replace(tzinfo=None)


def wall_time_to_utc(wall: datetime, zone: ZoneInfo, *, upper: bool) -> datetime:
    """Given a naive wall-clock bound in ``zone``, return it as an aware UTC instant.

    A wall time can be ambiguous (autumn) or missing (spring) on DST days. The safe choice shrinks
    the interval: an upper bound takes the earlier instant, a lower bound the later one, so no
    record is ever expired early. Example: ``wall_time_to_utc(datetime(2026, 10, 25, 2, 30),
    ZoneInfo("Europe/Paris"), upper=True)`` returns ``2026-10-25 00:30 UTC``.
    """
    candidates = (
        wall.replace(tzinfo=zone, fold=0).astimezone(UTC),
        wall.replace(tzinfo=zone, fold=1).astimezone(UTC),
    )
    return min(candidates) if upper else max(candidates)


@dataclass(frozen=True)
class Expired:
    """What a rule's period has expired as of one instant, in every form a store may need.

    ``windows`` are aware UTC instants (for timestamp clocks); ``last_date`` is the last expired
    value of a date-valued clock (None when the period has a time part, which dates cannot use).
    """

    period: Period
    windows: tuple[Window, ...]
    last_date: date | None

    @property
    def cutoff(self) -> datetime:
        """The latest instant of the main window: what a person reads as "the cutoff"."""
        return self.windows[0].end


def expired_as_of(period: Period, as_of: datetime, zone: ZoneInfo) -> Expired:
    """Given a period, an aware ``as_of`` and the policy's zone, return what is expired.

    Example: ``expired_as_of(parse_period("90d"), datetime(2026, 11, 23, 12, tzinfo=UTC),
    ZoneInfo("UTC")).cutoff`` returns ``2026-08-25 12:00 UTC``.
    """
    # Hours, minutes and seconds are elapsed time; only months and days follow the calendar.
    wall_as_of = to_wall_time(as_of - timedelta(seconds=period.seconds), zone)
    calendar_part = Period(months=period.months, days=period.days, text=period.text)
    windows = tuple(
        Window(
            None if window.start is None else wall_time_to_utc(window.start, zone, upper=False),
            wall_time_to_utc(window.end, zone, upper=True),
        )
        for window in expired_windows(calendar_part, wall_as_of)
    )
    last_date = None if period.has_time_part else last_expired_date(period, wall_as_of)
    return Expired(period=period, windows=windows, last_date=last_date)


_DATE_DIRECTIVES = {
    "Y": r"(?P<Y>\d{4})",
    "m": r"(?P<m>\d{2})",
    "d": r"(?P<d>\d{2})",
    "H": r"(?P<H>\d{2})",
    "M": r"(?P<M>\d{2})",
    "S": r"(?P<S>\d{2})",
}


@dataclass(frozen=True)
class DatePattern:
    """A date written in object keys or file names, such as ``nightly/%Y-%m-%d/``."""

    text: str
    regex: re.Pattern[str]

    @property
    def has_time(self) -> bool:
        return "H" in self.regex.groupindex


def compile_date_pattern(text: str) -> DatePattern:
    """Given a pattern with strftime's %Y %m %d (and optionally %H %M %S), return it compiled;
    raise ValueError saying what is wrong. Everything else is literal.

    Example: ``compile_date_pattern("db-%Y-%m-%d").regex.search("x/db-2026-01-31.gz")`` matches.
    """
    parts: list[str] = []
    seen: set[str] = set()
    index = 0
    while index < len(text):
        character = text[index]
        if character != "%":
            parts.append(re.escape(character))
            index += 1
            continue
        directive = text[index + 1 : index + 2]
        if directive == "%":
            parts.append("%")
        elif directive in _DATE_DIRECTIVES and directive not in seen:
            parts.append(_DATE_DIRECTIVES[directive])
            seen.add(directive)
        elif directive in seen:
            raise ValueError(
                f"{text!r}: %{directive} appears twice; a date is read from one place, so each "
                "of %Y %m %d %H %M %S appears at most once"
            )
        elif not directive:
            raise ValueError(f"{text!r}: ends with a lone %; write %% for a percent sign")
        else:
            raise ValueError(
                f"{text!r}: %{directive} is not supported here (use %Y %m %d, optionally "
                "%H %M %S, each once; %% for a percent sign)"
            )
        index += 2
    if not {"Y", "m", "d"} <= seen:
        raise ValueError(f"{text!r}: a date needs %Y, %m and %d")
    if ("M" in seen or "S" in seen) and "H" not in seen:
        raise ValueError(f"{text!r}: %M and %S need %H")
    return DatePattern(text, re.compile("".join(parts)))


def read_date(pattern: DatePattern, text: str) -> datetime | date | None:
    """Given a compiled pattern and a key or file name, return the first date it holds (a naive
    wall time when the pattern has %H, else a date), or None when there is none or it is not a
    real date. Example: ``read_date(compile_date_pattern("%Y-%m-%d"), "b/2024-02-29.tar")``
    returns ``date(2024, 2, 29)``; ``"2025-02-29"`` returns None."""
    for match in pattern.regex.finditer(text):
        fields = {name: int(value) for name, value in match.groupdict().items()}
        try:
            if not pattern.has_time:
                return date(fields["Y"], fields["m"], fields["d"])
            return datetime(
                fields["Y"],
                fields["m"],
                fields["d"],
                fields["H"],
                fields.get("M", 0),
                fields.get("S", 0),
            )
        except ValueError:
            continue
    return None


def is_expired(value: datetime | date, expired: Expired, zone: ZoneInfo) -> bool:
    """Given a clock value (an aware instant, a naive wall time in ``zone``, or a date) and what
    a period has expired, return whether the value is expired: the same test the SQL stores
    compile into their WHERE clause.

    Example: with a 7d period as of 2026-11-23 12:00 UTC (UTC zone), 2026-11-16 12:00 UTC is
    expired and 2026-11-16 12:00:01 UTC is not.
    """
    if not isinstance(value, datetime):
        return expired.last_date is not None and value <= expired.last_date
    if value.tzinfo is None:
        # An ambiguous wall time is read as its later instant: never expired early.
        value = wall_time_to_utc(value, zone, upper=False)
    return any(
        (window.start is None or window.start <= value) and value <= window.end
        for window in expired.windows
    )


def is_future(value: datetime | date, as_of: datetime, zone: ZoneInfo) -> bool:
    """Given a clock value and an aware ``as_of``, return whether the value is after it (never
    expired, reported). A date is in the future when it is after ``as_of``'s date in ``zone``."""
    if not isinstance(value, datetime):
        return value > as_of.astimezone(zone).date()
    if value.tzinfo is None:
        value = wall_time_to_utc(value, zone, upper=False)
    return value > as_of
