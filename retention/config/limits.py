"""What every rule shares, whatever its store: batches, brakes, schedule, period."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from retention.config.cron import parse_schedule
from retention.config.model import (
    DAILY,
    MAX_BATCH_SIZE,
    Schedule,
    Settings,
)
from retention.config.reader import Reader
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
    settings: Settings | None,
    default_batch: int,
) -> RunLimits:
    batch_size = reader.positive_int(raw, "batch_size", path, default_batch, MAX_BATCH_SIZE)
    defaults = settings or Settings(ZoneInfo("UTC"))
    max_delete = reader.positive_int(raw, "max_delete", path, defaults.max_delete, 10**12)
    max_fraction = reader.fraction(raw, "max_fraction", path, defaults.max_fraction)
    schedule = DAILY
    if "schedule" in raw:
        try:
            schedule = parse_schedule(raw["schedule"])
        except ValueError as error:
            reader.error(f"{path}.schedule", str(error))
    jitter = reader.duration(raw, "jitter", path, timedelta(0), timedelta(0))
    match_all = raw.get("match_all", False)
    if not isinstance(match_all, bool):
        reader.error(f"{path}.match_all", f"must be true or false, not {match_all!r}")
        match_all = False
    return RunLimits(batch_size, max_delete, max_fraction, match_all, schedule, jitter)


def read_period(reader: Reader, raw: object, where: str) -> Period | None:
    if raw is None:
        reader.error(where, "missing (e.g. '90d', '1y', 'P1Y6M'; '0d' for no retention)")
        return None
    try:
        return parse_period(raw)  # type: ignore[arg-type]
    except PeriodError as error:
        reader.error(where, str(error))
        return None
