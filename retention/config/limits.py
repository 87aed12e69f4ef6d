"""What every rule shares, whatever its store: batches, brakes, schedule, period."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from retention.config.cron import parse_schedule
from retention.config.model import DAILY, Schedule, Settings
from retention.config.reader import Reader, flag, fraction, whole
from retention.rules import Period, PeriodError, parse_period


@dataclass(frozen=True)
class RunLimits:
    """How any rule runs, whatever its store: batches, brakes, schedule."""

    batch_size: int
    max_delete: int
    max_fraction: float
    match_all: bool
    schedule: Schedule
    jitter: timedelta


def read_run_limits(
    reader: Reader,
    raw: Mapping[str, object],
    path: str,
    settings: Settings,
    default_batch: int,
) -> RunLimits:
    schedule = DAILY
    if isinstance(raw.get("schedule"), str):
        try:
            schedule = parse_schedule(raw["schedule"])
        except ValueError as error:
            reader.error(f"{path}.schedule", str(error))
    return RunLimits(
        batch_size=whole(raw, "batch_size", default_batch),
        max_delete=whole(raw, "max_delete", settings.max_delete),
        max_fraction=fraction(raw, "max_fraction", settings.max_fraction),
        match_all=flag(raw, "match_all", False),
        schedule=schedule,
        jitter=reader.duration(raw, "jitter", path, timedelta(0), timedelta(0)),
    )


def read_period(reader: Reader, raw: object, where: str) -> Period | None:
    """The period's grammar and calendar (the declaration only sees that it has a unit)."""
    if not isinstance(raw, str):
        return None
    try:
        return parse_period(raw)
    except PeriodError as error:
        reader.error(where, str(error))
        return None
