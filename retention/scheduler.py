"""APScheduler 3.x wiring: when each rule runs (what `retention status` says about it is in
status.py).

Jobs are built from the config at every start (memory job store: nothing pickled, nothing shared
between processes); hosts coordinate through leases in the state database, not the job store.
Schedules keep crontab's meaning, which APScheduler 3.x's CronTrigger does not (its
``day_of_week=0`` is Monday, it ANDs a restricted day of month and day of week, and it mishandles
DST days): the trigger here computes fire times itself, from the crontab fields, on the wall
clock of the daemon's time zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from retention.config import Rule, Schedule

PURGES = "purges"
DEFAULT_EXECUTOR = "default"


class CrontabTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires when crontab(5) would, on the wall clock of ``zone``, up to ``jitter`` seconds
    later (see ``fire_time``). APScheduler's own CronTrigger is not used: besides numbering
    weekdays from Monday, in 3.x it skips a midnight run the day after DST starts and fires a
    fixed-time run twice the night DST ends."""

    __slots__ = ("jitter", "schedule", "zone")

    def __init__(self, schedule: Schedule, zone: ZoneInfo, jitter: float | None) -> None:
        self.schedule = schedule
        self.zone = zone
        self.jitter = jitter

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # In UTC: wall-clock arithmetic on an aware datetime drops its fold.
        start = previous_fire_time.astimezone(UTC) + _TICK if previous_fire_time else now
        moment: datetime | None = self._apply_jitter(
            fire_time(self.schedule, self.zone, start), self.jitter, now
        )
        return moment

    def __str__(self) -> str:
        return f"crontab[{self.schedule.text}, {self.zone.key}]"


_TICK = timedelta(microseconds=1)
# The rarest schedule crontab accepts is February 29 on one weekday; any date comes back in 8 years.
_HORIZON_DAYS = 8 * 366 + 7


def fire_time(schedule: Schedule, zone: ZoneInfo, start: datetime) -> datetime | None:
    """Given a Schedule, its time zone and an instant, return the first time at or after it
    that the schedule names (in UTC: APScheduler compares times of one zone by wall clock, which
    the repeated hour defeats), as crontab reads it: a time of day that does not exist (DST starts)
    is taken with the offset before the change, so it fires once, an hour later by the wall
    clock; a time of day that happens twice (DST ends) fires once, the first time, unless the
    schedule runs every hour (then both hours are real hours)."""
    every_hour = len(schedule.hour) == 24
    times_of_day = [(hour, minute) for hour in schedule.hour for minute in schedule.minute]
    start_utc = start.astimezone(UTC)
    first_day = start.astimezone(zone).date() - timedelta(days=1)
    for offset in range(_HORIZON_DAYS):
        day = first_day + timedelta(days=offset)
        if not _day_matches(schedule, day):
            continue
        candidates = []
        for hour, minute in times_of_day:
            wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
            candidates.append(wall.astimezone(UTC))
            repeat = wall.replace(fold=1)
            if every_hour and repeat.utcoffset() != wall.utcoffset():
                candidates.append(repeat.astimezone(UTC))
        later = [moment for moment in candidates if moment >= start_utc]
        if later:
            return min(later)
    return None


def _day_matches(schedule: Schedule, day: date) -> bool:
    weekday = (day.weekday() + 1) % 7  # crontab counts from Sunday, Python from Monday
    in_day, in_weekday = day.day in schedule.day, weekday in schedule.weekday
    if day.month not in schedule.month:
        return False
    return in_day or in_weekday if schedule.either_day else in_day and in_weekday


def schedule_trigger(
    schedule: Schedule, zone: ZoneInfo, jitter: timedelta = timedelta(0)
) -> CrontabTrigger:
    """Given a Schedule, the daemon's time zone and a jitter, return the APScheduler trigger
    for it."""
    return CrontabTrigger(schedule, zone, jitter.total_seconds() or None)


def next_run(schedule: Schedule, zone: ZoneInfo, after: datetime) -> datetime | None:
    """Given a Schedule, its time zone and an instant, return the first time it fires after it
    (without jitter)."""
    return fire_time(schedule, zone, after + _TICK)


def previous_run(schedule: Schedule, zone: ZoneInfo, now: datetime) -> datetime | None:
    """Given a Schedule, its time zone and an instant, return the last time at or before it that
    the schedule names (without jitter), or None when it named none in the last 8 years.

    Example: for ``0 4 * * sun`` in UTC and Wednesday 2026-12-02 10:00 UTC, return Sunday
    2026-11-29 04:00 UTC.
    """
    # Look back over a growing window, so that an every-minute schedule costs a few steps and
    # a yearly one a few more.
    for window in (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=32)):
        found = _last_fire_in(schedule, zone, now - window, now)
        if found is not None:
            return found
    for years in (1, 8):
        found = _last_fire_in(schedule, zone, now - timedelta(days=366 * years), now)
        if found is not None:
            return found
    return None


def _last_fire_in(
    schedule: Schedule, zone: ZoneInfo, start: datetime, end: datetime
) -> datetime | None:
    last = None
    moment = fire_time(schedule, zone, start)
    while moment is not None and moment <= end:
        last = moment
        moment = fire_time(schedule, zone, moment + _TICK)
    return last


def is_overdue(
    schedule: Schedule, zone: ZoneInfo, last_success: datetime | None, now: datetime
) -> bool:
    """Given a rule's schedule, its last successful run (None: never) and now, return whether a
    time it should have run at has passed since: then it runs at once (catch-up)."""
    if last_success is None:
        return True
    due = next_run(schedule, zone, last_success)
    return due is not None and due <= now


def new_scheduler(zone: ZoneInfo) -> BackgroundScheduler:
    """Given the daemon's time zone, return a scheduler (not started): memory job store, purges
    one at a time in their own thread, other jobs (heartbeat, metrics) beside them."""
    return BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={PURGES: ThreadPoolExecutor(1), DEFAULT_EXECUTOR: ThreadPoolExecutor(1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            # The 1 s default silently drops a run that waited behind a long purge; the run
            # ledger decides instead whether a run is still needed.
            "misfire_grace_time": None,
        },
        timezone=zone,
    )


def rule_job_id(rule: str) -> str:
    """Given a rule name, return its job's id."""
    return f"rule:{rule}"


def schedule_rule(
    scheduler: BackgroundScheduler,
    rule: Rule,
    zone: ZoneInfo,
    run: Callable[[str], None],
    *,
    now: datetime | None = None,
) -> None:
    """Given a rule, add (or replace) its job: ``run(rule.name)`` on the rule's schedule, and at
    ``now`` first when given (a catch-up)."""
    catch_up = {"next_run_time": now} if now is not None else {}
    scheduler.add_job(
        run,
        trigger=schedule_trigger(rule.schedule, zone, rule.jitter),
        args=(rule.name,),
        id=rule_job_id(rule.name),
        name=rule.name,
        executor=PURGES,
        replace_existing=True,
        **catch_up,
    )


def postpone(scheduler: BackgroundScheduler, rule: str, until: datetime) -> None:
    """Given a rule whose run could not start (another host holds it), try again at ``until``
    unless the schedule comes back sooner."""
    job = scheduler.get_job(rule_job_id(rule))
    if job is not None and job.next_run_time is not None and until < job.next_run_time:
        job.modify(next_run_time=until)


def scheduler_alive(scheduler: BackgroundScheduler) -> bool:
    """Given a started scheduler, return whether its thread is still running."""
    thread = getattr(scheduler, "_thread", None)
    return bool(scheduler.running and thread is not None and thread.is_alive())
