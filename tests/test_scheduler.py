"""Schedules mean what crontab means, on the daemon's time zone, DST days included; jobs are built
from the config with generous misfire handling; `retention status` reads the ledger."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from click.testing import CliRunner

from retention.cli import main
from retention.config import DAILY, parse_config, parse_schedule
from retention.errors import ConfigError
from retention.scheduler import (
    is_overdue,
    new_scheduler,
    next_run,
    postpone,
    rule_job_id,
    schedule_rule,
    schedule_trigger,
)
from retention.state import StateDatabase
from retention.status import render_status, rule_statuses, status_document
from tests.support import logs_rule

PARIS = ZoneInfo("Europe/Paris")


def fire_times(
    text: str, start: datetime, end: datetime, jitter: timedelta = timedelta(0)
) -> list[datetime]:
    """Every time the schedule fires in [start, end), as the scheduler asks for them."""
    trigger = schedule_trigger(parse_schedule(text), PARIS, jitter)
    times: list[datetime] = []
    previous = None
    moment = trigger.get_next_fire_time(None, start)
    while moment is not None and moment < end:
        times.append(moment.astimezone(PARIS))
        previous = moment
        moment = trigger.get_next_fire_time(previous, moment)
    return times


def day(year: int, month: int, number: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, number, tzinfo=PARIS)
    return start, start + timedelta(days=1)


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("hourly", "0 * * * *"),
        ("daily", "0 0 * * *"),
        ("@daily", "0 0 * * *"),
        ("weekly", "0 0 * * 0"),
        ("monthly", "0 0 1 * *"),
    ],
)
def test_keywords_are_crontab_shorthands(text: str, expression: str) -> None:
    keyword, written = parse_schedule(text), parse_schedule(expression)
    assert (keyword.minute, keyword.hour, keyword.day, keyword.month, keyword.weekday) == (
        written.minute,
        written.hour,
        written.day,
        written.month,
        written.weekday,
    )


def test_the_default_schedule_is_daily_at_midnight() -> None:
    assert parse_schedule("daily") == DAILY


@pytest.mark.parametrize(
    ("field", "weekdays"),
    [
        ("0", (0,)),
        ("7", (0,)),
        ("sun", (0,)),
        ("1-5", (1, 2, 3, 4, 5)),
        ("mon-fri", (1, 2, 3, 4, 5)),
        ("5-7", (0, 5, 6)),
        ("*/2", (0, 2, 4, 6)),
        ("SAT,sun", (0, 6)),
        ("*", (0, 1, 2, 3, 4, 5, 6)),
    ],
)
def test_weekdays_count_from_sunday_as_in_crontab(field: str, weekdays: tuple[int, ...]) -> None:
    assert parse_schedule(f"0 3 * * {field}").weekday == weekdays


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("*/15 * * * *", {"minute": (0, 15, 30, 45)}),
        ("0 22-23,0-2/2 * * *", {"hour": (0, 2, 22, 23)}),
        ("0 0 1,15 jan-mar *", {"day": (1, 15), "month": (1, 2, 3)}),
    ],
)
def test_fields_expand_to_their_values(text: str, fields: dict[str, tuple[int, ...]]) -> None:
    schedule = parse_schedule(text)
    for name, values in fields.items():
        assert getattr(schedule, name) == values


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("* * * *", "expected 5 fields"),
        ("60 * * * *", "minute '60' is not in 0-59"),
        ("0 24 * * *", "hour '24' is not in 0-23"),
        ("0 0 0 * *", "day of month '0' is not in 1-31"),
        ("0 0 * 13 *", "month '13' is not in 1-12 or jan-dec"),
        ("0 0 * * 8", "day of week '8' is not in 0-7 or sun-sat"),
        ("0 0 * * funday", "day of week 'funday'"),
        ("5-1 * * * *", "goes backwards"),
        ("*/0 * * * *", "step '0' is not a positive number"),
        ("5/10 * * * *", "a step goes with * or a range"),
        ("*/90 * * * *", "minute step '90' is not below the field's 60 values"),
        ("0 */99999999999999999999 * * *", "hour step '99999999999999999999' is not below"),
        ("0 0 * * 1-5/7", "day of week step '7' is not below the field's 7 values"),
        ("*/٥ * * * *", "minute step '٥' is not a positive number"),
        ("٥ * * * *", "minute '٥' is not in 0-59"),
        ("0 0 31 2 *", "never happens"),
        ("0 0 1,,2 * *", "day of month ''"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_schedule(text)


def config_text(*rules: str, daemon: str = "") -> bytes:
    return (
        '[settings]\ntimezone = "Europe/Paris"\n'
        '[stores.db]\nkind = "sql"\nurl = "sqlite:///x.sqlite"\n'
        "[audit]\nenabled = false\n" + daemon + "".join(rules)
    ).encode()


def test_every_schedule_error_is_reported_with_its_path() -> None:
    document = config_text(
        logs_rule(name="a", extra='schedule = "61 * * * *"'),
        logs_rule(name="b", extra='schedule = "daily"\njitter = "5 minutes"'),
        logs_rule(name="c", extra="schedule = 5"),
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(document)
    messages = {issue.path: issue.message for issue in raised.value.issues}
    assert set(messages) == {"rules[0].schedule", "rules[1].jitter", "rules[2].schedule"}
    assert "minute '61'" in messages["rules[0].schedule"]
    assert "'30s', '15m'" in messages["rules[1].jitter"]
    assert "crontab expression" in messages["rules[2].schedule"]


def test_rules_and_the_daemon_table_are_read() -> None:
    config = parse_config(
        config_text(
            logs_rule(name="a", extra='schedule = "30 2 * * *"\njitter = "1h30m"'),
            logs_rule(name="b", extra=""),
            daemon='[daemon]\nmetrics_port = 9464\nheartbeat = "90s"\nlease_ttl = "1m"\n',
        )
    )
    first, second = config.rules
    assert (first.schedule.hour, first.schedule.minute) == ((2,), (30,))
    assert first.jitter == timedelta(hours=1, minutes=30)
    assert (second.schedule, second.jitter) == (DAILY, timedelta(0))
    settings = config.daemon
    # Never the host's zone: [settings].timezone unless [daemon] names one.
    assert settings.timezone == PARIS
    assert (settings.metrics_address, settings.metrics_port) == ("127.0.0.1", 9464)
    assert settings.heartbeat == timedelta(seconds=90)
    assert settings.lease_ttl == timedelta(minutes=1)


def test_daemon_table_errors_are_reported_with_their_paths() -> None:
    daemon = (
        '[daemon]\ntimezone = "Mars/Olympus"\nmetrics_address = "localhost"\n'
        'metrics_port = 70000\nlease_ttl = "1s"\nwho = 1\n'
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(config_text(daemon=daemon))
    paths = {issue.path for issue in raised.value.issues}
    assert paths == {
        "daemon.timezone",
        "daemon.metrics_address",
        "daemon.metrics_port",
        "daemon.lease_ttl",
        "daemon.who",
    }


# --- when jobs fire --------------------------------------------------------------------------


def test_apscheduler_3_alone_would_fire_a_sunday_crontab_on_monday() -> None:
    """The upstream pitfall this module exists for (APScheduler issue 286)."""
    upstream = CronTrigger.from_crontab("0 3 * * 0", timezone=PARIS)
    ours = schedule_trigger(parse_schedule("0 3 * * 0"), PARIS)
    start = datetime(2026, 3, 2, tzinfo=PARIS)  # a Monday
    assert upstream.get_next_fire_time(None, start).strftime("%A") == "Monday"
    fires = ours.get_next_fire_time(None, start).astimezone(PARIS)
    assert fires.strftime("%A %H:%M") == "Sunday 03:00"


def test_weekday_range_fires_monday_to_friday() -> None:
    start = datetime(2026, 3, 1, tzinfo=PARIS)  # a Sunday
    times = fire_times("0 3 * * 1-5", start, start + timedelta(days=7))
    assert [moment.strftime("%a") for moment in times] == ["Mon", "Tue", "Wed", "Thu", "Fri"]


def test_day_of_month_and_weekday_both_restricted_fire_on_either() -> None:
    start = datetime(2026, 3, 1, tzinfo=PARIS)
    times = fire_times("0 0 13 * fri", start, datetime(2026, 4, 1, tzinfo=PARIS))
    assert [moment.strftime("%a %d") for moment in times] == [
        "Fri 06",
        "Fri 13",
        "Fri 20",
        "Fri 27",
    ]
    times = fire_times("0 0 13 * mon", start, datetime(2026, 4, 1, tzinfo=PARIS))
    assert [moment.strftime("%a %d") for moment in times] == [
        "Mon 02",
        "Mon 09",
        "Fri 13",
        "Mon 16",
        "Mon 23",
        "Mon 30",
    ]


def test_a_0230_job_fires_once_on_the_night_dst_starts() -> None:
    """2026-03-29, Europe/Paris: clocks jump from 02:00 to 03:00, so 02:30 never happens; the
    job runs once, an hour later by the wall clock (01:30 UTC)."""
    times = fire_times("30 2 * * *", *day(2026, 3, 29))
    assert [moment.astimezone(UTC) for moment in times] == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    ]
    before, after = (
        fire_times("30 2 * * *", *day(2026, 3, 28)),
        fire_times("30 2 * * *", *day(2026, 3, 30)),
    )
    assert [moment.astimezone(UTC).hour for moment in before + after] == [1, 0]


def test_a_0230_job_fires_once_on_the_night_dst_ends() -> None:
    """2026-10-25, Europe/Paris: 02:00-03:00 happens twice; APScheduler 3.x alone fires twice,
    crontab (and we) once, at the first 02:30."""
    upstream = CronTrigger(hour=2, minute=30, timezone=PARIS)
    start, end = day(2026, 10, 25)
    first = upstream.get_next_fire_time(None, start)
    assert upstream.get_next_fire_time(first, first) < end  # the upstream double run
    times = fire_times("30 2 * * *", start, end)
    assert [moment.astimezone(UTC) for moment in times] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    ]
    assert fire_times("30 2 * * *", *day(2026, 10, 26))[0].astimezone(UTC).hour == 1


def test_a_midnight_job_fires_the_day_after_dst_starts() -> None:
    """APScheduler 3.x's CronTrigger skips 2026-03-30 00:00 (it adds 24 h of UTC to the day
    before, landing at 01:00 summer time)."""
    upstream = CronTrigger(hour=0, minute=0, timezone=PARIS)
    sunday = datetime(2026, 3, 29, tzinfo=PARIS)
    assert upstream.get_next_fire_time(sunday, sunday).day == 31
    assert [moment.day for moment in fire_times("daily", sunday, sunday + timedelta(days=3))] == [
        29,
        30,
        31,
    ]
    sundays = fire_times(
        "weekly", datetime(2026, 3, 1, tzinfo=PARIS), datetime(2026, 5, 1, tzinfo=PARIS)
    )
    assert [moment.day for moment in sundays] == [1, 8, 15, 22, 29, 5, 12, 19, 26]


def test_an_hourly_job_fires_every_real_hour_on_dst_days() -> None:
    assert len(fire_times("hourly", *day(2026, 3, 29))) == 23
    assert len(fire_times("hourly", *day(2026, 10, 25))) == 25


def test_jitter_delays_each_run_by_at_most_its_value() -> None:
    start = datetime(2026, 5, 1, tzinfo=PARIS)
    times = fire_times("0 3 * * *", start, start + timedelta(days=20), timedelta(minutes=10))
    assert len(times) == 20
    for moment in times:
        slot = moment.replace(hour=3, minute=0, second=0, microsecond=0)
        assert timedelta(0) <= moment - slot <= timedelta(minutes=10)


def test_overdue_when_a_scheduled_time_passed_since_the_last_success() -> None:
    schedule = parse_schedule("30 2 * * *")
    now = datetime(2026, 5, 10, 12, tzinfo=PARIS)
    assert is_overdue(schedule, PARIS, None, now)
    assert not is_overdue(schedule, PARIS, datetime(2026, 5, 10, 2, 31, tzinfo=PARIS), now)
    assert is_overdue(schedule, PARIS, datetime(2026, 5, 9, 2, 31, tzinfo=PARIS), now)
    assert next_run(schedule, PARIS, now) == datetime(2026, 5, 11, 2, 30, tzinfo=PARIS)


# --- jobs -----------------------------------------------------------------------------------


def test_jobs_are_in_memory_with_generous_misfire_handling_and_catch_up() -> None:
    config = parse_config(config_text(logs_rule(name="a", extra=""), logs_rule(name="b", extra="")))
    scheduler = new_scheduler(PARIS)
    now = datetime(2026, 5, 10, 12, tzinfo=UTC)
    scheduler.start(paused=True)
    try:
        schedule_rule(scheduler, config.rules[0], PARIS, print, now=now)
        schedule_rule(scheduler, config.rules[1], PARIS, print)
        caught_up, scheduled = scheduler.get_job("rule:a"), scheduler.get_job("rule:b")
        assert caught_up.next_run_time == now
        assert scheduled.next_run_time > now
        for job in (caught_up, scheduled):
            assert (job.misfire_grace_time, job.coalesce, job.max_instances) == (None, True, 1)
            assert job.executor == "purges"
        postpone(scheduler, "b", now + timedelta(minutes=2))
        assert scheduler.get_job(rule_job_id("b")).next_run_time == now + timedelta(minutes=2)
        # Never later than the schedule's own next time.
        postpone(scheduler, "b", now + timedelta(days=3))
        assert scheduler.get_job(rule_job_id("b")).next_run_time == now + timedelta(minutes=2)
    finally:
        scheduler.shutdown(wait=False)


# --- status ---------------------------------------------------------------------------------


def test_status_shows_last_run_outcome_counts_and_next_run(tmp_path: Path) -> None:
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    config = parse_config(
        config_text(
            logs_rule(name="a", extra='schedule = "30 2 * * *"'),
            logs_rule(name="b", extra='schedule = "0 4 * * sun"'),
        ).replace(b"[audit]", f'[state]\nurl = "{state_url}"\n[audit]'.encode())
    )
    state = StateDatabase(state_url)
    now = datetime(2026, 5, 13, 10, tzinfo=UTC)  # a Wednesday
    row = state.record_run_start("r1", "a", now - timedelta(hours=7), "host-1")
    state.record_run_end(row, now - timedelta(hours=7), status="ok", due=12, deleted=12)
    statuses = rule_statuses(config, state, now)
    state.close()

    first, second = statuses
    assert first.last_run is not None
    assert (first.last_run.status, first.last_run.deleted) == ("ok", 12)
    assert first.next_run == datetime(2026, 5, 14, 2, 30, tzinfo=PARIS)
    assert not first.overdue
    assert (second.last_run, second.overdue) == (None, True)
    assert second.next_run == datetime(2026, 5, 17, 4, tzinfo=PARIS)
    text = render_status(statuses, PARIS)
    assert "2026-05-14 02:30" in text
    assert "never" in text
    assert "overdue" in text
    document = status_document(statuses)
    assert document["rules"][0]["last_run"]["outcome"] == "ok"
    # 04:00 in Paris, given in UTC: one format for every instant (docs/json.md).
    assert document["rules"][1]["next_run"] == "2026-05-17T02:00:00+00:00"

    config_file = tmp_path / "retention.toml"
    config_file.write_bytes(
        config_text(logs_rule(name="a", extra=""), logs_rule(name="b", extra="")).replace(
            b"[audit]", f'[state]\nurl = "{state_url}"\n[audit]'.encode()
        )
    )
    result = CliRunner().invoke(main, ["--config", str(config_file), "status", "--output", "json"])
    assert result.exit_code == 0, result.output
    assert [rule["rule"] for rule in json.loads(result.stdout)["rules"]] == ["a", "b"]
