"""The mass-deletion brake max_delete holds for what a run really purges, not only for what its
plan counted: rows that become due during the run (an earlier rule of the run deletes what kept
them out through where_sql) count against it, and the rule stops at it, braked, with what it
purged recorded; the next run's plan counts the rest. (max_fraction stays the plan's test: the
rows entering the scope during the run enlarge what it is a fraction of.)"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import Engine, MetaData, text

from retention.audit.entries import read_entries
from retention.cli import main
from retention.errors import ExitCode
from tests.support import config_text, create_tables, remaining_ids
from tests.test_dry_run import CONTRACTS_RULE
from tests.test_foreign_keys import CLIENTS_RULE_ALONE

RULES = (
    CONTRACTS_RULE
    + CLIENTS_RULE_ALONE
    + """batch_size = 2
max_delete = 3
where_sql = "NOT EXISTS (SELECT 1 FROM contracts WHERE contracts.client_id = clients.id)"
"""
)


def _clients(url: str) -> Engine:
    """Eight clients who left in 2020; clients 3 to 8 each keep an old contract (due too),
    which keeps them out of the clients rule until the contracts rule has run."""
    engine = create_tables(url, MetaData())
    with engine.begin() as connection:
        for statement in (
            "CREATE TABLE clients (id INTEGER PRIMARY KEY, ended_at TIMESTAMP NOT NULL)",
            "CREATE TABLE contracts (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL,"
            " ended_at TIMESTAMP NOT NULL)",
        ):
            connection.execute(text(statement))
        for client in range(1, 9):
            connection.execute(
                text("INSERT INTO clients VALUES (:id, '2020-01-01 00:00:00')"), {"id": client}
            )
            if client >= 3:
                connection.execute(
                    text("INSERT INTO contracts VALUES (:id, :id, '2020-01-01 00:00:00')"),
                    {"id": client},
                )
    return engine


def _cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *arguments])


def test_rows_that_become_due_during_the_run_stop_at_the_brake(
    database_url: str, tmp_path: Path
) -> None:
    """The plan counts 2 clients due (3 allowed); the contracts rule then deletes the contracts
    of 6 more, and the clients rule finds 8. It purges 3, in batches no larger than what is
    left under the brake, and stops braked, saying why; the trail holds those 3 and verifies.
    Lifted for one run, the rest go. Before, the run purged all 8, past max_delete."""
    engine = _clients(database_url)
    audit = tmp_path / "audit"
    config = tmp_path / "retention.toml"
    config.write_text(config_text(database_url, RULES, audit_directory=audit))

    planned = _cli(config, "plan", "--output", "json")
    assert planned.exit_code == 0, planned.output
    due = {rule["rule"]: rule["due"] for rule in json.loads(planned.stdout)["rules"]}
    assert due == {"contracts": 6, "clients": 2}

    ran = _cli(config, "run", "--yes", "--output", "json")
    assert ran.exit_code == ExitCode.PARTIAL_FAILURE, ran.output
    contracts, clients = json.loads(ran.stdout)["rules"]
    assert (contracts["status"], contracts["deleted"]) == ("ok", 6)
    assert (clients["status"], clients["deleted"]) == ("braked", 3)
    assert clients["error"].startswith(
        "stopped at max_delete = 3 after 3 purged: more became due during the run than the 2 "
        "its plan counted"
    )
    assert "--allow-over-limit clients" in clients["error"]
    assert len(remaining_ids(engine, "clients")) == 5
    recorded = [
        entry["selected"]
        for entry in (stored.content for stored in read_entries(audit))
        if entry["type"] == "batch.intent" and entry["rule"] == "clients"
    ]
    assert recorded == [2, 1]
    assert _cli(config, "audit", "verify").exit_code == 0

    lifted = _cli(config, "run", "--yes", "--allow-over-limit", "clients", "--output", "json")
    assert lifted.exit_code == 0, lifted.output
    assert remaining_ids(engine, "clients") == set()
    engine.dispose()


def test_a_rule_that_purges_exactly_up_to_its_brake_is_not_braked(sqlite_url: str) -> None:
    """Three due, three allowed, nothing more: the rule ends ok (the brake's count reached
    with nothing left is no brake)."""
    engine = _clients(sqlite_url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM contracts WHERE id > 3"))
        connection.execute(text("DELETE FROM clients WHERE id > 3"))
    config = Path(sqlite_url.removeprefix("sqlite:///")).parent / "retention.toml"
    config.write_text(config_text(sqlite_url, RULES))
    ran = _cli(config, "run", "--yes", "--output", "json")
    assert ran.exit_code == 0, ran.output
    _contracts, clients = json.loads(ran.stdout)["rules"]
    assert (clients["status"], clients["deleted"]) == ("ok", 3)
    assert remaining_ids(engine, "clients") == set()
