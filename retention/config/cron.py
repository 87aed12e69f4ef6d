"""Schedules: crontab expressions, read as crontab(5) reads them."""

from __future__ import annotations

from typing import NamedTuple

from retention.config.model import Schedule

SCHEDULE_KEYWORDS = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class _CronField(NamedTuple):
    name: str
    lowest: int
    highest: int
    star_highest: int  # what `*` goes up to
    names: tuple[str, ...] = ()  # names of the values from the lowest on


_CRON_FIELDS = (
    _CronField("minute", 0, 59, 59),
    _CronField("hour", 0, 23, 23),
    _CronField("day of month", 1, 31, 31),
    _CronField("month", 1, 12, 12, _MONTH_NAMES),
    # 7 is Sunday too, as in crontab; `*` means 0-6.
    _CronField("day of week", 0, 7, 6, _WEEKDAY_NAMES),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_schedule(text: object) -> Schedule:
    """Given a crontab expression (``"30 2 * * *"``) or hourly/daily/weekly/monthly, return the
    Schedule; raise ValueError saying what is wrong.

    Fields mean what crontab(5) says, not what APScheduler 3.x says: weekday 0 and 7 are Sunday
    (names too: ``sun``-``sat``), and when day of month and day of week are both restricted,
    either matching is enough. Example: ``parse_schedule("0 3 * * 0").weekday`` is ``(0,)``.
    """
    keywords = ", ".join(SCHEDULE_KEYWORDS)
    if not isinstance(text, str):
        raise ValueError(f"must be a crontab expression or one of {keywords}, not {text!r}")
    expression = SCHEDULE_KEYWORDS.get(text.strip().lower().removeprefix("@"), text)
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(
            f"{text!r}: expected 5 fields (minute hour day-of-month month day-of-week) or one "
            f"of {keywords}"
        )
    minute, hour, day, month, weekday = (
        _cron_field(part, spec, text) for part, spec in zip(parts, _CRON_FIELDS, strict=True)
    )
    either_day = not parts[2].startswith("*") and not parts[4].startswith("*")
    if not either_day and not any(d <= _DAYS_IN_MONTH[m - 1] for d in day for m in month):
        raise ValueError(f"{text!r}: never happens (no such day in those months)")
    return Schedule(
        text=text,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        weekday=tuple(sorted({value % 7 for value in weekday})),
        either_day=either_day,
    )


def _cron_field(text: str, spec: _CronField, whole: str) -> tuple[int, ...]:
    name = spec.name
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        if slash and not (step_text.isascii() and step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"{whole!r}: {name} step {step_text!r} is not a positive number")
        step = int(step_text) if slash else 1
        width = spec.star_highest - spec.lowest + 1
        if step >= width:
            # `*/90` in the minute field reads as "every 90 minutes" but fires hourly at :00.
            raise ValueError(
                f"{whole!r}: {name} step {step_text!r} is not below the field's "
                f"{width} values: it would pick only the first"
            )
        if base == "*":
            start, end = spec.lowest, spec.star_highest
        else:
            first, dash, last = base.partition("-")
            if slash and not dash:
                raise ValueError(f"{whole!r}: {name} {item!r}: a step goes with * or a range")
            start = _cron_value(first, spec, whole)
            end = _cron_value(last, spec, whole) if dash else start
            if start > end:
                raise ValueError(f"{whole!r}: {name} range {base!r} goes backwards")
        values.update(range(start, end + 1, step))
    return tuple(sorted(values))


def _cron_value(text: str, spec: _CronField, whole: str) -> int:
    if text.isascii() and text.isdigit() and spec.lowest <= int(text) <= spec.highest:
        return int(text)
    if text.lower() in spec.names:
        return spec.names.index(text.lower()) + spec.lowest
    names = f" or {spec.names[0]}-{spec.names[-1]}" if spec.names else ""
    raise ValueError(
        f"{whole!r}: {spec.name} {text!r} is not in {spec.lowest}-{spec.highest}{names}"
    )
