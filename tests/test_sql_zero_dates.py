"""MariaDB's zero date (0000-00-00, stored where sql_mode allows it) is no date: PyMySQL reads
it back as text. A rule whose clock holds one fails alone, with a message and no traceback,
before anything of it is deleted; the other rules are planned and run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from tests.support import logs_rule, make_config, plan_and_run

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("clock_type", ["DATETIME", "DATE"])
def test_a_zero_date_fails_its_rule_and_deletes_nothing(mariadb_url: str, clock_type: str) -> None:
    engine = create_engine(mariadb_url)
    with engine.begin() as connection:
        connection.execute(text("SET SESSION sql_mode = ''"))
        for table in ("logs", "other_logs"):
            connection.execute(
                text(f"CREATE TABLE {table} (id INT PRIMARY KEY, logged_at {clock_type})")
            )
            connection.execute(
                text(f"INSERT INTO {table} VALUES (1, '2020-01-01'), (2, '2025-12-31')")
            )
        connection.execute(text("INSERT INTO logs VALUES (3, '0000-00-00')"))
    config = make_config(
        mariadb_url,
        logs_rule() + logs_rule(name="other").replace('table = "logs"', 'table = "other_logs"'),
    )
    the_plan, report = plan_and_run(config, AS_OF)
    by_name = {rule_plan.rule.name: rule_plan for rule_plan in the_plan.rules}
    assert by_name["logs"].error is not None
    assert "zero date" in by_name["logs"].error
    assert by_name["other"].error is None
    assert by_name["other"].due == 1
    with engine.connect() as connection:
        kept = {
            table: sorted(connection.execute(text(f"SELECT id FROM {table}")).scalars())
            for table in ("logs", "other_logs")
        }
    engine.dispose()
    assert kept == {"logs": [1, 2, 3], "other_logs": [2]}
    assert report is not None
