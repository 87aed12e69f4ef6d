"""The plan of a rule on a partitioned table (issue 15): the partitions that go whole are
counted apart from the rest of the table, and the plan's counts are still exactly those of the
same rule purged by row batches alone (drop_partitions = false)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from retention.app import make_plan, run_plan
from retention.app.holds import place_hold
from retention.audit.entries import read_entries
from retention.planner import RulePlan
from retention.stores import open_stores, partition_keys_postgres
from tests.support import make_config, plan
from tests.test_partitions import (
    AS_OF,
    DUE,
    KEPT,
    RULE,
    _partitions,
    _remaining,
    _verified,
    _whole,
    create_events,
)

# Rows after the instant (future) and, beside the due ones, rows that no range makes due.
FUTURE = {60: datetime(2025, 6, 1), 61: datetime(2026, 1, 1)}


@pytest.fixture(params=["postgres", "mariadb"])
def events_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    create_events(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO events (id, logged_at) VALUES (:id, :at)"),
            [{"id": key, "at": at} for key, at in FUTURE.items()],
        )
    engine.dispose()
    return url


def _counts(rule_plan: RulePlan) -> tuple[object, ...]:
    assert rule_plan.error is None, rule_plan.error
    return (
        rule_plan.due,
        rule_plan.in_scope,
        rule_plan.held,
        rule_plan.future,
        rule_plan.unreadable,
        rule_plan.invalid_period,
        rule_plan.oldest,
    )


@pytest.mark.parametrize(
    ("extra", "whole"),
    [
        ("", {"events_2024_01", "events_2024_02", "events_2024_03"}),
        # A row out of scope keeps its partition (February) out of the drop.
        ('where_sql = "id <> 12"\n', {"events_2024_01", "events_2024_03"}),
        # Only the rows of January are in scope: March's rows are not due.
        ('where_sql = "id <= 10 OR id > 50"\n', {"events_2024_01"}),
    ],
    ids=["plain", "a-row-out-of-scope", "most-rows-out-of-scope"],
)
def test_the_plan_counts_what_row_batches_alone_would(
    events_url: str, extra: str, whole: set[str]
) -> None:
    dropping = plan(make_config(events_url, RULE + extra), AS_OF).rules[0]
    batches = plan(make_config(events_url, RULE + extra + "drop_partitions = false\n"), AS_OF)
    assert {partition.name for partition in dropping.partitions} == whole
    assert batches.rules[0].partitions == ()
    assert _counts(dropping) == _counts(batches.rules[0])
    assert dropping.future == len(FUTURE)
    assert dropping.oldest is not None


@pytest.mark.parametrize(
    "extra",
    ["", 'where_sql = "id <> 12"\n', 'where_sql = "id <= 10 OR id > 50"\n'],
    ids=["plain", "a-row-out-of-scope", "most-rows-out-of-scope"],
)
def test_the_counts_by_ranges_are_those_of_one_pass_over_a_plain_table(
    events_url: str, extra: str
) -> None:
    """A table partitioned by the clock is counted one range at a time (the server prunes the
    partitions each range misses); the same rows in a table that is not partitioned, without
    an index on the clock, are counted in one pass of CASEs. The two give the same plan."""
    engine = create_engine(events_url)
    with engine.begin() as connection:
        spelled = "timestamp" if engine.dialect.name == "postgresql" else "datetime"
        connection.execute(
            text(
                f"CREATE TABLE events_plain (id integer NOT NULL, logged_at {spelled} NOT NULL, "
                "note text, PRIMARY KEY (id, logged_at))"
            )
        )
        connection.execute(text("INSERT INTO events_plain SELECT * FROM events"))
    engine.dispose()
    plain_rule = RULE.replace('table = "events"', 'table = "events_plain"')
    assert plain_rule != RULE
    partitioned = plan(make_config(events_url, RULE + extra), AS_OF).rules[0]
    one_pass = plan(make_config(events_url, plain_rule + extra), AS_OF).rules[0]
    assert partitioned.partitions
    assert not one_pass.partitions
    assert _counts(partitioned) == _counts(one_pass)
    assert partitioned.future == len(FUTURE)


def test_a_hold_is_counted_as_row_batches_count_it(events_url: str) -> None:
    config = make_config(events_url, RULE)
    place_hold(
        config,
        rule_name="events",
        keys=(),
        where="id IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15)",
        prefix=None,
        reason="litigation",
        until=None,
        now=AS_OF,
        by="test",
    )
    dropping = plan(config, AS_OF).rules[0]
    batches = plan(make_config(events_url, RULE + "drop_partitions = false\n"), AS_OF)
    assert {partition.name for partition in dropping.partitions} == {"events_2024_03"}
    assert dropping.held == 11
    # The same rule without the hold's rows held: the hold changes nothing else.
    assert _counts(dropping)[1:] == (
        _counts(batches.rules[0])[1],
        11,
        *_counts(batches.rules[0])[3:],
    )
    assert dropping.due == batches.rules[0].due - 11


def test_every_row_in_a_partition_that_goes_whole_is_planned_once(events_url: str) -> None:
    # Nothing but wholly expired partitions hold rows: the rest of the table counts nothing.
    engine = create_engine(events_url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM events WHERE logged_at >= '2024-04-01'"))
    engine.dispose()
    rule_plan = plan(make_config(events_url, RULE), AS_OF).rules[0]
    first = 15 if engine.dialect.name != "postgresql" else 10
    assert rule_plan.due == rule_plan.in_scope == first + 20 + (5 if first == 10 else 0)
    assert sum(partition.rows for partition in rule_plan.partitions) == first + 20
    assert rule_plan.oldest is not None
    assert rule_plan.future == 0


def test_a_partition_grown_past_its_chunk_since_the_plan_still_goes_whole(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plan counts 10 rows in February; 40 more arrive before the run, past a chunk of 25:
    # MariaDB reads the partition as one piece (the plan's count fitted one chunk), PostgreSQL
    # in chunks by its own count. Either way every row goes with it, each in the trail.
    monkeypatch.setattr("retention.stores.partitions.CHUNK", 25)
    monkeypatch.setattr(partition_keys_postgres, "PIECE", 25)
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        assert {p.name: p.rows for p in the_plan.rules[0].partitions} == _whole(events_url)
        engine = create_engine(events_url)
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO events (id, logged_at) VALUES (:id, :at)"),
                [{"id": key, "at": datetime(2024, 2, 20)} for key in range(100, 140)],
            )
        engine.dispose()
        report = run_plan(config, the_plan, store_for, dry_run=False)
    outcome = report.outcomes[0]
    assert outcome.status == "ok", outcome.error
    assert outcome.deleted == len(DUE) + 40
    assert _remaining(events_url) == KEPT | set(FUTURE)
    selected = [
        stored.content["selected"]
        for stored in read_entries(audit)
        if stored.content.get("partition") == "events_2024_02"
        and stored.content["type"] == "batch.intent"
    ]
    # MariaDB: one piece, read without numbering its rows; PostgreSQL: chunks of 25.
    assert selected == ([25, 25] if "postgresql" in events_url else [50])
    _verified(audit)


def test_a_zero_in_date_row_written_after_the_plan_keeps_its_partition(
    mariadb_url: str, tmp_path: Path
) -> None:
    # March 2024 goes whole in the plan; then a row dated 2024-04-00 arrives in it (it sorts
    # before April: March's partition). It may mean any day of April, not surely expired: the
    # count under the table's lock finds it (not the partition's first: its rows not due are
    # counted by the negated range), and March goes by row batches, that row kept.
    create_events(mariadb_url)
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, RULE, audit_directory=audit)
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        assert "events_2024_03" in {p.name for p in the_plan.rules[0].partitions}
        engine = create_engine(mariadb_url)
        with engine.begin() as connection:
            connection.execute(text("SET SESSION sql_mode = ''"))
            connection.execute(text("INSERT INTO events VALUES (90, '2024-04-00', NULL)"))
        engine.dispose()
        report = run_plan(config, the_plan, store_for, dry_run=False)
    outcome = report.outcomes[0]
    assert outcome.status == "ok", outcome.error
    assert _remaining(mariadb_url) == KEPT | {90}
    assert "events_2024_01" not in _partitions(mariadb_url)
    assert "events_2024_03" in _partitions(mariadb_url)
    _verified(audit)
    # Now March is the table's first partition, and its one row is not due: the plan says so
    # (e4d64dd took that row's clock for the oldest due and failed the rule on it).
    later = plan(make_config(mariadb_url, RULE), AS_OF).rules[0]
    batches = plan(make_config(mariadb_url, RULE + "drop_partitions = false\n"), AS_OF)
    assert _counts(later) == _counts(batches.rules[0])
    assert later.unreadable == 1
    assert later.partition_notes == (
        "events_2024_03: 1 of 1 rows are not due (a condition, a period override or a NULL "
        "clock keeps them): row batches",
    )


def test_a_surely_expired_zero_in_date_value_in_a_partition_that_goes_whole(
    mariadb_url: str,
) -> None:
    # 2023-00-00 (some day of 2023: surely expired) sorts first, into January, which goes
    # whole: the oldest due is the first day it could mean, as row batches say, and the plan
    # does not fail comparing that text with a date.
    create_events(mariadb_url)
    engine = create_engine(mariadb_url)
    with engine.begin() as connection:
        connection.execute(text("SET SESSION sql_mode = ''"))
        connection.execute(text("INSERT INTO events VALUES (90, '2023-00-00', NULL)"))
    engine.dispose()
    dropping = plan(make_config(mariadb_url, RULE), AS_OF).rules[0]
    batches = plan(make_config(mariadb_url, RULE + "drop_partitions = false\n"), AS_OF)
    assert "events_2024_01" in {partition.name for partition in dropping.partitions}
    assert _counts(dropping) == _counts(batches.rules[0])
    assert dropping.oldest == datetime(2023, 1, 1, tzinfo=UTC)
