"""MariaDB's zero dates (0000-00-00) and zero-in-date values (2025-00-15, 2025-06-00), stored
where sql_mode allows them, are no dates: each could mean any month or day of its year or month.
Compared plainly they sort just before the dates they could mean, so a plain comparison would
purge 2025-00-15 as soon as 2025 begins to be expired, up to a year early. A row is purged only
when every date its value could mean is expired; the others are kept back and counted as
unreadable, in the plan and in the run, with or without an index on the clock (the survey
counts by index ranges when there is one)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from retention.app import make_plan, run_plan
from retention.stores import open_stores
from retention.stores.sql_predicate import ZERO_TIMESTAMP
from tests.support import logs_rule, make_config, plan_and_run

# 1 year: the cutoff is 2025-06-15 12:00.
AS_OF = datetime(2026, 6, 15, 12, tzinfo=UTC)

ROWS = {
    1: "2020-01-01",  # due
    2: "2025-12-31",  # not yet
    3: "0000-00-00",  # no date at all: kept back
    4: "2025-00-15",  # any month of 2025, December included: kept back
    5: "2025-06-00",  # any day of June 2025, the 30th included: kept back
    6: "2024-00-15",  # any month of 2024: surely expired
    7: "2024-12-00",  # any day of December 2024: surely expired
    8: "2025-03-10",  # due
    9: "0000-05-05",  # year 0: kept back
    10: "2025-06-14",  # due, as a timestamp and as a whole day
}
DUE = {1, 6, 7, 8, 10}
KEPT_BACK = {3, 4, 5, 9}


@pytest.mark.parametrize("indexed", [True, False], ids=["clock-index", "no-index"])
@pytest.mark.parametrize("clock_type", ["DATETIME", "DATE"])
def test_zero_in_date_values_are_kept_back_and_counted(
    mariadb_url: str, clock_type: str, indexed: bool
) -> None:
    engine = create_engine(mariadb_url)
    index = ", KEY (logged_at)" if indexed else ""
    with engine.begin() as connection:
        connection.execute(text("SET SESSION sql_mode = ''"))
        for table in ("logs", "other_logs"):
            connection.execute(
                text(f"CREATE TABLE {table} (id INT PRIMARY KEY, logged_at {clock_type}{index})")
            )
        for key, value in ROWS.items():
            connection.execute(
                text("INSERT INTO logs VALUES (:key, :value)"), {"key": key, "value": value}
            )
        connection.execute(
            text("INSERT INTO other_logs VALUES (1, '2020-01-01'), (2, '2025-12-31')")
        )
    config = make_config(
        mariadb_url,
        logs_rule() + logs_rule(name="other").replace('table = "logs"', 'table = "other_logs"'),
    )
    dry_plan, dry_report = plan_and_run(config, AS_OF, dry_run=True)
    the_plan, report = plan_and_run(config, AS_OF)
    for plan in (dry_plan, the_plan):
        by_name = {rule_plan.rule.name: rule_plan for rule_plan in plan.rules}
        assert by_name["logs"].error is None
        assert by_name["logs"].due == len(DUE)
        assert by_name["logs"].unreadable == len(KEPT_BACK)
        assert by_name["logs"].oldest == (
            date(2020, 1, 1) if clock_type == "DATE" else datetime(2020, 1, 1, tzinfo=UTC)
        )
        assert by_name["other"].due == 1
    deleted = {outcome.rule: outcome.deleted for outcome in report.outcomes}
    assert deleted == {"logs": len(DUE), "other": 1}
    assert {outcome.rule: outcome.deleted for outcome in dry_report.outcomes} == deleted
    with engine.connect() as connection:
        kept = {
            table: set(connection.execute(text(f"SELECT id FROM {table}")).scalars())
            for table in ("logs", "other_logs")
        }
    engine.dispose()
    assert kept == {"logs": set(ROWS) - DUE, "other_logs": {2}}


@pytest.mark.parametrize("indexed", [True, False], ids=["clock-index", "no-index"])
@pytest.mark.parametrize("clock_type", ["DATETIME", "DATE"])
def test_a_surely_expired_zero_in_date_value_as_the_oldest_due_does_not_fail_the_rule(
    mariadb_url: str, clock_type: str, indexed: bool
) -> None:
    """2024-00-15 is due (every date it could mean is expired) and sorts first: the plan shows
    the first day it could mean as the oldest due (not the row's text, which failed the rule:
    "the clock holds a value that is no date"), and the run purges both due rows."""
    engine = create_engine(mariadb_url)
    index = ", KEY (logged_at)" if indexed else ""
    with engine.begin() as connection:
        connection.execute(text("SET SESSION sql_mode = ''"))
        connection.execute(
            text(f"CREATE TABLE logs (id INT PRIMARY KEY, logged_at {clock_type}{index})")
        )
        connection.execute(
            text(
                "INSERT INTO logs VALUES (1, '2024-00-15'), (2, '2025-03-10'), (3, '2025-12-31'),"
                " (4, '2025-06-00')"
            )
        )
    the_plan, report = plan_and_run(make_config(mariadb_url, logs_rule()), AS_OF)
    rule_plan = the_plan.rules[0]
    assert rule_plan.error is None, rule_plan.error
    assert (rule_plan.due, rule_plan.unreadable) == (2, 1)
    assert rule_plan.oldest == (
        date(2024, 1, 1) if clock_type == "DATE" else datetime(2024, 1, 1, tzinfo=UTC)
    )
    assert report.outcomes[0].deleted == 2
    with engine.connect() as connection:
        assert set(connection.execute(text("SELECT id FROM logs")).scalars()) == {3, 4}
    engine.dispose()


def test_a_timestamp_clock_keeps_its_zero_values_back_counting_by_index_ranges(
    mariadb_url: str,
) -> None:
    """A TIMESTAMP holds a zero-in-date value as 0000-00-00 00:00:00: kept back and counted
    as unreadable. The survey counts those rows with a range of the clock's index: compared
    with year one, outside the type's range, MariaDB read the whole index (issue 17)."""
    engine = create_engine(mariadb_url)
    with engine.begin() as connection:
        connection.execute(text("SET SESSION sql_mode = '', time_zone = '+00:00'"))
        connection.execute(
            text(
                "CREATE TABLE logs (id INT PRIMARY KEY, logged_at TIMESTAMP NULL, KEY (logged_at))"
            )
        )
        connection.execute(
            text(
                "INSERT INTO logs VALUES (1, '2020-01-01'), (2, '2025-12-31'), (3, '0000-00-00'),"
                " (4, '2025-00-15'), (5, '2024-12-00'), (6, '2025-03-10')"
            )
        )
    config = make_config(mariadb_url, logs_rule())
    sent: list[tuple[str, Any]] = []

    def record(_connection: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT count(*)"):
            sent.append((statement, parameters))

    with open_stores(config, read_only=False) as store_for:
        event.listen(store_for("db").engine, "before_cursor_execute", record)  # type: ignore[attr-defined]
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        report = run_plan(config, the_plan, store_for, dry_run=False)
    rule_plan = the_plan.rules[0]
    assert rule_plan.error is None, rule_plan.error
    assert (rule_plan.due, rule_plan.unreadable) == (2, 3)
    assert report.outcomes[0].deleted == 2
    kept_back = [
        (statement, parameters)
        for statement, parameters in sent
        if ZERO_TIMESTAMP in (parameters or {}).values()
    ]
    assert len(kept_back) == 1
    with engine.connect() as connection:
        assert set(connection.execute(text("SELECT id FROM logs")).scalars()) == {2, 3, 4, 5}
        plan = connection.exec_driver_sql("EXPLAIN " + kept_back[0][0], kept_back[0][1]).one()
    engine.dispose()
    assert plan._mapping["type"] == "range"


# Values around a cutoff at the very start of a year (2025-01-01 00:00:00, where the zero-in-date
# values of the end's year are those before it) and in the middle of one; NULL; year 0 and 1.
BOUNDARY_VALUES = (
    None,
    "0000-00-00",
    "0000-01-01",
    "0000-12-31 23:59:59",
    "0001-01-01",
    "1000-01-01",
    "2023-12-00",
    "2024-00-00",
    "2024-00-31",
    "2024-06-15",
    "2024-12-31 23:59:59",
    "2025-00-00",
    "2025-00-01",
    "2025-01-00",
    "2025-01-01",
    "2025-01-01 00:00:01",
    "2025-06-00",
    "2025-06-14 23:59:59",
    "2025-06-15 12:00:00",
    "2025-06-15 12:00:01",
    "2025-07-00",
    "2026-00-00",
)


@pytest.mark.parametrize("clock_type", ["DATETIME", "DATE", "TIMESTAMP NULL"])
@pytest.mark.parametrize(
    "as_of", [datetime(2026, 1, 1, tzinfo=UTC), AS_OF], ids=["year-start", "mid-year"]
)
def test_the_range_counts_find_what_the_one_pass_count_finds_and_the_run_deletes(
    mariadb_url: str, clock_type: str, as_of: datetime
) -> None:
    """The survey counts a rule whose clock leads an index as ranges (the due rows: the plain
    expired range less those kept back, 02e0dc4); the same rows in a table without the index
    are counted in one pass with the guard on each row. Both plans agree (due, unreadable,
    oldest), with a ``where`` condition that leaves out some of each kind of value, and the run
    deletes exactly the rows due."""
    engine = create_engine(mariadb_url)
    rows = [
        (key, value, kind)
        for kind in ("a", "b")
        for key, value in enumerate(BOUNDARY_VALUES, start=1 if kind == "a" else 101)
    ]
    with engine.begin() as connection:
        connection.execute(text("SET SESSION sql_mode = '', time_zone = '+00:00'"))
        for table, index in (("logs", ", KEY (logged_at)"), ("plain_logs", "")):
            connection.execute(
                text(
                    f"CREATE TABLE {table} (id INT PRIMARY KEY, logged_at {clock_type}, "
                    f"kind CHAR(1){index})"
                )
            )
            connection.execute(
                text(f"INSERT INTO {table} VALUES (:key, :value, :kind)"),
                [{"key": key, "value": value, "kind": kind} for key, value, kind in rows],
            )
    where = "where = [\"kind = 'a'\"]"
    config = make_config(
        mariadb_url,
        logs_rule(where) + logs_rule(where, name="plain").replace('"logs"', '"plain_logs"'),
    )
    the_plan, report = plan_and_run(config, as_of)
    by_name = {rule_plan.rule.name: rule_plan for rule_plan in the_plan.rules}
    ranges, one_pass = by_name["logs"], by_name["plain"]
    assert ranges.error is None
    assert one_pass.error is None
    assert (ranges.due, ranges.unreadable, ranges.oldest) == (
        one_pass.due,
        one_pass.unreadable,
        one_pass.oldest,
    )
    deleted = {outcome.rule: outcome.deleted for outcome in report.outcomes}
    assert deleted == {"logs": ranges.due, "plain": one_pass.due}
    with engine.connect() as connection:
        gone = {
            table: {key for key, _, _ in rows}
            - set(connection.execute(text(f"SELECT id FROM {table}")).scalars())
            for table in ("logs", "plain_logs")
        }
    engine.dispose()
    assert gone["logs"] == gone["plain_logs"]
    assert all(key < 100 for key in gone["logs"]), "the where condition holds"
    assert ranges.due > 0
    assert ranges.unreadable > 0
