"""A foreign key into a table a delete rule deletes from (its own, a child's at any depth), from
a table the rule does not list as a child by that key: one that refuses the delete (NO ACTION,
RESTRICT) would fail the rule at every run, one that rewrites the rows (SET NULL, SET DEFAULT)
would change them unrecorded. `config validate`, `plan` and `run` refuse the rule first, with
the key path; a refusing key passes when the rule's where_sql reads its table (how a rule
keeps the rows still referenced out), and a batch that still hits one fails whole, its message
naming the constraint and no value. SQLite's connections enforce no foreign key, but the keys
its tables declare are read and refused alike (deleting what they reference would leave rows
pointing at rows that are gone); a where_sql that misses a row still referenced there is not
caught at run time."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    text,
)

from retention.audit.entries import read_entries
from retention.cli import main
from retention.errors import ExitCode
from retention.stores.sql_reference_checks import reads_table
from retention.stores.sql_references import Reference
from tests.support import config_text, create_tables, remaining_ids
from tests.test_redaction import EMAIL, PEOPLE
from tests.test_redaction import PEOPLE_RULE as REDACTED_PEOPLE_RULE

OLD = datetime(2020, 1, 1)

CLIENTS_RULE_ALONE = """
[[rules]]
name = "clients"
store = "db"
table = "clients"
key = "id"
clock = "ended_at"
period = "1y"
action = "delete"
"""
CLIENTS_RULE = (
    CLIENTS_RULE_ALONE
    + """{extra}
[[rules.children]]
table = "invoices"
foreign_key = "client_id"
{grandchild}"""
)
PAYMENTS = """
[[rules.children.children]]
table = "payments"
foreign_key = "invoice_id"
references = "id"
"""
KEEPS_TICKETED = (
    'where_sql = "NOT EXISTS (SELECT 1 FROM tickets WHERE tickets.client_id = clients.id)"\n'
)


def _clients(url: str, visits: str | None = None) -> Engine:
    """clients <- invoices (listed) <- payments (RESTRICT), clients <- tickets (NO ACTION):
    client 1 has an invoice and its payment, client 2 a ticket, client 3 nothing; all three
    ended long ago. With ``visits`` (an ON DELETE action), visits reference clients so."""
    metadata = MetaData()
    Table(
        "clients",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("ended_at", DateTime, nullable=False),
    )
    Table(
        "invoices",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("client_id", Integer, ForeignKey("clients.id"), nullable=False),
    )
    Table(
        "payments",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("invoice_id", Integer, ForeignKey("invoices.id", ondelete="RESTRICT")),
    )
    Table(
        "tickets",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("client_id", Integer, ForeignKey("clients.id", ondelete="NO ACTION")),
    )
    if visits is not None:
        Table(
            "visits",
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("client_id", Integer, ForeignKey("clients.id", ondelete=visits)),
        )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        for statement in (
            "INSERT INTO clients VALUES (1, '2020-01-01'), (2, '2020-01-01'), (3, '2020-01-01')",
            "INSERT INTO invoices VALUES (10, 1)",
            "INSERT INTO payments VALUES (100, 10)",
            "INSERT INTO tickets VALUES (20, 2)",
        ):
            connection.execute(text(statement))
        if visits is not None:
            connection.execute(text("INSERT INTO visits VALUES (30, 3)"))
    return engine


def _config(tmp_path: Path, url: str, *, extra: str = "", grandchild: str = "") -> Path:
    config = tmp_path / "retention.toml"
    rule = CLIENTS_RULE.format(extra=extra, grandchild=grandchild)
    config.write_text(config_text(url, rule, audit_directory=tmp_path / "audit"))
    return config


def _cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *arguments])


def _left(engine: Engine) -> dict[str, set[int]]:
    return {
        table: remaining_ids(engine, table)
        for table in ("clients", "invoices", "payments", "tickets")
    }


EVERYTHING = {"clients": {1, 2, 3}, "invoices": {10}, "payments": {100}, "tickets": {20}}


def test_keys_that_refuse_the_delete_are_reported_with_their_key_paths(
    database_url: str, tmp_path: Path
) -> None:
    """An unlisted NO ACTION key into the rule's table and a RESTRICT key into its child: each
    is an error at the path of the table it references, naming the referencing table, its
    column and constraint and what to do, from validate, plan, a dry run and a run alike (exit
    78), before any row goes. On SQLite, whose connections enforce none of them, the keys its
    tables declare are refused alike, the message saying what an unenforced key leaves behind."""
    engine = _clients(database_url)
    config = _config(tmp_path, database_url)
    commands = (["config", "validate"], ["plan"], ["run", "--yes", "--dry-run"], ["run", "--yes"])
    sqlite = database_url.startswith("sqlite")
    for command in commands:
        result = _cli(config, *command)
        assert result.exit_code == ExitCode.BAD_CONFIG, (command, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 2, result.stderr
        table, child = sorted(errors)
        assert table.startswith("error: rules[0].children[0].table: 'payments' references ")
        assert "'invoices' (invoice_id) with ON DELETE RESTRICT (constraint " in table
        assert "list it in children[0].children (table, foreign_key)" in table
        assert child.startswith(
            "error: rules[0].table: 'tickets' references 'clients' (client_id) with ON DELETE "
        )
        # MariaDB's InnoDB reads NO ACTION as RESTRICT, and says so in its catalog; SQLite
        # names no constraint (its pragma gives none) but the key's table and number.
        constraint = r"foreign key 0 of tickets" if sqlite else r"\w+"
        assert re.search(rf"ON DELETE (NO ACTION|RESTRICT) \(constraint {constraint}\)", child)
        if sqlite:
            assert (
                "which the store's connections do not enforce (SQLite): deleting a row it "
                "references would leave its rows pointing at a row that is gone, where an "
                "application that enforces it expects the delete refused; " in child
            )
            assert "the batch holding one fails" not in child
        else:
            assert "the batch holding one fails, at every run" in child
        assert "list it in children (table, foreign_key)" in child
        assert "where_sql that reads tickets" in child
        assert _left(engine) == EVERYTHING


def test_a_where_sql_that_keeps_referenced_rows_out_lets_a_refusing_key_pass(
    database_url: str, tmp_path: Path
) -> None:
    """The payments listed as the invoices' children go first, recorded; the tickets' key is
    kept out by the rule's where_sql: client 2 stays, with its ticket, and the others go."""
    engine = _clients(database_url)
    config = _config(tmp_path, database_url, extra=KEEPS_TICKETED, grandchild=PAYMENTS)
    validated = _cli(config, "config", "validate")
    assert validated.exit_code == 0, validated.output
    ran = _cli(config, "run", "--yes", "--output", "json")
    assert ran.exit_code == 0, ran.output
    (outcome,) = json.loads(ran.stdout)["rules"]
    assert outcome["deleted"] == 2
    assert outcome["children"] == {"invoices": 1, "invoices/payments": 1}
    assert _left(engine) == {"clients": {2}, "invoices": set(), "payments": set(), "tickets": {20}}
    assert _cli(config, "audit", "verify").exit_code == 0


@pytest.mark.parametrize("action", ["SET NULL", "SET DEFAULT"])
def test_a_key_that_rewrites_rows_is_refused_even_with_a_where_sql(
    database_url: str, tmp_path: Path, action: str
) -> None:
    """SET NULL and SET DEFAULT would rewrite the visits the rule does not list: refused even
    when where_sql reads visits (what such a condition missed would be rewritten unrecorded,
    where a refusing key fails the batch instead). InnoDB takes no SET DEFAULT."""
    if action == "SET DEFAULT" and "mysql" in database_url:
        pytest.skip("InnoDB refuses ON DELETE SET DEFAULT: no such key there")
    engine = _clients(database_url, visits=action)
    keeps_visited = KEEPS_TICKETED.replace(
        'clients.id)"',
        'clients.id) AND NOT EXISTS (SELECT 1 FROM visits WHERE visits.client_id = clients.id)"',
    )
    config = _config(tmp_path, database_url, extra=keeps_visited, grandchild=PAYMENTS)
    result = _cli(config, "config", "validate")
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(
        f"error: rules[0].table: 'visits' references 'clients' (client_id) with ON DELETE {action}"
    )
    if database_url.startswith("sqlite"):
        assert "expects them rewritten; " in error
    else:
        assert "the database would rewrite its rows (client_id) unrecorded" in error
    assert "list it in children (table, foreign_key), so that they go first, recorded" in error
    assert _cli(config, "run", "--yes").exit_code == ExitCode.BAD_CONFIG
    assert _left(engine) == EVERYTHING
    assert remaining_ids(engine, "visits") == {30}


def test_a_table_that_references_itself_cannot_be_listed_so_where_sql_is_the_way(
    database_url: str, tmp_path: Path
) -> None:
    """Replies in the table of the comments they answer (NO ACTION): a table cannot be its own
    child, so the message says to keep the comments still answered out with where_sql; with
    it the rule passes and the answered comment stays."""
    metadata = MetaData()
    Table(
        "comments",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("reply_to", Integer, ForeignKey("comments.id"), nullable=True),
        Column("written_at", DateTime, nullable=False),
    )
    engine = create_tables(database_url, metadata)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO comments VALUES (1, NULL, '2020-01-01'), (2, 1, '2099-01-01')")
        )
        connection.execute(text("INSERT INTO comments VALUES (3, NULL, '2020-01-01')"))
    rule = """
[[rules]]
name = "comments"
store = "db"
table = "comments"
key = "id"
clock = "written_at"
period = "1y"
action = "delete"
"""
    config = tmp_path / "retention.toml"
    config.write_text(config_text(database_url, rule))
    refused = _cli(config, "config", "validate")
    assert refused.exit_code == ExitCode.BAD_CONFIG, refused.output
    assert "error: rules[0].table: 'comments' references 'comments' (reply_to)" in refused.stderr
    assert "list it in" not in refused.stderr
    assert "keep the rows it references out with a where_sql that reads comments" in (
        refused.stderr
    )
    answered = (
        'where_sql = "NOT EXISTS (SELECT 1 FROM comments r WHERE r.reply_to = comments.id)"\n'
    )
    config.write_text(config_text(database_url, rule + answered))
    ran = _cli(config, "run", "--yes")
    assert ran.exit_code == 0, ran.output
    assert remaining_ids(engine, "comments") == {1, 2}


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def enforcing_url(request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL or MariaDB database: a foreign key is enforced there."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


# The redaction tests' people and rule, with an erasure and a foreign key kept out.
PEOPLE_RULE = (
    REDACTED_PEOPLE_RULE
    + """action = "delete"
erase_by = "email"
where_sql = "{kept_out}"

[[rules.children]]
table = "notes"
foreign_key = "person"
""".format(
        kept_out="NOT EXISTS (SELECT 1 FROM letters "
        "WHERE letters.person = people.email AND letters.kept = 1)"
    )
)


def _people(url: str) -> Engine:
    """Two people who left long ago, each with a note (listed as a child); a letter that is
    not kept still references jane, which the rule's where_sql does not keep out."""
    metadata = MetaData()
    people = Table(
        "people",
        metadata,
        Column("email", String(100), primary_key=True),
        Column("left_at", DateTime),
    )
    notes = Table(
        "notes",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("person", String(100), ForeignKey("people.email")),
    )
    letters = Table(
        "letters",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("person", String(100), ForeignKey("people.email", name="letters_person_fk")),
        Column("kept", Integer, nullable=False),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(insert(people), [{"email": email, "left_at": OLD} for email in PEOPLE])
        connection.execute(
            insert(notes), [{"id": index, "person": email} for index, email in enumerate(PEOPLE)]
        )
        connection.execute(insert(letters), [{"id": 1, "person": PEOPLE[0], "kept": 0}])
    return engine


def test_a_batch_still_refused_by_a_key_fails_whole_naming_the_constraint_and_no_value(
    enforcing_url: str, tmp_path: Path
) -> None:
    """The where_sql reads letters (so validate passes) but keeps only the kept ones out: jane's
    row is still referenced, and the batch's DELETE is refused. The batch fails whole (the
    notes deleted before it are back, john stays too), the trail says nothing went and still
    verifies; an erasure of jane fails alike. The run report, the JSON logs, the ledger and
    `status` name the constraint and the table without quoting an address."""
    engine = _people(enforcing_url)
    state = tmp_path / "state.sqlite"
    audit = tmp_path / "audit"
    config = tmp_path / "retention.toml"
    config.write_text(
        config_text(
            enforcing_url, PEOPLE_RULE, audit_directory=audit, state_url=f"sqlite:///{state}"
        )
    )
    assert _cli(config, "config", "validate").exit_code == 0
    ran = CliRunner().invoke(
        main, ["--log-format", "json", "--config", str(config), "run", "--yes", "--output", "json"]
    )
    assert ran.exit_code == ExitCode.PARTIAL_FAILURE, ran.output
    (outcome,) = json.loads(ran.stdout)["rules"]
    assert outcome["deleted"] == 0
    assert "letters_person_fk" in outcome["error"]
    assert "letters" in outcome["error"]
    assert outcome["error"].endswith(
        ": a row of the batch is still referenced; list the referencing table in the rule's "
        "children by that key (where the store reaches it by its name alone), or keep such "
        "rows out with where_sql (an erasure ignores where_sql: for it, only children)"
    )
    with engine.connect() as connection:
        assert {row[0] for row in connection.execute(text("SELECT email FROM people"))} == set(
            PEOPLE
        )
        assert remaining_ids(engine, "notes") == {0, 1}
    status = _cli(config, "status")
    with sqlite3.connect(state) as connection:
        ledger = "\n".join(str(row) for row in connection.execute("SELECT * FROM retention_runs"))
    assert "letters_person_fk" in ledger
    for shown in (ran.stdout, ran.stderr, ledger, status.output):
        found = EMAIL.search(shown)
        assert found is None, f"{found.group(0)!r} leaked in:\n{shown}"
    batches = [
        (entry["type"], entry.get("selected"), entry.get("done"))
        for entry in (stored.content for stored in read_entries(audit))
        if entry["type"].startswith("batch.")
    ]
    assert batches == [("batch.intent", 2, None), ("batch.reconciled", None, 0)]
    assert _cli(config, "audit", "verify").exit_code == 0
    # An erasure ignores where_sql: jane's own erasure is refused by the key all the same.
    erased = _cli(config, "erase", "--subject", PEOPLE[0], "--request", "R-1", "--yes")
    assert erased.exit_code == ExitCode.PARTIAL_FAILURE, erased.output
    assert "letters_person_fk" in erased.stdout
    assert remaining_ids(engine, "notes") == {0, 1}


def test_validate_warns_of_a_key_an_erasure_meets_that_only_where_sql_keeps_out(
    database_url: str, tmp_path: Path
) -> None:
    """An erasing rule (erase_by) whose refusing keys only its where_sql accounts for: the
    tickets' key into clients and the payments' into the child invoices. `config validate`
    passes (exit 0) with one warning per key, at the key path of the table it references,
    naming the constraint: an erasure ignores where_sql. plan warns of nothing and runs as
    before. Listing the tickets as a child silences its warning; without erase_by there is
    none. On SQLite, whose connections enforce no key, the warning says what the erasure
    leaves behind instead of its failure."""
    _clients(database_url)
    kept_out = KEEPS_TICKETED.replace(
        'clients.id)"',
        "clients.id) AND NOT EXISTS (SELECT 1 FROM invoices i JOIN payments p ON "
        'p.invoice_id = i.id WHERE i.client_id = clients.id)"',
    )
    erasing = kept_out + 'erase_by = "id"\n'
    config = _config(tmp_path, database_url, extra=erasing)
    validated = _cli(config, "config", "validate")
    assert validated.exit_code == 0, validated.output
    warnings = sorted(line for line in validated.stderr.splitlines() if line.startswith("warning:"))
    assert "error:" not in validated.stderr
    assert len(warnings) == 2, validated.stderr
    payments, tickets = warnings
    assert payments.startswith(
        "warning: rules[0].children[0].table: 'payments' references 'invoices' (invoice_id) "
        "with ON DELETE RESTRICT (constraint "
    )
    sqlite = database_url.startswith("sqlite")
    constraint = r"foreign key 0 of tickets" if sqlite else r"\w+"
    outcome = (
        r"leaves its rows pointing at a row that is gone \(the store's connections do not "
        r"enforce the key: SQLite\)"
        if sqlite
        else "fails, rolled back"
    )
    assert re.match(
        r"warning: rules\[0\]\.table: 'tickets' references 'clients' \(client_id\) with ON "
        rf"DELETE (NO ACTION|RESTRICT) \(constraint {constraint}\): only where_sql keeps the rows "
        r"it references out, and an erasure \(erase_by\) ignores it: the erasure of a subject "
        rf"whose row it still references {outcome}; list it in children \(table, "
        r"foreign_key\), so that its rows go first, recorded$",
        tickets,
    ), tickets
    assert "list it in children[0].children (table, foreign_key)" in payments
    planned = _cli(config, "plan")
    assert planned.exit_code == 0, planned.output
    assert "warning:" not in planned.stderr
    listed = erasing + '[[rules.children]]\ntable = "tickets"\nforeign_key = "client_id"\n'
    validated = _cli(_config(tmp_path, database_url, extra=listed), "config", "validate")
    assert validated.exit_code == 0, validated.output
    assert validated.stderr.count("warning:") == 1, validated.stderr
    # The tickets come first in the file: the invoices are the second child now.
    assert "warning: rules[0].children[1].table: 'payments'" in validated.stderr
    validated = _cli(_config(tmp_path, database_url, extra=kept_out), "config", "validate")
    assert validated.exit_code == 0, validated.output
    assert "warning:" not in validated.stderr


def test_an_erasure_warning_quotes_no_value(enforcing_url: str, tmp_path: Path) -> None:
    """The people rule erases by e-mail address, jane's still referenced by a letter: the
    warning names the rule's key path and the constraint, never an address."""
    _people(enforcing_url)
    config = tmp_path / "retention.toml"
    config.write_text(config_text(enforcing_url, PEOPLE_RULE, audit_directory=tmp_path / "a"))
    validated = _cli(config, "config", "validate")
    assert validated.exit_code == 0, validated.output
    (warning,) = [line for line in validated.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(
        "warning: rules[0].table: 'letters' references 'people' (person) with ON DELETE "
    )
    assert "(constraint letters_person_fk): only where_sql keeps" in warning
    found = EMAIL.search(validated.output)
    assert found is None, f"{found.group(0)!r} leaked in:\n{validated.output}"


def _invoices(schema: str = "public", *, local: bool = True, name: str = "invoices") -> Reference:
    spelled = name if local else f"{schema}.{name}"
    return Reference(spelled, ("client_id",), "invoices_fk", "no action", schema, name, local)


def test_reads_table_finds_a_table_after_from_or_join_never_in_a_value() -> None:
    reads: Callable[[str], bool] = lambda sql: reads_table(sql, _invoices())  # noqa: E731
    assert reads("NOT EXISTS (SELECT 1 FROM invoices i WHERE i.client_id = clients.id)")
    assert reads("id NOT IN (SELECT c.id FROM clients c join Invoices ON x = y)")
    assert reads('NOT EXISTS (SELECT 1 FROM public."invoices" WHERE 1 = 1)')
    assert reads("NOT EXISTS (SELECT 1 FROM `invoices` WHERE 1 = 1)")
    assert not reads("note = 'from invoices'")
    assert not reads("note = 'it''s from invoices'")
    assert not reads("NOT EXISTS (SELECT 1 FROM invoices_archive WHERE 1 = 1)")
    assert not reads("invoices_count = 0")
    assert not reads_table(None, _invoices())


def test_reads_table_takes_a_schema_only_the_tables_own() -> None:
    """Another schema's (database's) table of that name is another table; one the store does
    not reach by its name alone is read only when qualified with its own; a quoted name is as
    written, case and spaces included."""
    assert not reads_table("NOT EXISTS (SELECT 1 FROM archive.invoices)", _invoices())
    archived = _invoices("archive", local=False)
    assert not reads_table("NOT EXISTS (SELECT 1 FROM invoices)", archived)
    assert not reads_table("NOT EXISTS (SELECT 1 FROM public.invoices)", archived)
    assert reads_table("NOT EXISTS (SELECT 1 FROM archive.invoices)", archived)
    assert reads_table('NOT EXISTS (SELECT 1 FROM "archive" . "invoices")', archived)
    spaced = _invoices(name="Order Items")
    assert reads_table('NOT EXISTS (SELECT 1 FROM "Order Items" o)', spaced)
    assert reads_table("NOT EXISTS (SELECT 1 FROM `Order Items` o)", spaced)
    assert not reads_table('NOT EXISTS (SELECT 1 FROM "order items" o)', spaced)
    assert not reads_table("NOT EXISTS (SELECT 1 FROM Order o)", spaced)


def test_sqlite_keys_declared_but_not_enforced_are_accounted_for_or_refused(
    sqlite_url: str, tmp_path: Path
) -> None:
    """An application that turns SQLite's foreign keys on expects its CASCADE to delete the
    sessions along with their client; the store's connections do not enforce it, so deleting
    the clients alone would leave sessions pointing at them, for ever. The key is refused
    (a table whose name is not a plain identifier, "Order Items", cannot be listed: drop the
    cascade); once sessions is listed and the other key dropped, the run deletes each client's
    sessions first, recorded, and leaves no row pointing at a client that is gone."""

    def create(with_order_items: bool) -> Engine:
        engine = create_tables(sqlite_url, MetaData())
        with engine.begin() as connection:
            for statement in (
                'DROP TABLE IF EXISTS "Order Items"',
                "DROP TABLE IF EXISTS sessions",
                "DROP TABLE IF EXISTS clients",
                "CREATE TABLE clients (id INTEGER PRIMARY KEY, ended_at DATETIME NOT NULL)",
                "CREATE TABLE sessions (id INTEGER PRIMARY KEY,"
                " client_id INTEGER REFERENCES clients (id) ON DELETE CASCADE)",
                "INSERT INTO clients VALUES (1, '2020-01-01'), (2, '2099-01-01')",
                "INSERT INTO sessions VALUES (10, 1), (20, 2)",
            ):
                connection.execute(text(statement))
            if with_order_items:
                connection.execute(
                    text(
                        'CREATE TABLE "Order Items" (id INTEGER PRIMARY KEY,'
                        " client INTEGER REFERENCES clients ON DELETE CASCADE)"
                    )
                )
        return engine

    rule = CLIENTS_RULE_ALONE
    config = tmp_path / "retention.toml"
    config.write_text(config_text(sqlite_url, rule, audit_directory=tmp_path / "audit"))
    engine = create(with_order_items=True)
    refused = _cli(config, "config", "validate")
    assert refused.exit_code == ExitCode.BAD_CONFIG, refused.output
    order_items, sessions = sorted(
        line for line in refused.stderr.splitlines() if line.startswith("error:")
    )
    assert order_items.startswith(
        "error: rules[0].table: '\"Order Items\"' references 'clients' (client) with ON DELETE "
        "CASCADE (constraint foreign key 0 of Order Items), which the store's connections do "
        "not enforce (SQLite): "
    )
    assert order_items.endswith(
        'expects them deleted along; drop the cascade ("Order Items" cannot be listed in '
        "children: its name is not a plain identifier (letters, digits, _), as a child's must "
        "be)"
    )
    assert sessions.startswith("error: rules[0].table: 'sessions' references 'clients' ")
    assert sessions.endswith(
        "expects them deleted along; list it in children (table, foreign_key) or drop the cascade"
    )
    assert _cli(config, "run", "--yes").exit_code == ExitCode.BAD_CONFIG
    assert remaining_ids(engine, "clients") == {1, 2}
    engine.dispose()

    engine = create(with_order_items=False)
    listed = rule + '[[rules.children]]\ntable = "sessions"\nforeign_key = "client_id"\n'
    config.write_text(config_text(sqlite_url, listed, audit_directory=tmp_path / "audit"))
    ran = _cli(config, "run", "--yes", "--output", "json")
    assert ran.exit_code == 0, ran.output
    (outcome,) = json.loads(ran.stdout)["rules"]
    assert (outcome["deleted"], outcome["children"]) == (1, {"sessions": 1})
    assert remaining_ids(engine, "clients") == {2}
    assert remaining_ids(engine, "sessions") == {20}
    assert _cli(config, "audit", "verify").exit_code == 0
