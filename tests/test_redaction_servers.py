"""An attacker's review of redaction: data that makes each real server refuse a run, a plan,
an erasure, an anonymisation and `config validate`, with the refused row's values (a marker
e-mail and a marker name with no @ in it) in every place the database could quote them. Each
command's stdout and stderr (JSON log lines), the run ledger, the audit trail's files and
`retention status` are searched: no marker may appear, and the message still names what failed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    insert,
)

from retention.cli import main
from retention.errors import ExitCode
from tests.s3_proxy import FaultProxy, make_bucket, object_keys, put_objects
from tests.support import config_text, create_tables
from tests.test_s3_faults import AS_OF, cli, write_config

# No @ in the name: the e-mail net of without_values does not hide a leak of it.
MARKER_EMAIL = "qx7.marker+leak@example.com"
MARKER_NAME = "Zebulon Quexworth"
OTHER_EMAIL = "qx7.other+leak@example.org"
OTHER_NAME = "Ottoline Vexbridge"
MARKERS = (MARKER_EMAIL, "qx7.marker", MARKER_NAME, "Zebulon", "Quexworth", OTHER_NAME, "qx7.other")

RULE = """
[[rules]]
name = "people"
store = "db"
table = "people"
key = "email"
clock = "left_at"
period = "1y"
erase_by = "email"
"""
DELETE_RULE = RULE + 'action = "delete"\n'
ANONYMISE_RULE = (
    RULE
    + """action = "anonymise"
marker_column = "anonymised_at"

[rules.anonymise]
name = { fixed = "anon" }
"""
)


def _people(url: str, *, unique_name: bool = False, check_name: bool = False) -> None:
    """people(email, name, left_at, anonymised_at), two rows long due, the markers in them."""
    metadata = MetaData()
    people = Table(
        "people",
        metadata,
        Column("email", String(100), primary_key=True),
        Column("name", String(100), nullable=False),
        Column("city", String(100), nullable=False, server_default="Bern"),
        Column("left_at", DateTime),
        Column("anonymised_at", DateTime),
        # With one city, a name anonymised to one value repeats (unique on one column, the
        # schema check refuses the rule first).
        *([UniqueConstraint("name", "city", name="one_name_a_city")] if unique_name else []),
        *([CheckConstraint("name <> 'anon'", name="name_not_anon")] if check_name else []),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(people),
            [
                {"email": MARKER_EMAIL, "name": MARKER_NAME, "left_at": datetime(2000, 1, 1)},
                {"email": OTHER_EMAIL, "name": OTHER_NAME, "left_at": datetime(2000, 1, 2)},
            ],
        )
    engine.dispose()


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


def _invoke(config: Path, *arguments: str, input_text: str | None = None) -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", "--config", str(config), *arguments], input=input_text
    )


def _config(tmp_path: Path, url: str, rules: str) -> Path:
    config = tmp_path / "retention.toml"
    config.write_text(
        config_text(
            url,
            rules,
            state_url=f"sqlite:///{tmp_path / 'state.sqlite'}",
            audit_directory=tmp_path / "audit",
        )
    )
    return config


def _everything(tmp_path: Path, results: list[Result]) -> str:
    """Whatever the commands showed, and whatever they left for people to read later: the state
    database's tables (the run ledger, holds), every file of the audit trail, `status`."""
    texts = [f"{result.stdout}\n{result.stderr}" for result in results]
    state = tmp_path / "state.sqlite"
    if state.exists():
        with sqlite3.connect(state) as connection:
            tables = [
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
            ]
            for table in tables:
                texts.extend(str(row) for row in connection.execute(f'SELECT * FROM "{table}"'))
    for path in sorted((tmp_path / "audit").rglob("*")):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    config = tmp_path / "retention.toml"
    for arguments in (("status",), ("status", "--output", "json")):
        status = _invoke(config, *arguments)
        texts.append(f"{status.stdout}\n{status.stderr}")
    return "\n".join(texts)


def _assert_no_marker(text: str) -> None:
    for marker in MARKERS:
        assert marker not in text, f"{marker!r} leaked in:\n{text}"


def _run(tmp_path: Path, url: str, rules: str) -> tuple[Result, str]:
    config = _config(tmp_path, url, rules)
    results = [
        _invoke(config, "config", "validate"),
        _invoke(config, "plan", "--as-of", "2026-01-01"),
        _invoke(config, "run", "--yes", "--as-of", "2026-01-01"),
        _invoke(config, "run", "--yes", "--as-of", "2026-01-01", "--output", "json"),
    ]
    return results[2], _everything(tmp_path, results)


def _erase(tmp_path: Path, url: str, rules: str) -> tuple[Result, str]:
    config = _config(tmp_path, url, rules)
    results = [
        _invoke(
            config, "erase", "--subject", "-", "--request", "T-1", "--yes", input_text=MARKER_EMAIL
        ),
    ]
    return results[0], _everything(tmp_path, results)


def _failed(result: Result, *said: str) -> None:
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    for words in said:
        assert words in result.stdout, result.stdout


def test_an_anonymised_fixed_value_into_a_unique_column_leaks_nothing(
    database_url: str, tmp_path: Path
) -> None:
    _people(database_url, unique_name=True)
    result, everything = _run(tmp_path, database_url, ANONYMISE_RULE)
    named = "people.name, people.city" if database_url.startswith("sqlite") else "one_name_a_city"
    _failed(result, "the database refused it", named)
    _assert_no_marker(everything)


def test_an_anonymised_value_a_check_refuses_leaks_nothing(
    database_url: str, tmp_path: Path
) -> None:
    _people(database_url, check_name=True)
    result, everything = _run(tmp_path, database_url, ANONYMISE_RULE)
    _failed(result, "the database refused it", "name_not_anon")
    _assert_no_marker(everything)


SQLITE_TRIGGER = (
    # RAISE takes a literal only: SQLite's triggers cannot quote a row.
    "CREATE TRIGGER refuse BEFORE {event} ON people BEGIN "
    "SELECT RAISE(ABORT, 'refused by a trigger'); END"
)
POSTGRES_TRIGGER = (
    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'refusing %% %%', OLD.name, OLD.email; END $$",
    "CREATE TRIGGER refuse BEFORE {event} ON people FOR EACH ROW EXECUTE FUNCTION refuse()",
)
MARIADB_TRIGGER = (
    "CREATE TRIGGER refuse BEFORE {event} ON people FOR EACH ROW BEGIN "
    "DECLARE message VARCHAR(200) DEFAULT CONCAT('refusing ', OLD.name, ' ', OLD.email); "
    "SIGNAL SQLSTATE '23000' SET MYSQL_ERRNO = {errno}, MESSAGE_TEXT = message; END"
)


def _trigger(url: str, event: str, errno: int = 1644) -> None:
    if url.startswith("sqlite"):
        _execute(url, SQLITE_TRIGGER.format(event=event))
    elif url.startswith("postgresql"):
        _execute(url, *(statement.replace("{event}", event) for statement in POSTGRES_TRIGGER))
    else:
        _execute(url, MARIADB_TRIGGER.format(event=event, errno=errno))


@pytest.mark.parametrize(("action", "event"), [("delete", "DELETE"), ("anonymise", "UPDATE")])
def test_a_trigger_quoting_the_row_leaks_nothing(
    database_url: str, tmp_path: Path, action: str, event: str
) -> None:
    _people(database_url)
    _trigger(database_url, event)
    result, everything = _run(
        tmp_path, database_url, DELETE_RULE if action == "delete" else ANONYMISE_RULE
    )
    _failed(result, "the database refused it")
    _assert_no_marker(everything)


@pytest.mark.parametrize("errno", [1062, 1451, 1366, 1292])
def test_a_mariadb_signal_borrowing_a_servers_error_number_leaks_nothing(
    mariadb_url: str, tmp_path: Path, errno: int
) -> None:
    _people(mariadb_url)
    _trigger(mariadb_url, "DELETE", errno)
    result, everything = _run(tmp_path, mariadb_url, DELETE_RULE)
    _failed(result, f"the database refused it: ({errno}) its message is left out")
    _assert_no_marker(everything)


def test_an_erasure_refused_by_a_trigger_leaks_nothing(database_url: str, tmp_path: Path) -> None:
    _people(database_url)
    _trigger(database_url, "DELETE")
    result, everything = _erase(tmp_path, database_url, DELETE_RULE)
    assert result.exit_code != ExitCode.OK, result.output
    _assert_no_marker(everything)


def test_a_refusing_foreign_key_leaks_nothing(database_url: str, tmp_path: Path) -> None:
    _people(database_url)
    metadata = MetaData()
    Table("people", metadata, Column("email", String(100), primary_key=True))
    Table(
        "orders",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("email", String(100), ForeignKey("people.email")),
    )
    engine = create_engine(database_url)
    metadata.tables["orders"].create(engine)
    with engine.begin() as connection:
        connection.execute(insert(metadata.tables["orders"]), [{"id": 1, "email": MARKER_EMAIL}])
    engine.dispose()
    # The rule's where_sql reads orders (so validate lets it through) but keeps no row out.
    rule = DELETE_RULE + 'where_sql = "email NOT IN (SELECT email FROM orders WHERE id < 0)"\n'
    result, everything = _run(tmp_path, database_url, rule)
    if not database_url.startswith("sqlite"):  # SQLite's connections enforce no foreign key
        _failed(result, "the database refused it", "orders")
    _assert_no_marker(everything)


# --- S3 (moto server, through the fault proxy) ------------------------------------------------

# Keys that are personal data (an export per person), and keys built to break a message: a
# tab, a format spec, percent signs (moto refuses a newline in a key).
S3_KEYS = [
    f"exports/{MARKER_EMAIL}/{MARKER_NAME}.csv",
    f"exports/{OTHER_NAME} {{0.__class__}} %s %(x)s\t.csv",
]


@pytest.fixture
def s3_proxy(s3_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server) as running:
        yield running


@pytest.mark.parametrize("code", ["InvalidObjectState", "AccessDenied", "InternalError"])
def test_an_s3_refusal_of_a_key_naming_a_person_leaks_nothing(
    s3_server: str, s3_proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    monkeypatch.setattr("retention.stores.s3_delete.RETRY_BASE_SECONDS", 0.01)
    bucket = make_bucket(s3_server, "redaction")
    put_objects(s3_server, bucket, S3_KEYS)
    s3_proxy.key_errors(r"^exports/", code)
    config = write_config(tmp_path, s3_proxy.endpoint, bucket)
    arguments = ("--allow-future-as-of", "--as-of", AS_OF)
    results = [
        cli(config, "config", "validate"),
        cli(config, "plan", *arguments),
        cli(config, "run", "--yes", *arguments),
        cli(config, "run", "--yes", *arguments, "--output", "json"),
    ]
    assert results[2].exit_code == ExitCode.PARTIAL_FAILURE, results[2].output
    assert code in results[2].stdout
    everything = _everything(tmp_path, results)
    _assert_no_marker(everything)
    assert "__class__" not in everything
    assert object_keys(s3_server, bucket) == set(S3_KEYS)
