"""A dropped partition's keys are spelled by the database (issue 15): the leaves recorded are
exactly those of the keys as the driver reads them, on PostgreSQL and MariaDB, for integers,
dates and times with and without fractional seconds; a key no Python value spells (a zero
date, a year BC, an infinity) keeps its partition from the drop."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

from retention.anonymise import record_locator
from retention.app import make_plan, run_plan
from retention.audit import leaves as leaves_module
from retention.audit.entries import read_entries, read_leaves
from retention.audit.leaves import record_leaf
from retention.audit.prove import prove_record
from retention.errors import BatchConflict
from retention.stores import open_stores, partition_key_spelling, partition_keys_postgres
from tests.support import make_config, plan_and_run
from tests.test_partitions import AS_OF, _partitions, _verified

RULE = """
[[rules]]
name = "events"
store = "db"
table = "events"
key = ["id", "logged_at"]
clock = "logged_at"
period = "1y"
action = "delete"
"""

TIMES = [
    datetime(2024, 1, 5),
    datetime(2024, 1, 5, 10, 20, 30),
    datetime(2024, 1, 5, 10, 20, 30, 1),
    datetime(2024, 1, 5, 10, 20, 30, 10),
    datetime(2024, 1, 5, 10, 20, 30, 120000),
    datetime(2024, 1, 31, 23, 59, 59, 999999),
    datetime(1, 1, 1, 0, 0, 0, 500000),
    datetime(1, 1, 31, 12, 0, 0),
]
IDS = [-9223372036854775807, -1, 0, 7, 10**12, 9223372036854775807]


def _create(url: str, clock_type: str, rows: dict[int, object]) -> None:
    """``events`` (id bigint, logged_at of ``clock_type``) partitioned by month: January of
    the year 1, January 2024, and the rest."""
    engine = create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        if postgres:
            connection.execute(
                text(
                    f"CREATE TABLE events (id bigint NOT NULL, logged_at {clock_type} NOT NULL, "
                    "PRIMARY KEY (id, logged_at)) PARTITION BY RANGE (logged_at)"
                )
            )
            for name, lower, upper in (
                ("events_0001_01", "0001-01-01", "0001-02-01"),
                ("events_2024_01", "2024-01-01", "2024-02-01"),
            ):
                connection.execute(
                    text(
                        f"CREATE TABLE {name} PARTITION OF events "
                        f"FOR VALUES FROM ('{lower}') TO ('{upper}')"
                    )
                )
            connection.execute(text("CREATE TABLE events_rest PARTITION OF events DEFAULT"))
        else:
            connection.execute(
                text(
                    f"CREATE TABLE events (id bigint NOT NULL, logged_at {clock_type} NOT NULL, "
                    "PRIMARY KEY (id, logged_at)) PARTITION BY RANGE COLUMNS (logged_at) ("
                    "PARTITION events_0001_01 VALUES LESS THAN ('0001-02-01'), "
                    "PARTITION events_before VALUES LESS THAN ('2024-01-01'), "
                    "PARTITION events_2024_01 VALUES LESS THAN ('2024-02-01'), "
                    "PARTITION events_rest VALUES LESS THAN (MAXVALUE))"
                )
            )
        connection.execute(
            text("INSERT INTO events (id, logged_at) VALUES (:id, :at)"),
            [{"id": key, "at": at} for key, at in rows.items()],
        )
    engine.dispose()


def _read_keys(url: str) -> set[tuple[int, object]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                (row[0], row[1])
                for row in connection.execute(text("SELECT id, logged_at FROM events"))
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
@pytest.mark.parametrize("clock_type", ["timestamp", "date"])
def test_a_partitions_keys_spelled_by_the_database_are_its_records_leaves(
    backend: str,
    clock_type: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The leaves recorded for two dropped partitions (the year 1 and January 2024; every id
    from the smallest bigint to the largest, whole and fractional seconds) are those of
    the keys the driver reads, and each record can be proven gone; Python spells none of
    them (the code before did, about 1 µs a key)."""
    url: str = request.getfixturevalue(f"{backend}_url")
    if clock_type == "timestamp":
        clock_type = "timestamp(6)" if backend == "postgres" else "datetime(6)"
        values: list[object] = list(TIMES)
    else:
        values = sorted({value.date() for value in TIMES})
    ids = IDS + list(range(100, 120))
    rows = {key: values[index % len(values)] for index, key in enumerate(ids)}
    _create(url, clock_type, rows)
    read = _read_keys(url)
    assert len(read) == len(rows)
    audit = tmp_path / "audit"
    config = make_config(url, RULE, audit_directory=audit)

    def refuse(*args: object) -> list[bytes]:
        raise AssertionError("a partition's keys were hashed from their values")

    with monkeypatch.context() as patched:
        patched.setattr(leaves_module.RecordHasher, "leaves", refuse)
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert report.outcomes[0].deleted == len(rows)
    assert not {"events_0001_01", "events_2024_01"} & _partitions(url)
    intents = [
        stored.content for stored in read_entries(audit) if stored.content["type"] == "batch.intent"
    ]
    assert {entry["method"] for entry in intents} == {"sql-drop-partition"}
    recorded = [leaf for entry in intents for leaf in read_leaves(audit, entry["seq"])]
    key = (audit.parent / "audit-keys" / "hmac.key").read_bytes().strip()
    assert sorted(recorded) == sorted(record_leaf(key, "db", "events", found) for found in read)
    _verified(audit)
    some_id, some_at = max(read, key=lambda found: (str(found[1]), found[0]))
    assert prove_record(audit, key, "db", "events", (str(some_id), str(some_at))).proven


@pytest.mark.parametrize(
    ("spelled", "separator", "keys"),
    [
        (  # PostgreSQL: trailing zeros of a fraction cut
            b"7/2024-01-05 10:20:30.5\n-1/2024-01-05 00:00:00\n8/0001-01-01",
            b"\n",
            [
                (7, datetime(2024, 1, 5, 10, 20, 30, 500000)),
                (-1, datetime(2024, 1, 5)),
                (8, date(1, 1, 1)),
            ],
        ),
        (  # MariaDB: as many digits as the column has, zeros too
            b"7/2024-01-05 10:20:30.000000,8/0001-01-01 00:00:00.120",
            b",",
            [(7, datetime(2024, 1, 5, 10, 20, 30)), (8, datetime(1, 1, 1, 0, 0, 0, 120000))],
        ),
    ],
)
def test_spelled_keys_read_as_their_values_locators(
    spelled: bytes, separator: bytes, keys: list[tuple[int, object]]
) -> None:
    """Fractional seconds as str() writes them (six digits, none when zero), " " and ":"
    quoted as record_locator quotes them."""
    expected = [record_locator("db", "events", key)[len("db/events/") :].encode() for key in keys]
    assert partition_key_spelling.respelled(spelled, separator) == b"\n".join(expected)


@pytest.mark.parametrize(
    "spelled",
    [
        b"7/0001-01-01 00:00:00 BC",  # PostgreSQL: a year before Python's
        b"7/-infinity",
        b"7/infinity",
        b"7/0000-00-00 00:00:00",  # MariaDB's zero dates
        b"7/2024-00-05",
        b"7/2024-01-00 10:00:00",
        b"7/0000-01-05",
        b"7/2024-01-05 10:20:30.1234567",  # finer than Python's microseconds
        b"7/2024-01-05\xc3\xa9",
        b"7/10000-01-05 10:00:00",  # PostgreSQL: a year after Python's
        b"7/2024-01-05\n8/294276-12-31",
    ],
)
def test_a_key_no_python_value_spells_is_refused(spelled: bytes) -> None:
    with pytest.raises(BatchConflict, match=r"cannot be spelled exactly|more than microseconds"):
        partition_key_spelling.respelled(spelled, b"\n")


def test_a_mariadb_zero_date_keeps_its_partition(mariadb_url: str, tmp_path: Path) -> None:
    """A zero date (which MariaDB stores when sql_mode allows it) is no datetime: written into
    a partition after the plan found it due, it keeps the partition from the drop, and nothing
    of the partition is recorded as dropped."""
    _create(mariadb_url, "datetime", {1: datetime(1, 1, 5), 2: datetime(1, 1, 6)})
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, RULE, audit_directory=audit)
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        assert [due.name for due in the_plan.rules[0].partitions] == ["events_0001_01"]
        engine = create_engine(mariadb_url)
        with engine.begin() as connection:
            connection.execute(text("SET SESSION sql_mode = ''"))
            connection.execute(text("INSERT INTO events VALUES (3, '0000-00-00 00:00:00')"))
        engine.dispose()
        with capture_logs() as logs:
            run_plan(config, the_plan, store_for, dry_run=False)
    kept = [line for line in logs if line["event"] == "partition.kept"]
    assert [line["partition"] for line in kept] == ["events_0001_01"]
    assert "cannot be spelled exactly" in kept[0]["reason"]
    assert "events_0001_01" in _partitions(mariadb_url)
    methods = {stored.content.get("method") for stored in read_entries(audit)}
    assert "sql-drop-partition" not in methods


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("version", [2, 3])
def test_spelled_leaves_are_the_leaves_of_their_records(
    version: int, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In pieces, hashed by the compiled module or in Python, in every format a trail is
    written in: the sorted leaves of the same records as ``record_leaf`` gives them."""
    if not compiled:
        monkeypatch.setattr(leaves_module, "_native", None)
    elif leaves_module._native is None:
        pytest.skip("the compiled module is not built (make setup)")
    keys = [(key, datetime(2024, 1, 5, 10, key % 60, 7, key * 1000)) for key in range(1, 400)]
    tails = [record_locator("db", "events", key)[len("db/events/") :].encode() for key in keys]
    pieces = [b"\n".join(tails[start : start + 150]) for start in range(0, len(tails), 150)]
    hasher = leaves_module.RecordHasher(b"k" * 40, version)
    expected = sorted(record_leaf(b"k" * 40, "db", "events", key, version) for key in keys)
    assert list(hasher.spelled_leaves("db", "events", pieces)) == expected


def _keys_compiled() -> None:
    """Skip where retention/stores/_keys.c was not built, but fail under ``CI=true``."""
    if partition_keys_postgres._native is None:
        message = "retention/stores/_keys.c is not built: run make setup (gcc, Python headers)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _pieces(url: str, table: str, names: list[str]) -> list[bytes]:
    """``postgres_pieces`` of a table, read in one transaction."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection, connection.begin():
            driver = connection.connection.driver_connection
            rows = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            return list(partition_keys_postgres.postgres_pieces(driver, table, names, rows))
    finally:
        engine.dispose()


@pytest.mark.parametrize("compiled", [True, False])
def test_postgres_keys_spelled_from_binary_arrays_or_text_are_their_values_locators(
    postgres_url: str, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled module's spelling of the server's binary arrays (``_keys.c``) and the
    server's own text give the same bytes: each key's locator end as record_locator spells
    the values the driver reads, for every integer width, dates and times (fractions, years 1
    and 9999, before 1970 and 2000); a column of another type (oid) is read as text."""
    if not compiled:
        monkeypatch.setattr(partition_keys_postgres, "_native", None)
    else:
        _keys_compiled()
    engine = create_engine(postgres_url)
    times = [*TIMES, datetime(1969, 12, 31, 23, 59, 59, 999999), datetime(9999, 12, 31, 23, 59)]
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE keyed (a smallint NOT NULL, b integer NOT NULL, c bigint NOT NULL, "
                "d date NOT NULL, t timestamp(6) NOT NULL, o oid NOT NULL)"
            )
        )
        connection.execute(
            text("INSERT INTO keyed VALUES (:a, :b, :c, :d, :t, :o)"),
            [
                {
                    "a": (-32768, 32767, 0, -1)[index % 4],
                    "b": (-2147483648, 2147483647, 5)[index % 3],
                    "c": IDS[index % len(IDS)],
                    "d": date(at.year, at.month, at.day),
                    "t": at,
                    "o": 4294967295 - index,
                }
                for index, at in enumerate(times * 3)
            ],
        )
        read = [tuple(row) for row in connection.execute(text("SELECT * FROM keyed"))]
    engine.dispose()
    expected = {record_locator("db", "events", key)[len("db/events/") :] for key in read}
    pieces = _pieces(postgres_url, "keyed", ["a", "b", "c", "d", "t", "o"])
    assert {line.decode() for line in b"\n".join(pieces).split(b"\n")} == expected
    assert sum(piece.count(b"\n") + 1 for piece in pieces) == len(read)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("value", ["infinity", "-infinity", "0001-01-01 BC", "10000-01-01"])
def test_a_postgres_key_no_python_value_spells_is_refused(
    postgres_url: str, compiled: bool, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refused(postgres_url, compiled, value, monkeypatch)


def _refused(
    postgres_url: str, compiled: bool, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not compiled:
        monkeypatch.setattr(partition_keys_postgres, "_native", None)
    else:
        _keys_compiled()
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE keyed (id bigint NOT NULL, t timestamp NOT NULL)"))
        connection.execute(
            text("INSERT INTO keyed VALUES (1, '2024-01-05'), (2, CAST(:value AS timestamp))"),
            {"value": value},
        )
    engine.dispose()
    with pytest.raises(BatchConflict, match="cannot be spelled exactly"):
        _pieces(postgres_url, "keyed", ["id", "t"])
