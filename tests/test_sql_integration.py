"""Every rule shape against real databases: SQLite, PostgreSQL and MariaDB (``database_url``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from retention.anonymise import keyed_hash
from retention.app import make_plan, run_plan
from retention.cli import main
from retention.documents import plan_document
from retention.errors import ConfigError, ExitCode
from retention.render import render_plan
from retention.stores import open_stores
from tests.support import (
    claimed_leaves,
    config_text,
    create_tables,
    due_counts,
    logs_rule,
    make_config,
    plan,
    plan_and_run,
    remaining_ids,
)

LEAP_AS_OF = datetime(2025, 2, 28, 10, 0, tzinfo=UTC)
SHIPPED_CONFIG = Path(__file__).parent.parent / "config" / "retention.toml"


def _logs_table(metadata: MetaData, name: str = "logs", **clock_type: Any) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", clock_type.get("type_", DateTime()), index=True),
        Column("note", String(50)),
    )


def _insert(engine: Engine, table: Table, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as connection:
        connection.execute(insert(table), rows)


LOG_RULE = logs_rule()

# A year after 2024-02-29 is 2025-02-28: at 2025-02-28 10:00 UTC exactly these are expired.
LEAP_ROWS = {
    1: (datetime(2024, 2, 29, 10, 0, 0), True),
    2: (datetime(2024, 2, 29, 10, 0, 1), False),
    3: (datetime(2024, 2, 28, 10, 0, 0), True),
    4: (datetime(2024, 2, 28, 10, 0, 1), False),
    5: (datetime(2024, 2, 28, 9, 59, 59), True),
    6: (datetime(2024, 2, 29, 9, 0, 0), True),
    7: (datetime(2024, 3, 1, 0, 0, 0), False),
    8: (None, False),
    9: (datetime(2024, 2, 29, 23, 59, 0), False),
    10: (datetime(2019, 6, 1, 12, 0, 0), True),
}
LEAP_DUE = {key for key, (_, due) in LEAP_ROWS.items() if due}


def _leap_logs(url: str) -> Engine:
    metadata = MetaData()
    logs = _logs_table(metadata)
    engine = create_tables(url, metadata)
    _insert(engine, logs, [{"id": key, "logged_at": at} for key, (at, _) in LEAP_ROWS.items()])
    return engine


def test_leap_day_boundary_is_exact_and_plan_count_equals_run(database_url: str) -> None:
    engine = _leap_logs(database_url)
    config = make_config(database_url, LOG_RULE)

    the_plan, report = plan_and_run(config, LEAP_AS_OF)

    assert the_plan.rules[0].due == len(LEAP_DUE)
    assert report.outcomes[0].deleted == len(LEAP_DUE)
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS) - LEAP_DUE
    assert plan(config, LEAP_AS_OF).rules[0].due == 0


def test_one_second_earlier_the_boundary_rows_are_not_yet_due(database_url: str) -> None:
    engine = _leap_logs(database_url)
    config = make_config(database_url, LOG_RULE)
    plan_and_run(config, datetime(2025, 2, 28, 9, 59, 59, tzinfo=UTC))
    # 2024-02-29 09:00 + 1y = 2025-02-28 09:00, already past; 10:00 rows are a second away.
    assert set(LEAP_ROWS) - remaining_ids(engine, "logs") == {5, 6, 10}


def test_oldest_clock_value_and_samples_are_reported(database_url: str, tmp_path: Any) -> None:
    _leap_logs(database_url)
    key_file = tmp_path / "hash.key"
    key_file.write_text("k" * 32)
    config = make_config(database_url, LOG_RULE, hash_key_file=key_file)
    rule_plan = plan(config, LEAP_AS_OF).rules[0]
    assert rule_plan.oldest == datetime(2019, 6, 1, 12, tzinfo=UTC)
    assert len(rule_plan.samples) == 5
    again = plan(config, LEAP_AS_OF).rules[0]
    assert again.samples == rule_plan.samples
    assert all(len(sample) == 16 and not sample.isdigit() for sample in rule_plan.samples)


def test_date_clock_expires_when_the_day_plus_period_is_over(database_url: str) -> None:
    metadata = MetaData()
    contracts = Table(
        "contracts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("ended_on", Date),
    )
    engine = create_tables(database_url, metadata)
    _insert(
        engine,
        contracts,
        [
            {"id": 1, "ended_on": date(2024, 2, 28)},
            {"id": 2, "ended_on": date(2024, 2, 29)},
            {"id": 3, "ended_on": date(2024, 3, 1)},
            {"id": 4, "ended_on": None},
        ],
    )
    config = make_config(
        database_url,
        """
[[rules]]
name = "contracts"
store = "db"
table = "contracts"
key = "id"
clock = "ended_on"
period = "1y"
action = "delete"
""",
    )
    # 2024-02-28 + 1y = 2025-02-28, a day not over at 23:00 that day.
    assert plan(config, datetime(2025, 2, 28, 23, tzinfo=UTC)).rules[0].due == 0
    # On 2025-03-01 both 02-28 and 02-29 (+1y = 02-28) are over; 03-01 (+1y = 03-01) is not.
    plan_and_run(config, datetime(2025, 3, 1, 0, 30, tzinfo=UTC))
    assert remaining_ids(engine, "contracts") == {3, 4}


def test_naive_timestamps_in_a_store_time_zone(database_url: str) -> None:
    """Naive values holding Paris wall time, periods on the Paris calendar."""
    metadata = MetaData()
    logs = _logs_table(metadata)
    engine = create_tables(database_url, metadata)
    _insert(
        engine,
        logs,
        [
            {"id": 1, "logged_at": datetime(2024, 2, 29, 10, 0, 0)},
            {"id": 2, "logged_at": datetime(2024, 2, 29, 10, 0, 1)},
        ],
    )
    config = make_config(
        database_url, LOG_RULE, timezone="Europe/Paris", store_timezone="Europe/Paris"
    )
    # 09:00 UTC is 10:00 in Paris.
    plan_and_run(config, datetime(2025, 2, 28, 9, 0, tzinfo=UTC))
    assert remaining_ids(engine, "logs") == {2}


def test_calendar_days_follow_daylight_saving_in_the_policy_zone(database_url: str) -> None:
    """Paris springs forward on 2026-03-29: "1 day" before 12:00 CEST that day is 12:00 CET the
    day before, 23 hours earlier, not 24."""
    metadata = MetaData()
    logs = _logs_table(metadata)
    engine = create_tables(database_url, metadata)
    _insert(
        engine,
        logs,
        [
            {"id": 1, "logged_at": datetime(2026, 3, 28, 10, 30)},  # due only by the calendar
            {"id": 2, "logged_at": datetime(2026, 3, 28, 11, 0, 0)},  # 12:00 CET: exactly due
            {"id": 3, "logged_at": datetime(2026, 3, 28, 11, 0, 1)},
        ],
    )
    config = make_config(database_url, LOG_RULE.replace('"1y"', '"1d"'), timezone="Europe/Paris")
    plan_and_run(config, datetime(2026, 3, 29, 10, 0, tzinfo=UTC))
    assert remaining_ids(engine, "logs") == {3}


def test_latest_of_several_columns_ignores_nulls(database_url: str) -> None:
    metadata = MetaData()
    partners = Table(
        "partners",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("collected_at", DateTime),
        Column("last_contact_at", DateTime),
    )
    engine = create_tables(database_url, metadata)
    old, recent = datetime(2020, 1, 1), datetime(2024, 6, 1)
    _insert(
        engine,
        partners,
        [
            {"id": 1, "collected_at": old, "last_contact_at": None},
            {"id": 2, "collected_at": old, "last_contact_at": recent},
            {"id": 3, "collected_at": None, "last_contact_at": None},
            {"id": 4, "collected_at": None, "last_contact_at": old},
            {"id": 5, "collected_at": recent, "last_contact_at": old},
            {"id": 6, "collected_at": old, "last_contact_at": old},
        ],
    )
    config = make_config(
        database_url,
        """
[[rules]]
name = "partners"
store = "db"
table = "partners"
key = "id"
clock = ["collected_at", "last_contact_at"]
period = "3y"
action = "delete"
""",
    )
    the_plan, _ = plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    assert the_plan.rules[0].oldest == datetime(2020, 1, 1, tzinfo=UTC)
    assert remaining_ids(engine, "partners") == {2, 3, 5}


CONTENT_RULE = """
[[rules]]
name = "content"
store = "db"
table = "content"
key = "id"
clock = "contract.ended_on"
period = "90d"
action = "delete"

[rules.joins.contract]
table = "contracts"
on = { contract_id = "id" }
"""


def _contracts_and_content(url: str) -> Engine:
    metadata = MetaData()
    contracts = Table(
        "contracts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("ended_on", Date),
    )
    content = Table(
        "content",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("contract_id", Integer),
        Column("body", String(50)),
    )
    engine = create_tables(url, metadata)
    _insert(
        engine,
        contracts,
        [
            {"id": 1, "ended_on": date(2026, 1, 10)},
            {"id": 2, "ended_on": None},
            {"id": 3, "ended_on": date(2026, 11, 1)},
        ],
    )
    _insert(
        engine,
        content,
        [
            {"id": 10, "contract_id": 1, "body": "a"},
            {"id": 11, "contract_id": 1, "body": "b"},
            {"id": 20, "contract_id": 2, "body": "active contract"},
            {"id": 30, "contract_id": 3, "body": "ended recently"},
            {"id": 40, "contract_id": 99, "body": "no contract row: no clock, kept"},
        ],
    )
    return engine


def test_clock_reached_through_a_join(database_url: str) -> None:
    engine = _contracts_and_content(database_url)
    config = make_config(database_url, CONTENT_RULE)
    the_plan, report = plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    assert the_plan.rules[0].due == 2
    assert report.outcomes[0].deleted == 2
    assert remaining_ids(engine, "content") == {20, 30, 40}
    assert remaining_ids(engine, "contracts") == {1, 2, 3}


STAFF_RULE = """
[[rules]]
name = "reports"
store = "db"
table = "staff"
key = "id"
clock = "manager.left_on"
period = "1y"
where = ["manager.name != 'Keep'"]
{action}

[rules.joins.manager]
table = "staff"
on = {{ manager_id = "id" }}
"""


@pytest.mark.parametrize(
    "action",
    [
        'action = "delete"',
        'action = "anonymise"\nmarker_column = "anonymised_at"\nanonymise = { name = "null" }',
    ],
    ids=["delete", "anonymise"],
)
def test_a_clock_through_a_join_to_the_rules_own_table_reads_the_other_row(
    database_url: str, action: str, tmp_path: Path
) -> None:
    """A report goes a year after their manager left: the join reaches another row of the
    same table, never the row itself (a subquery correlated with the row would read its own
    columns, finding a clock only for someone who is their own manager)."""
    metadata = MetaData()
    staff = Table(
        "staff",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("manager_id", Integer, nullable=True),
        Column("left_on", Date, nullable=True),
        Column("name", String(20), nullable=True),
        Column("anonymised_at", DateTime, nullable=True),
    )
    engine = create_tables(database_url, metadata)
    long_ago = date(2015, 1, 1)
    _insert(
        engine,
        staff,
        [
            {"id": 1, "manager_id": None, "left_on": long_ago, "name": "Ann"},
            {"id": 2, "manager_id": 1, "left_on": None, "name": "Bea"},
            {"id": 3, "manager_id": 1, "left_on": None, "name": "Cid"},
            {"id": 4, "manager_id": 5, "left_on": long_ago, "name": "Dan"},
            {"id": 5, "manager_id": None, "left_on": None, "name": "Eve"},
            {"id": 6, "manager_id": 6, "left_on": long_ago, "name": "Fay"},
            {"id": 7, "manager_id": 8, "left_on": None, "name": "Gus"},
            {"id": 8, "manager_id": None, "left_on": long_ago, "name": "Keep"},
        ],
    )
    rule = STAFF_RULE.format(action=action)
    config = make_config(database_url, rule, audit_directory=tmp_path / "audit")
    the_plan, report = plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    # Ann left long ago: Bea and Cid, her reports, go; Fay is her own manager; Gus's manager
    # is kept out by the condition.
    assert the_plan.rules[0].due == 3
    assert report.outcomes[0].status == "ok"
    assert report.outcomes[0].deleted + report.outcomes[0].anonymised == 3
    with engine.connect() as connection:
        named = {
            row.id
            for row in connection.execute(text("SELECT id FROM staff WHERE name IS NOT NULL"))
        }
    assert named == {1, 4, 5, 7, 8}


def test_per_row_period_override(database_url: str) -> None:
    metadata = MetaData()
    campaigns = Table(
        "campaigns",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("sent_at", DateTime),
        Column("retention_period", String(20)),
    )
    engine = create_tables(database_url, metadata)
    _insert(
        engine,
        campaigns,
        [
            {"id": 1, "sent_at": datetime(2016, 1, 1), "retention_period": None},  # 10y: due
            {"id": 2, "sent_at": datetime(2017, 1, 1), "retention_period": None},  # 10y: not
            {"id": 3, "sent_at": datetime(2025, 6, 1), "retention_period": "1y"},  # due
            {"id": 4, "sent_at": datetime(2025, 6, 1), "retention_period": "18mo"},  # not
            {"id": 5, "sent_at": datetime(2010, 1, 1), "retention_period": "forever"},  # kept
            {"id": 6, "sent_at": datetime(2024, 1, 1), "retention_period": "P2Y"},  # due
        ],
    )
    config = make_config(
        database_url,
        """
[[rules]]
name = "campaigns"
store = "db"
table = "campaigns"
key = "id"
clock = "sent_at"
period = "10y"
period_column = "retention_period"
action = "delete"
""",
    )
    the_plan, _ = plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    assert the_plan.rules[0].selection is not None
    assert the_plan.rules[0].selection.invalid_period_values == ("forever",)
    assert remaining_ids(engine, "campaigns") == {2, 4, 5}


def test_conditions_and_raw_sql(database_url: str) -> None:
    metadata = MetaData()
    applicants = Table(
        "applicants",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", DateTime),
        Column("hired", Boolean, nullable=False),
        Column("status", String(10)),
        Column("objected_at", DateTime),
    )
    engine = create_tables(database_url, metadata)
    old = datetime(2020, 1, 1)
    _insert(
        engine,
        applicants,
        [
            {"id": 1, "applied_at": old, "hired": False, "status": "closed", "objected_at": None},
            {"id": 2, "applied_at": old, "hired": True, "status": "closed", "objected_at": None},
            {"id": 3, "applied_at": old, "hired": False, "status": "open", "objected_at": None},
            {"id": 4, "applied_at": old, "hired": False, "status": "closed", "objected_at": old},
            {"id": 5, "applied_at": old, "hired": False, "status": "o'brien", "objected_at": None},
        ],
    )
    config = make_config(
        database_url,
        """
[[rules]]
name = "applicants"
store = "db"
table = "applicants"
key = "id"
clock = "applied_at"
period = "2y"
where = ["hired = false", "status IN ('closed', 'o''brien')", "objected_at IS NULL"]
where_sql = "id <> 5 OR status = 'o''brien'"
action = "delete"
""",
    )
    plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    assert remaining_ids(engine, "applicants") == {2, 3, 4}


def _notes(url: str) -> Engine:
    """Three due notes (2020): 1 'see :ref', 2 '100%', 3 'plain'."""
    metadata = MetaData()
    notes = Table(
        "notes",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", DateTime),
        Column("note", String(20)),
    )
    engine = create_tables(url, metadata)
    texts = {1: "see :ref", 2: "100%", 3: "plain"}
    _insert(
        engine,
        notes,
        [
            {"id": key, "logged_at": datetime(2020, 1, 1), "note": note}
            for key, note in texts.items()
        ],
    )
    return engine


def _notes_rule(where_sql: str) -> str:
    return logs_rule(f"where_sql = {where_sql!r}", name="notes").replace(
        'table = "logs"', 'table = "notes"'
    )


def test_a_where_sql_is_sent_as_written(database_url: str) -> None:
    """A colon before a word, even quoted, was a bind parameter to SQLAlchemy's text(): no
    statement could be built (StatementError, a traceback in validate, plan and run)."""
    engine = _notes(database_url)
    config = make_config(database_url, _notes_rule("note <> 'see :ref' AND note <> '100%'"))
    with open_stores(config, read_only=True) as store_for:
        assert store_for("db").check_rule(config.rules[0]) == []
    plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    assert remaining_ids(engine, "notes") == {1, 2}


def test_a_where_sql_with_a_parameter_the_database_refuses_is_a_config_error(
    database_url: str, tmp_path: Path
) -> None:
    _notes(database_url)
    path = tmp_path / "retention.toml"
    path.write_text(config_text(database_url, _notes_rule("id > :id")))
    for command in (("config", "validate"), ("plan",)):
        result = CliRunner().invoke(main, ["--config", str(path), *command])
        assert result.exit_code == ExitCode.BAD_CONFIG, result.output
        assert "error: rules[0].where_sql: the database refuses it: " in result.stderr


def test_children_and_grandchildren_go_first_in_the_same_transaction(database_url: str) -> None:
    metadata = MetaData()
    prospects = Table(
        "prospects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("collected_at", DateTime),
    )
    actions = Table(
        "actions",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("prospect_id", Integer, ForeignKey("prospects.id"), nullable=False),
    )
    clicks = Table(
        "clicks",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("action_id", Integer, ForeignKey("actions.id"), nullable=False),
    )
    engine = create_tables(database_url, metadata)
    _insert(
        engine,
        prospects,
        [
            {"id": 1, "collected_at": datetime(2020, 1, 1)},
            {"id": 2, "collected_at": datetime(2026, 1, 1)},
        ],
    )
    _insert(engine, actions, [{"id": 10, "prospect_id": 1}, {"id": 20, "prospect_id": 2}])
    _insert(engine, clicks, [{"id": 100, "action_id": 10}, {"id": 200, "action_id": 20}])
    config = make_config(
        database_url,
        """
[[rules]]
name = "prospects"
store = "db"
table = "prospects"
key = "id"
clock = "collected_at"
period = "3y"
action = "delete"

[[rules.children]]
table = "actions"
foreign_key = "prospect_id"

[[rules.children.children]]
table = "clicks"
foreign_key = "action_id"
references = "id"
""",
    )
    _, report = plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    assert report.outcomes[0].deleted == 1
    assert report.outcomes[0].children_deleted == 2
    assert remaining_ids(engine, "prospects") == {2}
    assert remaining_ids(engine, "actions") == {20}
    assert remaining_ids(engine, "clicks") == {200}


def test_undeclared_child_makes_the_rule_fail_alone(database_url: str) -> None:
    """A foreign key the rule does not know about: the checks refuse the rule before anything
    goes (tests/test_foreign_keys.py); one created after them (here, after the plan) makes
    that rule fail (exit 3), nothing of it half-deleted, and the next rule still runs."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite does not enforce foreign keys unless asked to")
    metadata = MetaData()
    Table(
        "prospects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("collected_at", DateTime),
    )
    Table(
        "actions",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("prospect_id", Integer, nullable=False),
    )
    logs = _logs_table(metadata)
    engine = create_tables(database_url, metadata)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO prospects VALUES (1, '2019-01-01'), (2, '2019-01-02')")
        )
        connection.execute(text("INSERT INTO actions VALUES (10, 1)"))
    _insert(engine, logs, [{"id": 1, "logged_at": datetime(2019, 1, 1)}])
    config = make_config(
        database_url,
        LOG_RULE.replace('name = "logs"', 'name = "prospects"')
        .replace('table = "logs"', 'table = "prospects"')
        .replace('"logged_at"', '"collected_at"')
        + LOG_RULE,
    )
    as_of = datetime(2026, 11, 23, tzinfo=UTC)
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, as_of)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "ALTER TABLE actions ADD CONSTRAINT actions_prospect_fk "
                    "FOREIGN KEY (prospect_id) REFERENCES prospects (id)"
                )
            )
        report = run_plan(config, the_plan, store_for, dry_run=False)
    statuses = {outcome.rule: outcome.status for outcome in report.outcomes}
    assert statuses == {"prospects": "failed", "logs": "ok"}
    assert report.exit_code == ExitCode.PARTIAL_FAILURE
    assert remaining_ids(engine, "prospects") == {1, 2}
    assert remaining_ids(engine, "logs") == set()
    with pytest.raises(ConfigError) as refused:
        plan(config, as_of)
    assert [issue.path for issue in refused.value.issues] == ["rules[0].table"]
    assert "'actions' references 'prospects' (prospect_id)" in refused.value.issues[0].message


def test_anonymise_rewrites_listed_columns_marks_rows_and_leaves_the_rest(
    database_url: str, tmp_path: Any
) -> None:
    metadata = MetaData()
    clients = Table(
        "clients",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(100)),
        Column("email", String(100)),
        Column("phone", String(80)),
        Column("ip_address", String(45)),
        Column("birth_date", Date),
        Column("notes", String(100)),
        Column("company", String(100)),
        Column("ended_on", Date),
        Column("anonymised_at", DateTime),
    )
    engine = create_tables(database_url, metadata)
    person = {
        "name": "Jeanne Martin",
        "email": "jeanne.martin@example.fr",
        "phone": "+33 6 12 34 56 78",
        "ip_address": "2001:db8:abcd:12::1",
        "birth_date": date(1984, 7, 14),
        "notes": "called on Monday",
        "company": "ACME",
    }
    _insert(
        engine,
        clients,
        [
            {"id": 1, **person, "ended_on": date(2019, 3, 1), "anonymised_at": None},
            {"id": 2, **person, "ended_on": date(2025, 3, 1), "anonymised_at": None},
            {"id": 3, **person, "ended_on": None, "anonymised_at": None},
        ],
    )
    key_file = tmp_path / "hash.key"
    key_file.write_text("s" * 40)
    config = make_config(
        database_url,
        """
[[rules]]
name = "clients"
store = "db"
table = "clients"
key = "id"
clock = "ended_on"
period = "5y"
action = "anonymise"
marker_column = "anonymised_at"

[rules.anonymise]
name = { fixed = "Client anonymisé" }
email = "mask_email"
phone = "hash"
ip_address = "truncate_ip"
birth_date = "year_only"
notes = "null"
""",
        hash_key_file=key_file,
    )
    as_of = datetime(2026, 11, 23, tzinfo=UTC)
    _, report = plan_and_run(config, as_of)
    assert report.outcomes[0].anonymised == 1
    with engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(select(clients))}
    anonymised = rows[1]
    assert anonymised.name == "Client anonymisé"
    assert anonymised.email == "j***@example.fr"
    assert anonymised.phone == keyed_hash(b"s" * 40, "+33 6 12 34 56 78")
    assert anonymised.ip_address == "2001:db8:abcd::"
    assert anonymised.birth_date == date(1984, 1, 1)
    assert anonymised.notes is None
    assert anonymised.company == "ACME"
    assert anonymised.anonymised_at is not None
    for untouched in (rows[2], rows[3]):
        assert (untouched.email, untouched.anonymised_at) == (person["email"], None)
    # Marked rows are not selected again.
    assert plan(config, as_of).rules[0].due == 0


def test_keyset_batches_over_a_composite_key(database_url: str) -> None:
    metadata = MetaData()
    events = Table(
        "events",
        metadata,
        Column("tenant", Integer, primary_key=True, autoincrement=False),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("at", DateTime),
    )
    engine = create_tables(database_url, metadata)
    rows = []
    for tenant in range(1, 4):
        for seq in range(1, 31):
            due = (tenant * 31 + seq) % 5 != 0
            rows.append(
                {
                    "tenant": tenant,
                    "seq": seq,
                    "at": datetime(2020, 1, 1) if due else datetime(2026, 11, 1),
                }
            )
    _insert(engine, events, rows)
    expected_due = sum(1 for row in rows if row["at"].year == 2020)
    config = make_config(
        database_url,
        """
[[rules]]
name = "events"
store = "db"
table = "events"
key = ["tenant", "seq"]
clock = "at"
period = "1y"
action = "delete"
batch_size = 7
""",
    )
    the_plan, report = plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    assert the_plan.rules[0].due == expected_due
    assert report.outcomes[0].deleted == expected_due
    assert report.outcomes[0].batches == -(-expected_due // 7)
    with engine.connect() as connection:
        left = connection.execute(text("SELECT COUNT(*) FROM events")).scalar_one()
    assert left == len(rows) - expected_due


def test_a_plain_delete_takes_one_statement_per_batch_where_the_dialect_allows(
    database_url: str, tmp_path: Path
) -> None:
    """Five due rows in batches of 3, audited. PostgreSQL: a probe reading the batch's keys
    (the second one read ahead, while the first batch's intent was written) and the DELETE of
    their range per batch; the short second probe was the last. MariaDB: one DELETE … ORDER BY
    … LIMIT per batch, the first one too (bounded by the table's first key, so that it walks
    the key's index: its two statements were a run's longest transaction, issue 17). SQLite: a
    probe for the window's end and a DELETE per batch (the second probe finds a short window,
    the last), and no third probe walking the rest of the key again. (MariaDB without a
    trail: tests/test_sql_spans.py.)"""
    from retention.app import make_plan, run_plan
    from retention.stores import open_stores

    _leap_logs(database_url)
    config = make_config(
        database_url, logs_rule(extra="batch_size = 3"), audit_directory=tmp_path / "audit"
    )
    statements: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.upper())

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, LEAP_AS_OF)
        event.listen(store_for("db").engine, "before_cursor_execute", record)  # type: ignore[attr-defined]
        report = run_plan(config, the_plan, store_for, dry_run=False)
    assert report.outcomes[0].deleted == len(LEAP_DUE) == 5
    assert report.outcomes[0].batches == 2
    backend = make_url(database_url).get_backend_name()
    probes = {"postgresql": 0, "mysql": 0, "mariadb": 0, "sqlite": 2}[backend]
    assert sum("OVER ()" in statement for statement in statements) == probes
    assert sum("DELETE FROM LOGS" in statement for statement in statements) == 2
    # A probe of the batch's due keys (MariaDB's read of the table's first key has no clock).
    key_probes = sum(
        statement.startswith("SELECT LOGS.ID \nFROM LOGS") and "LOGGED_AT" in statement
        for statement in statements
    )
    assert key_probes == (2 if backend == "postgresql" else 0)


def test_dry_run_walks_the_batches_and_writes_nothing(database_url: str) -> None:
    engine = _leap_logs(database_url)
    config = make_config(database_url, LOG_RULE)
    _, report = plan_and_run(config, LEAP_AS_OF, dry_run=True)
    assert report.outcomes[0].deleted == len(LEAP_DUE)
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS)


def test_a_row_touched_after_planning_is_not_deleted(database_url: str) -> None:
    engine = _leap_logs(database_url)
    config = make_config(database_url, LOG_RULE)
    from retention.app import make_plan, run_plan
    from retention.stores import open_stores

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, LEAP_AS_OF)
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE logs SET logged_at = :now WHERE id = 10"),
                {"now": datetime(2025, 2, 1)},
            )
        report = run_plan(config, the_plan, store_for, dry_run=False)
    assert report.outcomes[0].deleted == len(LEAP_DUE) - 1
    assert report.outcomes[0].skipped == 1
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS) - LEAP_DUE | {10}


@pytest.mark.postgres
def test_a_change_between_locking_and_deleting_is_caught_by_the_recheck(postgres_url: str) -> None:
    """The contract is reactivated by another session after the batch locked its content rows
    but before the DELETE: the re-check inside the DELETE keeps the row, the batch rolls back and
    is selected again without it."""
    engine = _contracts_and_content(postgres_url)
    config = make_config(postgres_url, CONTENT_RULE)
    from retention.app import make_plan, run_plan
    from retention.stores import open_stores

    reactivated: list[bool] = []

    def reactivate_once(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "DELETE FROM content" in statement and not reactivated:
            reactivated.append(True)
            with engine.begin() as other:
                other.execute(text("UPDATE contracts SET ended_on = NULL WHERE id = 1"))

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, datetime(2026, 11, 23, tzinfo=UTC))
        store_engine = store_for("db").engine  # type: ignore[attr-defined]
        event.listen(store_engine, "before_cursor_execute", reactivate_once)
        report = run_plan(config, the_plan, store_for, dry_run=False)
    assert reactivated
    assert report.outcomes[0].deleted == 0
    assert report.outcomes[0].status == "ok"
    assert remaining_ids(engine, "content") == {10, 11, 20, 30, 40}


def test_demo_data_set_plan_equals_run_for_every_rule(database_url: str, tmp_path: Path) -> None:
    from retention.config import load_config
    from retention.demo import create_demo_database

    as_of = datetime(2026, 11, 23, 12, tzinfo=UTC)
    create_demo_database(database_url, as_of=as_of, seed=7)
    shipped = load_config(SHIPPED_CONFIG)
    # The SQL rules only: the object stores' rules are run on the demo in tests/test_demo.py.
    blocks = SHIPPED_CONFIG.read_text().split("\n[[rules]]")[1:]
    sql_blocks = [block for block in blocks if '\nstore = "app"\n' in block]
    rules_toml = "\n[[rules]]".join(sql_blocks).replace('store = "app"', 'store = "db"')
    key_file = tmp_path / "hash.key"
    key_file.write_text("d" * 32)
    config = make_config(
        database_url, "[[rules]]" + rules_toml, timezone="Europe/Paris", hash_key_file=key_file
    )
    assert [rule.name for rule in config.rules] == [
        rule.name for rule in shipped.rules if rule.store == "app"
    ]
    for rule in config.rules:
        the_plan, report = plan_and_run(config, as_of, rule.name)
        assert the_plan.rules[0].due > 0, rule.name
        outcome = report.outcomes[0]
        assert (outcome.status, outcome.done) == ("ok", the_plan.rules[0].due), rule.name
    assert set(due_counts(plan(config, as_of)).values()) == {0}


NON_UTC_ROWS = [
    # (id, utc instant, due at LEAP_AS_OF with a 1y period)
    (1, datetime(2024, 2, 29, 10, 0, 0, tzinfo=UTC), True),
    (2, datetime(2024, 2, 29, 10, 0, 1, tzinfo=UTC), False),
    (3, datetime(2024, 2, 28, 23, 30, tzinfo=UTC), False),
    (4, datetime(2023, 12, 31, 23, 30, tzinfo=UTC), True),
]


def _non_utc_case(url: str, aware_type: Any, insert_session: Callable[[Any], None]) -> Engine:
    metadata = MetaData()
    Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", aware_type),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        insert_session(connection)
    return engine


@pytest.mark.postgres
def test_postgres_session_time_zone_does_not_change_results(postgres_non_utc_url: str) -> None:
    def insert_rows(connection: Any) -> None:
        assert connection.execute(text("SHOW TimeZone")).scalar_one() == "America/New_York"
        for key, instant, _ in NON_UTC_ROWS:
            connection.execute(
                text("INSERT INTO logs VALUES (:id, :at)"), {"id": key, "at": instant}
            )

    engine = _non_utc_case(postgres_non_utc_url, DateTime(timezone=True), insert_rows)
    config = make_config(postgres_non_utc_url, LOG_RULE)
    the_plan, _ = plan_and_run(config, LEAP_AS_OF)
    assert the_plan.rules[0].oldest == datetime(2023, 12, 31, 23, 30, tzinfo=UTC)
    assert remaining_ids(engine, "logs") == {2, 3}


@pytest.mark.mariadb
def test_mariadb_session_time_zone_does_not_change_results(mariadb_non_utc_url: str) -> None:
    """TIMESTAMP columns are stored in UTC and shown in the session zone; the store reads them
    in UTC whatever the server or session default is."""

    def insert_rows(connection: Any) -> None:
        assert connection.execute(text("SELECT @@session.time_zone")).scalar_one() == "-05:00"
        for key, instant, _ in NON_UTC_ROWS:
            local = instant.astimezone(timezone(-timedelta(hours=5)))
            connection.execute(
                text("INSERT INTO logs VALUES (:id, :at)"),
                {"id": key, "at": local.replace(tzinfo=None)},
            )

    from sqlalchemy.dialects.mysql import TIMESTAMP

    engine = _non_utc_case(mariadb_non_utc_url, TIMESTAMP(), insert_rows)
    config = make_config(mariadb_non_utc_url, LOG_RULE)
    the_plan, _ = plan_and_run(config, LEAP_AS_OF)
    assert the_plan.rules[0].oldest == datetime(2023, 12, 31, 23, 30, tzinfo=UTC)
    assert remaining_ids(engine, "logs") == {2, 3}


@pytest.mark.postgres
def test_plan_works_with_a_select_only_role_and_run_cannot_write(
    postgres_url: str, postgres_readonly_url: Callable[[], str]
) -> None:
    engine = _leap_logs(postgres_url)
    readonly_config = make_config(postgres_readonly_url(), LOG_RULE)
    assert plan(readonly_config, LEAP_AS_OF).rules[0].due == len(LEAP_DUE)
    _, report = plan_and_run(readonly_config, LEAP_AS_OF)
    assert report.outcomes[0].status == "failed"
    assert "permission denied" in (report.outcomes[0].error or "")
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS)


@pytest.mark.postgres
def test_a_plain_delete_rule_runs_with_select_and_delete_only(
    postgres_url: str, postgres_readonly_url: Callable[[], str]
) -> None:
    """Least privilege, as docs/operations.md says: a plain delete rule takes no row lock of
    its own (PostgreSQL's SELECT … FOR UPDATE would need UPDATE), so SELECT and DELETE do."""
    from sqlalchemy.engine import make_url

    engine = _leap_logs(postgres_url)
    limited_url = postgres_readonly_url()
    role = make_url(limited_url).username
    with engine.begin() as connection:
        connection.execute(text(f'GRANT DELETE ON logs TO "{role}"'))
    _, report = plan_and_run(make_config(limited_url, LOG_RULE), LEAP_AS_OF)
    assert (report.outcomes[0].status, report.outcomes[0].deleted) == ("ok", len(LEAP_DUE))
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS) - LEAP_DUE


def test_sqlite_plan_opens_the_file_read_only(sqlite_url: str) -> None:
    from retention.stores.sql import create_sql_engine

    _leap_logs(sqlite_url)
    read_only = create_sql_engine(sqlite_url, read_only=True)
    with pytest.raises(Exception, match="readonly"), read_only.begin() as connection:
        connection.execute(text("DELETE FROM logs"))
    assert plan(make_config(sqlite_url, LOG_RULE), LEAP_AS_OF).rules[0].due == len(LEAP_DUE)


def test_missing_sqlite_file_is_unreachable_not_created(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/absent.sqlite"
    config = make_config(url, LOG_RULE)
    _, report = plan_and_run(config, LEAP_AS_OF)
    assert report.outcomes[0].status == "unavailable"
    assert report.exit_code == ExitCode.STORE_UNAVAILABLE
    assert not (tmp_path / "absent.sqlite").exists()


def test_an_unreachable_store_does_not_stop_rules_on_other_stores(sqlite_url: str) -> None:
    engine = _leap_logs(sqlite_url)
    config = make_config(
        sqlite_url,
        LOG_RULE
        + LOG_RULE.replace('name = "logs"', 'name = "remote-logs"').replace(
            'store = "db"', 'store = "remote"'
        ),
        extra_stores="""
[stores.remote]
kind = "sql"
url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
""",
    )
    _, report = plan_and_run(config, LEAP_AS_OF)
    statuses = {outcome.rule: outcome.status for outcome in report.outcomes}
    assert statuses == {"logs": "ok", "remote-logs": "unavailable"}
    assert report.exit_code == ExitCode.STORE_UNAVAILABLE
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS) - LEAP_DUE


def test_a_unique_key_that_can_be_null_is_refused_and_a_not_null_one_accepted(
    database_url: str,
) -> None:
    from retention.errors import ConfigError

    metadata = MetaData()
    Table(
        "members",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("email", String(80), unique=True, nullable=True),
        Column("code", String(20), unique=True, nullable=False),
        Column("left_at", DateTime),
    )
    create_tables(database_url, metadata).dispose()
    rule = """
[[rules]]
name = "members"
store = "db"
table = "members"
key = "{key}"
clock = "left_at"
period = "1y"
action = "delete"
"""
    refused = make_config(database_url, rule.format(key="email"))
    with pytest.raises(ConfigError) as raised:
        plan_and_run(refused, datetime(2026, 11, 23, tzinfo=UTC))
    ((path, message),) = [(issue.path, issue.message) for issue in raised.value.issues]
    assert path == "rules[0].key"
    assert "email can be NULL" in message
    accepted = make_config(database_url, rule.format(key="code"))
    _, report = plan_and_run(accepted, datetime(2026, 11, 23, tzinfo=UTC))
    assert report.exit_code == ExitCode.OK


def test_schema_problems_are_all_reported_before_anything_is_touched(database_url: str) -> None:
    from retention.errors import ConfigError

    engine = _contracts_and_content(database_url)
    config = make_config(
        database_url,
        CONTENT_RULE
        + """
[[rules]]
name = "broken"
store = "db"
table = "content"
key = "body"
clock = "created"
period = "1y"
where = ["colour = 'red'"]
action = "delete"

[[rules]]
name = "no-table"
store = "db"
table = "nothing_here"
key = "id"
clock = "at"
period = "1y"
action = "delete"

[[rules]]
name = "not-a-date"
store = "db"
table = "content"
key = "id"
clock = "body"
period = "1y"
action = "delete"
""",
    )
    with pytest.raises(ConfigError) as raised:
        plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    paths = {issue.path for issue in raised.value.issues}
    assert paths == {
        "rules[1].key",
        "rules[1].clock",
        "rules[1].where[0]",
        "rules[2].table",
        "rules[3].clock",
    }
    assert remaining_ids(engine, "content") == {10, 11, 20, 30, 40}


def _run_changing_a_row_before_the_delete(
    url: str, tmp_path: Path, change: str
) -> tuple[set[int], list[bytes], list[bytes]]:
    """Run LOG_RULE, audited, with ``change`` made by another session just before the first
    DELETE; return the ids deleted, the leaves the trail claims, and those ids' leaves."""
    from retention.app import make_plan, run_plan
    from retention.audit.leaves import record_leaf
    from retention.stores import open_stores

    engine = _leap_logs(url)
    audit = tmp_path / "audit"
    config = make_config(url, LOG_RULE, audit_directory=audit)
    changed: list[bool] = []

    def change_once(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "DELETE FROM logs" in statement and not changed:
            changed.append(True)
            with engine.begin() as other:
                other.execute(text(change))

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, LEAP_AS_OF)
        event.listen(store_for("db").engine, "before_cursor_execute", change_once)  # type: ignore[attr-defined]
        run_plan(config, the_plan, store_for, dry_run=False)
    assert changed
    deleted = set(LEAP_ROWS) - remaining_ids(engine, "logs")
    hmac_key = (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()
    expected = [record_leaf(hmac_key, "db", "logs", (key,)) for key in deleted]
    return deleted, claimed_leaves(audit), sorted(expected)


@pytest.mark.postgres
def test_a_row_that_becomes_due_inside_the_batch_range_goes_with_it_and_is_claimed(
    postgres_url: str, tmp_path: Path
) -> None:
    """The DELETE checks the due condition itself: a row made due by another session since the
    plan goes with its batch, and the trail claims it, because the intent lists the keys the
    DELETE returned."""
    deleted, claimed, expected = _run_changing_a_row_before_the_delete(
        postgres_url, tmp_path, "UPDATE logs SET logged_at = '2019-01-01' WHERE id = 2"
    )
    assert deleted == LEAP_DUE | {2}
    assert claimed == expected


@pytest.mark.postgres
def test_a_row_that_stops_being_due_before_the_delete_stays_and_is_not_claimed(
    postgres_url: str, tmp_path: Path
) -> None:
    touched = min(LEAP_DUE)
    deleted, claimed, expected = _run_changing_a_row_before_the_delete(
        postgres_url,
        tmp_path,
        f"UPDATE logs SET logged_at = '2026-01-01' WHERE id = {touched}",
    )
    assert deleted == LEAP_DUE - {touched}
    assert claimed == expected


@pytest.mark.postgres
def test_a_row_changed_while_the_delete_waits_for_it_stays_and_is_not_claimed(
    postgres_url: str, tmp_path: Path
) -> None:
    """Another session has made a due row not due, uncommitted, when the batch's DELETE starts,
    and commits while the DELETE waits for that row: the DELETE checks the row's new version,
    keeps it, and the trail does not claim it."""
    import threading

    from retention.app import make_plan, run_plan
    from retention.audit.leaves import record_leaf
    from retention.stores import open_stores

    engine = _leap_logs(postgres_url)
    audit = tmp_path / "audit"
    # Batches of 2: the kept row makes the first batch short, and the due rows after it must
    # still go in this run.
    config = make_config(postgres_url, logs_rule(extra="batch_size = 2"), audit_directory=audit)
    touched = min(LEAP_DUE)
    committers: list[threading.Timer] = []
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, LEAP_AS_OF)
        with engine.connect() as other:
            change = other.begin()
            other.execute(
                text("UPDATE logs SET logged_at = '2026-01-01' WHERE id = :id"), {"id": touched}
            )

            def commit_soon(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
                if "DELETE FROM logs" in statement and not committers:
                    committers.append(threading.Timer(0.5, change.commit))
                    committers[0].start()

            event.listen(store_for("db").engine, "before_cursor_execute", commit_soon)  # type: ignore[attr-defined]
            run_plan(config, the_plan, store_for, dry_run=False)
            committers[0].join()
    deleted = set(LEAP_ROWS) - remaining_ids(engine, "logs")
    assert deleted == LEAP_DUE - {touched}
    hmac_key = (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()
    claimed = claimed_leaves(audit)
    assert claimed == sorted(record_leaf(hmac_key, "db", "logs", (key,)) for key in deleted)


def test_a_database_refusal_names_no_value_in_the_outcome_logs_or_trail(
    database_url: str, tmp_path: Any
) -> None:
    """Two sessions of one site from one /24: truncating their IPs makes the same pair twice
    under UNIQUE (site, ip_address). MariaDB's message quotes it; PostgreSQL's statement
    parameters would too. The rule fails on its own, with the driver's first line and no value.
    (The unique key spans two columns: `config validate` refuses truncate_ip on a column unique
    on its own, but cannot tell whether two rows will share the other columns.)"""
    metadata = MetaData()
    sessions = Table(
        "sessions",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("site", Integer),
        Column("ip_address", String(45)),
        Column("ended_on", Date),
        Column("anonymised_at", DateTime),
        UniqueConstraint("site", "ip_address"),
    )
    engine = create_tables(database_url, metadata)
    _insert(
        engine,
        sessions,
        [
            {"id": 1, "site": 1, "ip_address": "198.51.100.23", "ended_on": date(2020, 1, 1)},
            {"id": 2, "site": 1, "ip_address": "198.51.100.77", "ended_on": date(2020, 1, 2)},
        ],
    )
    audit = tmp_path / "audit"
    config = make_config(
        database_url,
        """
[[rules]]
name = "sessions"
store = "db"
table = "sessions"
key = "id"
clock = "ended_on"
period = "1y"
action = "anonymise"
marker_column = "anonymised_at"

[rules.anonymise]
ip_address = "truncate_ip"
""",
        audit_directory=audit,
    )

    _, report = plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    (outcome,) = report.outcomes

    assert (outcome.status, outcome.anonymised) == ("failed", 0)
    assert "the database refused it" in str(outcome.error)
    trail = "".join(path.read_text() for path in (audit / "trail").iterdir())
    for text_out in (str(outcome.error), trail):
        assert "198.51.100" not in text_out
    with engine.connect() as connection:
        kept = {row.ip_address for row in connection.execute(select(sessions))}
    assert kept == {"198.51.100.23", "198.51.100.77"}


# SQLite keeps what a program wrote into a DATETIME column. Written by another program, a value
# may be Unix seconds (an integer: less than any text, so "older" than every cutoff), carry an
# offset (its wall time is not the store zone's), or use a "T" separator. As of LEAP_AS_OF the
# cutoff is 2024-02-28 10:00 UTC.
SQLITE_FOREIGN_CLOCKS = {
    # 2026-01-01 as Unix seconds: not due for two years, yet an integer sorts before the cutoff.
    21: 1767225600,
    # 2024-02-28 05:00-08:00 is 13:00 UTC, three hours after the cutoff: not due yet.
    22: "2024-02-28 05:00:00-08:00",
    # Due (2024-01-01), but spelled with a T.
    23: "2024-01-01T00:00:00",
    # Letters sort after every date: never due by its text, so never at risk nor counted.
    24: "yesterday",
    25: 12.5,
}


def test_sqlite_clock_values_in_a_foreign_format_are_kept_and_reported(sqlite_url: str) -> None:
    engine = _leap_logs(sqlite_url)
    with engine.begin() as connection:
        for key, value in SQLITE_FOREIGN_CLOCKS.items():
            connection.execute(
                text("INSERT INTO logs (id, logged_at) VALUES (:id, :at)"), {"id": key, "at": value}
            )
    config = make_config(sqlite_url, LOG_RULE)

    with capture_logs() as logs:
        the_plan, report = plan_and_run(config, LEAP_AS_OF)

    assert the_plan.rules[0].due == len(LEAP_DUE)
    # Counted: the values whose text compares as due, which the check of the spelling kept.
    assert the_plan.rules[0].unreadable == len(SQLITE_FOREIGN_CLOCKS) - 1
    warned = [line for line in logs if line["event"] == "rule.unreadable_clock"]
    assert [(line["rule"], line["rows"], line["log_level"]) for line in warned] == [
        ("logs", 4, "warning")
    ]
    # The run's line names the doc's sections, as the plan's warning does.
    assert warned[0]["kept"].endswith(
        "(see docs/config.md, SQLite timestamps, MariaDB/MySQL zero dates)"
    )
    assert report.outcomes[0].deleted == len(LEAP_DUE)
    assert remaining_ids(engine, "logs") == (set(LEAP_ROWS) - LEAP_DUE) | set(SQLITE_FOREIGN_CLOCKS)
    warning = (
        "logs: 4 rows with a clock value that is not a timestamp this store can compare "
        "(kept; see docs/config.md, SQLite timestamps, MariaDB/MySQL zero dates)"
    )
    assert warning in render_plan(the_plan, "UTC")
    assert plan_document(the_plan)["rules"][0]["unreadable_clock"] == 4  # type: ignore[index]


def test_sqlite_shortened_clock_spellings_compare_in_time_order(sqlite_url: str) -> None:
    engine = _leap_logs(sqlite_url)
    # Written by hand, shorter than SQLAlchemy's form; the cutoff is 2024-02-28 10:00 UTC.
    spellings = {
        31: ("2024-02-28", True),
        32: ("2024-02-28 10:00", True),
        33: ("2024-02-28 10:01", False),
        34: ("2024-02-28 10:00:00.5", False),
        35: ("2024-02-28 09:59:59.999", True),
        36: ("2024-02-29", False),
    }
    with engine.begin() as connection:
        for key, (value, _) in spellings.items():
            connection.execute(
                text("INSERT INTO logs (id, logged_at) VALUES (:id, :at)"), {"id": key, "at": value}
            )
    the_plan, report = plan_and_run(make_config(sqlite_url, LOG_RULE), LEAP_AS_OF)
    due_spellings = {key for key, (_, due) in spellings.items() if due}
    assert the_plan.rules[0].unreadable == 0
    assert report.outcomes[0].deleted == len(LEAP_DUE) + len(due_spellings)
    assert remaining_ids(engine, "logs") == (set(LEAP_ROWS) - LEAP_DUE) | (
        set(spellings) - due_spellings
    )


def _insert_clock_texts(engine: Engine, values: dict[int, str]) -> None:
    """Insert logs whose clock holds these texts as they are, past the column type's checks."""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO logs (id, logged_at) VALUES (:id, :at)"),
            [{"id": key, "at": value} for key, value in values.items()],
        )


def test_sqlite_clock_values_shaped_as_dates_but_off_the_calendar_are_kept(
    sqlite_url: str,
) -> None:
    engine = _leap_logs(sqlite_url)
    # Each has the shape of an accepted spelling, and compares as due by its text.
    off_the_calendar = {
        41: "2020-13-45 00:00:00",
        42: "2020-02-30",
        43: "2019-02-29 10:00",
        44: "2020-01-01 24:00:00",
        45: "2020-01-01 10:61",
        46: "2020-01-01 23:59:60.5",
    }
    _insert_clock_texts(engine, off_the_calendar)
    the_plan, report = plan_and_run(make_config(sqlite_url, LOG_RULE), LEAP_AS_OF)
    assert the_plan.rules[0].due == len(LEAP_DUE)
    assert the_plan.rules[0].unreadable == len(off_the_calendar)
    assert report.outcomes[0].deleted == len(LEAP_DUE)
    assert remaining_ids(engine, "logs") == (set(LEAP_ROWS) - LEAP_DUE) | set(off_the_calendar)


@pytest.mark.parametrize("clock_type", [Date, DateTime], ids=["date", "datetime"])
def test_sqlite_clock_text_with_a_nul_character_is_kept(sqlite_url: str, clock_type: type) -> None:
    """SQLite's GLOB and date functions stop at a NUL: '2020-01-01\\0' passed for a date, and
    reading it back as the oldest due clock failed (ValueError, a traceback in plan and run)."""
    metadata = MetaData()
    Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", clock_type()),
    )
    engine = create_tables(sqlite_url, metadata)
    values = {
        1: "2020-01-01",
        2: "2020-01-01\0",
        3: "2020-01-01\0 00:00:00",
        4: "2020-01-01 00:00:00\0",
    }
    _insert_clock_texts(engine, values)
    the_plan, report = plan_and_run(make_config(sqlite_url, LOG_RULE), LEAP_AS_OF)
    assert (the_plan.rules[0].due, the_plan.rules[0].unreadable) == (1, 3)
    assert report.outcomes[0].deleted == 1
    assert remaining_ids(engine, "logs") == {2, 3, 4}


def test_batches_shrink_when_their_transactions_run_long(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every transaction here appears to take 0.5 s: after the first batch of batch_size, the
    executor sizes the next ones towards its transaction-time target (down to 100 rows), and
    every due row still goes."""
    from types import SimpleNamespace

    metadata = MetaData()
    logs = _logs_table(metadata)
    engine = create_tables(sqlite_url, metadata)
    _insert(
        engine, logs, [{"id": key, "logged_at": datetime(2020, 1, 1)} for key in range(1, 1001)]
    )
    ticks = iter(range(0, 10_000))
    monkeypatch.setattr(
        "retention.stores.sql_purge.time", SimpleNamespace(monotonic=lambda: next(ticks) / 2)
    )
    config = make_config(
        sqlite_url, logs_rule(extra="batch_size = 400\nmax_fraction = 1.0\nmax_delete = 5000")
    )
    _, report = plan_and_run(config, LEAP_AS_OF)
    (outcome,) = report.outcomes
    assert outcome.deleted == 1000
    # 400, then 400 x 0.15 / 0.5 = 120, then at least 100 each: 400 + 120 + 5 x 100 (the last 80).
    assert outcome.batches == 7
    assert remaining_ids(engine, "logs") == set()


@pytest.mark.mariadb
@pytest.mark.parametrize("indexed", [True, False], ids=["clock-indexed", "clock-unindexed"])
def test_mariadb_survey_counts_by_the_clocks_index_when_it_has_one(
    mariadb_url: str, indexed: bool
) -> None:
    """An indexed clock is counted by four range counts (MariaDB computes the one pass's CASE
    per row slowly: issue 17; the fourth counts the zero dates kept back); an unindexed one in
    the one pass. Both give the same figures:
    in scope (NULL clocks too), due, with a future clock, the oldest due clock."""
    metadata = MetaData()
    logs = Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", DateTime(), index=indexed),
        Column("note", String(50)),
    )
    engine = create_tables(mariadb_url, metadata)
    rows = [{"id": key, "logged_at": at} for key, (at, _) in LEAP_ROWS.items()]
    rows.append({"id": 11, "logged_at": LEAP_AS_OF.replace(tzinfo=None) + timedelta(days=2)})
    _insert(engine, logs, rows)
    config = make_config(mariadb_url, LOG_RULE)
    statements: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.upper())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        rule_plan = plan(config, LEAP_AS_OF).rules[0]
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert (rule_plan.in_scope, rule_plan.due, rule_plan.future) == (11, len(LEAP_DUE), 1)
    assert rule_plan.oldest == datetime(2019, 6, 1, 12, tzinfo=UTC)
    counting = [statement for statement in statements if "COUNT(*)" in statement]
    assert (len(counting), any("CASE WHEN" in statement for statement in counting)) == (
        (4, False) if indexed else (1, True)
    )


def test_an_impossible_date_in_a_sqlite_column_to_anonymise_does_not_stop_the_rule(
    sqlite_url: str,
) -> None:
    """SQLite keeps any text in a DATE or DATETIME column: one client's '1990-02-30' made the
    driver's date reader fail the whole batch (ValueError: day is out of range for month), at
    every run, and no client of the rule was anonymised. Such a value is now read as the text
    it is: year_only keeps its year, a value with no year becomes NULL; the others are written
    as before, in SQLAlchemy's own format."""
    metadata = MetaData()
    Table(
        "clients",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("left_at", DateTime, nullable=True),
        Column("birth_date", Date, nullable=True),
        Column("seen_at", DateTime, nullable=True),
        Column("anonymised_at", DateTime, nullable=True),
    )
    engine = create_tables(sqlite_url, metadata)
    with engine.begin() as connection:
        for key, birth, seen in (
            (1, "1990-07-14", "2001-05-06 07:08:09.000000"),
            (2, "1990-02-30", "2001-13-06 07:08:09"),
            (3, "not a date", "garbage"),
            (4, None, None),
        ):
            connection.execute(
                text(
                    "INSERT INTO clients VALUES (:id, '2010-01-01 00:00:00.000000', :b, :s, NULL)"
                ),
                {"id": key, "b": birth, "s": seen},
            )
    config = make_config(
        sqlite_url,
        """
[[rules]]
name = "clients"
store = "db"
table = "clients"
key = "id"
clock = "left_at"
period = "5y"
action = "anonymise"
marker_column = "anonymised_at"
anonymise = { birth_date = "year_only", seen_at = "year_only" }
""",
    )
    _, report = plan_and_run(config, datetime(2026, 11, 23, tzinfo=UTC))
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.anonymised, outcome.error) == ("ok", 4, None)
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT id, birth_date, seen_at FROM clients ORDER BY id")
        ).all()
    assert [tuple(row) for row in stored] == [
        (1, "1990-01-01", "2001-01-01 00:00:00"),
        (2, "1990-01-01", "2001-01-01 00:00:00"),
        (3, None, None),
        (4, None, None),
    ]
    engine.dispose()
