"""Erasure on request (policies.md row 13): one person's records, in every rule with erase_by,
whatever their age, audited, legal holds first. SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
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
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    insert,
    select,
    text,
)

from retention.app import make_plan, run_plan
from retention.app.erasure import erasure_request, erasure_rules
from retention.app.holds import place_hold
from retention.audit.entries import read_entries
from retention.audit.entry_checks import load_verification_keys
from retention.audit.leaves import subject_digest
from retention.audit.opening import audit_keys
from retention.audit.prove import prove_record
from retention.audit.verify import verify_trail
from retention.cli import main
from retention.config import Config
from retention.documents import plan_document
from retention.errors import ConfigError, ExitCode, UsageError
from retention.planner import Plan
from retention.render import render_plan
from retention.selection import ErasureRequest
from retention.stores import open_stores
from tests.support import config_text, create_tables, make_config, remaining_ids

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALICE = "alice@example.org"
BOB = "bob@example.org"

RULES = """
[[rules]]
name = "connection-logs"
store = "db"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
erase_by = "account.email"

[rules.joins.account]
table = "accounts"
on = { account_id = "id" }

[[rules]]
name = "accounts"
store = "db"
table = "accounts"
key = "id"
clock = "ended_at"
period = "0d"
match_all = true
action = "delete"
erase_by = "email"

[[rules]]
name = "clients"
store = "db"
table = "clients"
key = "id"
clock = "ended_on"
period = "5y"
action = "anonymise"
marker_column = "anonymised_at"
erase_by = "email"

[rules.anonymise]
email = "mask_email"
name = { fixed = "Client anonymisé" }

[[rules]]
name = "applicants"
store = "db"
table = "applicants"
key = "id"
clock = "applied_at"
period = "2y"
where = ["hired = false"]
action = "delete"
erase_by = "email"

[[rules]]
name = "numbered"
store = "db"
table = "numbered"
key = "id"
clock = "created_at"
period = "1y"
action = "delete"
erase_by = "person_id"

[[rules]]
name = "untouched"
store = "db"
table = "untouched"
key = "id"
clock = "created_at"
period = "1y"
action = "delete"
"""


def _people(url: str) -> Engine:
    """Alice and Bob in every table; nothing of theirs is due by age (recent logs, open
    accounts, current clients, a hired applicant), so only an erasure can remove Alice's."""
    metadata = MetaData()
    accounts = Table(
        "accounts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("email", String(100), index=True),
        Column("ended_at", DateTime, nullable=True),
    )
    logs = Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("account_id", Integer, index=True),
        Column("logged_at", DateTime, nullable=False),
    )
    clients = Table(
        "clients",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(100)),
        Column("email", String(100), index=True),
        Column("ended_on", Date, nullable=True),
        Column("anonymised_at", DateTime, nullable=True),
    )
    applicants = Table(
        "applicants",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("email", String(100), index=True),
        Column("hired", Boolean, nullable=False),
        Column("applied_at", DateTime, nullable=False),
    )
    numbered = Table(
        "numbered",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("person_id", Integer, index=True),
        Column("created_at", DateTime, nullable=False),
    )
    untouched = Table(
        "untouched",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("email", String(100)),
        Column("created_at", DateTime, nullable=False),
    )
    engine = create_tables(url, metadata)
    recent = datetime(2026, 11, 1, 12, 0)
    with engine.begin() as connection:
        connection.execute(
            insert(accounts),
            [
                {"id": 1, "email": ALICE, "ended_at": None},
                {"id": 2, "email": BOB, "ended_at": None},
            ],
        )
        connection.execute(
            insert(logs),
            [{"id": key, "account_id": 1 + key % 2, "logged_at": recent} for key in range(1, 11)],
        )
        connection.execute(
            insert(clients),
            [
                {"id": 1, "name": "Alice", "email": ALICE, "ended_on": None},
                {"id": 2, "name": "Bob", "email": BOB, "ended_on": date(2025, 1, 1)},
            ],
        )
        connection.execute(
            insert(applicants),
            [
                {"id": 1, "email": ALICE, "hired": True, "applied_at": recent},
                {"id": 2, "email": ALICE, "hired": False, "applied_at": recent},
                {"id": 3, "email": BOB, "hired": False, "applied_at": recent},
            ],
        )
        connection.execute(insert(numbered), [{"id": 1, "person_id": 7, "created_at": recent}])
        connection.execute(
            insert(untouched), [{"id": 1, "email": ALICE, "created_at": datetime(2020, 1, 1)}]
        )
    return engine


def _config(url: str, tmp_path: Path) -> Config:
    return make_config(url, RULES, audit_directory=tmp_path / "audit")


def _erase(
    config: Config, subject: str, *, dry_run: bool = False, reference: str = "DSR-2026-17"
) -> tuple[Plan, Any]:
    rules, _left_out = erasure_rules(config)
    request = erasure_request(subject, reference)
    with open_stores(config, read_only=dry_run) as store_for:
        the_plan = make_plan(config, rules, store_for, NOW, erasure=request)
        return the_plan, run_plan(config, the_plan, store_for, dry_run=dry_run, now=lambda: NOW)


def _alice_log_ids() -> set[int]:
    return {key for key in range(1, 11) if 1 + key % 2 == 1}


def test_an_erasure_removes_one_persons_records_whatever_their_age(
    database_url: str, tmp_path: Path
) -> None:
    engine = _people(database_url)
    config = _config(database_url, tmp_path)

    the_plan, report = _erase(config, ALICE)

    due = {rule_plan.rule.name: rule_plan.due for rule_plan in the_plan.rules}
    # Not the rule without erase_by; the applicant's `where` (hired = false) does not limit an
    # erasure: everything about the person goes.
    assert due == {
        "connection-logs": 5,
        "accounts": 1,
        "clients": 1,
        "applicants": 2,
        "numbered": 0,
    }
    assert report.exit_code == ExitCode.OK
    assert remaining_ids(engine, "logs") == set(range(1, 11)) - _alice_log_ids()
    assert remaining_ids(engine, "accounts") == {2}
    assert remaining_ids(engine, "applicants") == {3}
    assert remaining_ids(engine, "untouched") == {1}
    with engine.connect() as connection:
        clients = {
            row.id: (row.name, row.email, row.anonymised_at is not None)
            for row in connection.execute(
                text("SELECT id, name, email, anonymised_at FROM clients")
            )
        }
    assert clients[2] == ("Bob", BOB, False)
    assert clients[1][0] == "Client anonymisé"
    assert clients[1][1] != ALICE
    assert clients[1][2]

    # Done once, a second erasure finds nothing left, and says so.
    again, _ = _erase(config, ALICE)
    assert sum(rule_plan.due for rule_plan in again.rules) == 0
    assert "No record holds this subject. The match is exact" in render_plan(again, "UTC")


def test_an_erasure_is_audited_without_the_subject(database_url: str, tmp_path: Path) -> None:
    _people(database_url)
    config = _config(database_url, tmp_path)
    _erase(config, ALICE)
    audit = tmp_path / "audit"

    result = verify_trail(audit, load_verification_keys(audit / "public-keys.json"))
    assert result.problem is None
    entries = [stored.content for stored in read_entries(audit)]
    started = next(entry for entry in entries if entry["type"] == "run.started")
    assert config.audit is not None
    hmac_key, _signer = audit_keys(config.audit)
    assert started["erasure"] == {
        "reference": "DSR-2026-17",
        "subject": subject_digest(hmac_key, ALICE),
    }
    intents = [entry for entry in entries if entry["type"] == "batch.intent"]
    assert {entry["rule"] for entry in intents} == {
        "connection-logs",
        "accounts",
        "clients",
        "applicants",
    }
    assert all(entry["erasure"] == "DSR-2026-17" and entry["cutoff"] is None for entry in intents)
    # Alice's account is provably in the trail, as any purged record.
    search = prove_record(audit, hmac_key, "db", "accounts", ("1",))
    assert search.proven
    # Not one byte of the trail names her.
    for path in audit.rglob("*"):
        if path.is_file():
            assert b"alice" not in path.read_bytes().lower(), path


def test_a_legal_hold_outranks_an_erasure(database_url: str, tmp_path: Path) -> None:
    engine = _people(database_url)
    config = _config(database_url, tmp_path)
    place_hold(
        config,
        rule_name="connection-logs",
        keys=("2",),
        where=None,
        prefix=None,
        reason="case 2026-0042",
        until=None,
        now=NOW,
        by="legal@test",
    )

    the_plan, report = _erase(config, ALICE)

    logs_plan = next(
        rule_plan for rule_plan in the_plan.rules if rule_plan.rule.name == "connection-logs"
    )
    assert (logs_plan.due, logs_plan.held) == (4, 1)
    assert "Kept (legal holds outrank erasure):" in render_plan(the_plan, "UTC")
    assert remaining_ids(engine, "logs") == (set(range(1, 11)) - _alice_log_ids()) | {2}
    assert report.exit_code == ExitCode.OK


def test_a_dry_run_erasure_changes_nothing_and_the_plan_never_shows_the_subject(
    database_url: str, tmp_path: Path
) -> None:
    engine = _people(database_url)
    config = _config(database_url, tmp_path)

    the_plan, report = _erase(config, ALICE, dry_run=True)

    assert report.dry_run
    assert sum(outcome.done for outcome in report.outcomes) == 9
    assert remaining_ids(engine, "logs") == set(range(1, 11))
    assert remaining_ids(engine, "accounts") == {1, 2}
    shown = render_plan(the_plan, "UTC") + json.dumps(plan_document(the_plan))
    assert ALICE not in shown
    assert "DSR-2026-17" in shown
    assert ALICE not in repr(the_plan)
    assert not (tmp_path / "audit" / "trail").exists()


def test_an_identifier_of_another_type_matches_nobody(database_url: str, tmp_path: Path) -> None:
    engine = _people(database_url)
    config = _config(database_url, tmp_path)
    # person_id is an integer: an e-mail address is nobody's, and "7" is that person.
    the_plan, _ = _erase(config, ALICE, dry_run=True)
    assert next(p for p in the_plan.rules if p.rule.name == "numbered").due == 0
    _erase(config, "7")
    assert remaining_ids(engine, "numbered") == set()
    assert remaining_ids(engine, "accounts") == {1, 2}


def test_erase_by_is_checked_like_every_other_column(sqlite_url: str) -> None:
    _people(sqlite_url)
    broken = RULES.replace('erase_by = "person_id"', 'erase_by = "persn_id"')
    config = make_config(sqlite_url, broken)
    rules, _ = erasure_rules(config)
    with (
        open_stores(config, read_only=True) as store_for,
        pytest.raises(ConfigError) as raised,
    ):
        make_plan(config, rules, store_for, NOW, erasure=ErasureRequest("x", "r"))
    assert [(issue.path, issue.message) for issue in raised.value.issues] == [
        ("rules[4].erase_by", "no column 'persn_id' in 'numbered'")
    ]


@pytest.mark.parametrize(
    ("erase_by", "message"),
    [
        ('"account.email"', "goes through join 'account', which is not declared"),
        ("42", "must be a column name"),
    ],
)
def test_a_bad_erase_by_is_refused_at_load(sqlite_url: str, erase_by: str, message: str) -> None:
    rules = RULES.replace('erase_by = "person_id"', f"erase_by = {erase_by}")
    with pytest.raises(ConfigError) as raised:
        make_config(sqlite_url, rules)
    assert any(
        issue.path == "rules[4].erase_by" and message in issue.message
        for issue in raised.value.issues
    )


def test_requests_without_a_subject_or_a_reference_are_refused() -> None:
    with pytest.raises(UsageError, match="--subject is empty"):
        erasure_request("  \n", "DSR-1")
    with pytest.raises(UsageError, match="--request is empty"):
        erasure_request(ALICE, " ")
    with pytest.raises(UsageError, match="longer than 200"):
        erasure_request(ALICE, "x" * 201)
    # The reference goes into the trail as written: never the person.
    with pytest.raises(UsageError, match="names the subject"):
        erasure_request("4242", "DSR for customer 4242")
    with pytest.raises(UsageError, match="--request holds an e-mail or IP address"):
        erasure_request("4242", f"asked by {BOB}")
    with pytest.raises(UsageError, match="control characters"):
        erasure_request(ALICE, "DSR-1\nforged line")
    assert erasure_request(" 4242\n", " DSR-1 ") == ErasureRequest("4242", "DSR-1")


def test_a_config_without_erase_by_cannot_erase(sqlite_url: str) -> None:
    config = make_config(sqlite_url, RULES.replace("erase_by", "# erase_by"))
    with pytest.raises(UsageError, match="no rule has erase_by"):
        erasure_rules(config)


def _write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "retention.toml"
    path.write_text(config_text(url, RULES, audit_directory=tmp_path / "audit"))
    return path


def test_the_erase_command(sqlite_url: str, tmp_path: Path) -> None:
    engine = _people(sqlite_url)
    config_path = _write_config(tmp_path, sqlite_url)
    runner = CliRunner()
    base = ["--log-format", "json", "--config", str(config_path), "erase"]

    dry = runner.invoke(
        main, [*base, "--subject", "-", "--request", "DSR-9", "--dry-run"], input=f"{ALICE}\n"
    )
    assert dry.exit_code == 0, dry.output
    assert "Erasure plan" in dry.output
    assert "DSR-9" in dry.output
    assert "untouched: logged_at" not in dry.output
    assert "untouched: not erased on request; its records go at created_at + 1y" in dry.output
    assert ALICE not in dry.output
    assert remaining_ids(engine, "accounts") == {1, 2}

    no_terminal = runner.invoke(main, [*base, "--subject", ALICE, "--request", "DSR-9"])
    assert no_terminal.exit_code == ExitCode.USAGE
    assert "pass --yes" in no_terminal.output

    done = runner.invoke(
        main, [*base, "--subject", "-", "--request", "DSR-9", "--yes"], input=ALICE
    )
    assert done.exit_code == 0, done.output
    assert ALICE not in done.output
    assert remaining_ids(engine, "accounts") == {2}
    with engine.connect() as connection:
        assert connection.execute(select(text("count(*)")).select_from(text("logs"))).scalar() == 5

    audit = ["--log-format", "json", "--config", str(config_path), "audit", "erasures"]
    found = runner.invoke(main, [*audit, "--subject", "-"], input=ALICE)
    assert found.exit_code == 0, found.output
    assert found.stdout.startswith("request DSR-9: run ")
    assert "exit code 0" in found.stdout
    assert "  accounts: ok; deleted 1, due 1" in found.stdout
    assert ALICE not in found.output
    nobody = runner.invoke(main, [*audit, "--subject", BOB])
    assert nobody.exit_code == ExitCode.PARTIAL_FAILURE
    assert "No erasure request for this subject" in nobody.stdout

    empty = runner.invoke(main, [*base, "--subject", "", "--request", "DSR-9", "--yes"])
    assert empty.exit_code == ExitCode.USAGE
    assert "--subject is empty" in empty.output


@pytest.mark.postgres
def test_an_identifier_that_is_not_a_uuid_matches_nobody_in_a_uuid_column(
    postgres_url: str, tmp_path: Path
) -> None:
    metadata = MetaData()
    people = Table(
        "people",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("person", Uuid),
        Column("at", DateTime, nullable=False),
    )
    engine = create_tables(postgres_url, metadata)
    person = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(
            insert(people),
            [
                {"id": 1, "person": person, "at": datetime(2026, 1, 1)},
                {"id": 2, "person": uuid.uuid4(), "at": datetime(2026, 1, 1)},
            ],
        )
    rules = """
[[rules]]
name = "people"
store = "db"
table = "people"
key = "id"
clock = "at"
period = "1y"
action = "delete"
erase_by = "person"
"""
    config = make_config(postgres_url, rules, audit_directory=tmp_path / "audit")
    the_plan, report = _erase(config, ALICE)
    assert the_plan.rules[0].error is None
    assert report.exit_code == ExitCode.OK
    assert remaining_ids(engine, "people") == {1, 2}
    _erase(config, str(person).upper())
    assert remaining_ids(engine, "people") == {2}


def test_erase_on_a_terminal_asks_for_the_plan_id(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _people(sqlite_url)
    config_path = _write_config(tmp_path, sqlite_url)
    monkeypatch.setattr("retention.cli.purge.stdin_is_terminal", lambda: True)
    command = ["--config", str(config_path), "erase", "--subject", ALICE, "--request", "DSR-3"]

    monkeypatch.setattr("retention.cli.click.prompt", lambda text, **_: "y")
    refused = CliRunner().invoke(main, command)
    assert refused.exit_code == ExitCode.USAGE
    assert "nothing was erased" in refused.output
    assert remaining_ids(engine, "accounts") == {1, 2}

    asked: list[str] = []

    def type_the_plan_id(text: str, **_: object) -> str:
        asked.append(text)
        return text[text.index("(") + 1 : text.index(")")]

    monkeypatch.setattr("retention.cli.click.prompt", type_the_plan_id)
    confirmed = CliRunner().invoke(main, command)
    assert confirmed.exit_code == 0, confirmed.output
    assert asked[0].startswith("To erase, type the plan id (")
    assert remaining_ids(engine, "accounts") == {2}


def _accounts_first() -> str:
    """RULES with the accounts rule written before the rule that finds a person's logs
    through their account."""
    blocks = RULES.split("[[rules]]\n")[1:]
    logs, accounts, rest = blocks[0], blocks[1], blocks[2:]
    return "".join(f"[[rules]]\n{block}" for block in [accounts, logs, *rest])


def test_a_rule_that_finds_its_person_through_a_join_is_erased_before_the_joined_rows(
    database_url: str, tmp_path: Path
) -> None:
    """Written after the rule that erases the accounts, the logs rule would look for Alice's
    account once it is gone, find none, and keep her logs for ever (the dry run saying they
    go): an erasure takes such a rule before the rules that erase what it reaches."""
    engine = _people(database_url)
    config = make_config(database_url, _accounts_first(), audit_directory=tmp_path / "audit")
    rules, _left_out = erasure_rules(config)
    assert [rule.name for rule in rules][:2] == ["connection-logs", "accounts"]
    _, dry = _erase(config, ALICE, dry_run=True)
    _, report = _erase(config, ALICE)
    for outcomes in (dry.outcomes, report.outcomes):
        logs = next(outcome for outcome in outcomes if outcome.rule == "connection-logs")
        assert (logs.deleted, logs.skipped) == (5, 0)
    assert report.exit_code == ExitCode.OK
    assert remaining_ids(engine, "logs") == set(range(1, 11)) - _alice_log_ids()
    assert remaining_ids(engine, "accounts") == {2}
