"""MariaDB's check of a partition read ahead (issue 15): the SHA-256 of its keys joined into one
string, taken by Python from the string it reads and by the server's SHA2 of the same
GROUP_CONCAT under LOCK TABLES, is the same for the same keys, whatever their columns' types,
and differs when a key changed; keys read in another order keep the partition, never drop it."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

from retention.app import make_plan
from retention.audit.leaves import record_leaf
from retention.stores import open_stores, partition_keys_mariadb
from retention.stores.partition_ahead import start_reading
from retention.stores.partition_catalog import read_partitioning
from retention.stores.partition_survey import count_partition
from retention.stores.partitions import CHUNK
from tests.support import make_config, plan_and_run
from tests.test_partition_drops import _key
from tests.test_partitions import (
    AS_OF,
    DUE,
    KEPT,
    ROWS,
    RULE,
    _claimed,
    _partitions,
    _remaining,
    _verified,
    create_events,
)

BIGGEST = 9223372036854775807
# Key columns (beside logged_at, the clock) and their rows: (key values, logged_at).
SHAPES: dict[str, tuple[str, list[str], list[tuple[tuple[Any, ...], datetime]]]] = {
    "bigint and datetime(6)": (
        "id bigint NOT NULL, logged_at datetime(6) NOT NULL, PRIMARY KEY (id, logged_at)",
        ["id", "logged_at"],
        [
            ((-BIGGEST,), datetime(2024, 1, 5)),
            ((-1,), datetime(2024, 1, 5, 10, 20, 30, 1)),
            ((0,), datetime(2024, 1, 5, 10, 20, 30, 120000)),
            ((BIGGEST,), datetime(2024, 1, 31, 23, 59, 59, 999999)),
        ],
    ),
    "int, date and datetime": (
        "account int NOT NULL, day date NOT NULL, logged_at datetime NOT NULL, "
        "PRIMARY KEY (account, day, logged_at)",
        ["account", "day", "logged_at"],
        [
            ((7, date(2024, 1, 5)), datetime(2024, 1, 5, 1, 2, 3)),
            ((7, date(2024, 1, 6)), datetime(2024, 1, 5, 1, 2, 3)),
            ((-8, date(1999, 12, 31)), datetime(2024, 1, 30)),
        ],
    ),
    "unsigned bigint and datetime": (
        "id bigint unsigned NOT NULL, logged_at datetime NOT NULL, PRIMARY KEY (id, logged_at)",
        ["id", "logged_at"],
        [((18446744073709551615,), datetime(2024, 1, 9)), ((1,), datetime(2024, 1, 10))],
    ),
    "datetime alone": (
        "logged_at datetime(3) NOT NULL, PRIMARY KEY (logged_at)",
        ["logged_at"],
        [((), datetime(2024, 1, 9, 0, 0, 0, 5000)), ((), datetime(2024, 1, 10))],
    ),
}


def _create(url: str, columns: str, names: list[str], rows: list[Any]) -> None:
    """``events`` with those columns, partitioned by month on logged_at (January 2024, then
    the rest), holding the rows."""
    values = [name for name in names if name != "logged_at"] + ["logged_at"]
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE TABLE events ({columns}) PARTITION BY RANGE COLUMNS (logged_at) ("
                "PARTITION events_2024_01 VALUES LESS THAN ('2024-02-01'), "
                "PARTITION events_rest VALUES LESS THAN (MAXVALUE))"
            )
        )
        placeholders = ", ".join(f":{name}" for name in values)
        connection.execute(
            text(f"INSERT INTO events ({', '.join(values)}) VALUES ({placeholders})"),
            [dict(zip(values, (*key, at), strict=True)) for key, at in rows],
        )
    engine.dispose()


def _lock_digest(store: Any, selection: Any) -> tuple[int, str | None]:
    """The partition's rows and digest as the check under LOCK TABLES reads them."""
    with store.write_connection() as connection:
        partitioning = read_partitioning(connection, "events")
        assert partitioning is not None
        partition = next(p for p in partitioning.partitions if p.name == "events_2024_01")
        rows, _due, _held, digest = count_partition(
            store, connection, selection, partitioning, partition
        )
    assert digest is not None
    return rows, digest.text


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_digest_of_keys_read_ahead_is_the_one_under_the_lock(
    shape: str, mariadb_url: str
) -> None:
    """Integers from the smallest bigint to the largest unsigned one, dates, datetimes with and
    without fractional seconds, keys of one to three columns: the digest Python takes of the
    string read ahead is the server's of the same keys, which is the SHA-256 of the keys
    spelled and joined as the server spells them; one key changed, the server's differs."""
    columns, names, rows = SHAPES[shape]
    _create(mariadb_url, columns, names, rows)
    rule = RULE.replace('key = ["id", "logged_at"]', f"key = {names!r}".replace("'", '"'))
    config = make_config(mariadb_url, rule)
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        planned = the_plan.rules[0]
        assert [due.name for due in planned.partitions] == ["events_2024_01"]
        store, selection = store_for("db"), planned.selection
        ahead = start_reading(store, selection, "events_2024_01", len(rows), CHUNK)  # type: ignore[arg-type]
        assert ahead is not None
        found = next(ahead.reading)
        ahead.close()
        assert sum(keys.finish() for keys in found.keys) == len(rows)
        assert isinstance(found.checksum, str)
        assert _lock_digest(store, selection) == (len(rows), found.checksum)
        # What the server hashes: each key's columns as it spells them, joined.
        engine = create_engine(mariadb_url)
        with engine.connect() as connection:
            parts = ", '/', ".join(f"`{name}`" for name in names)
            spelled = connection.execute(
                text(f"SELECT CONCAT({parts}) FROM events PARTITION (events_2024_01)")
            ).scalars()
            joined = ",".join(spelled).encode()
        engine.dispose()
        assert found.checksum == hashlib.sha256(joined).hexdigest()
        first = names[0]
        engine = create_engine(mariadb_url)
        with engine.begin() as connection:
            change = "logged_at + INTERVAL 1 SECOND" if first == "logged_at" else f"`{first}` DIV 2"
            connection.execute(
                text(f"UPDATE events SET `{first}` = {change} ORDER BY logged_at LIMIT 1")
            )
        engine.dispose()
        rows_now, digest_now = _lock_digest(store, selection)
        assert rows_now == len(rows)
        assert digest_now != found.checksum


def test_text_keys_are_not_read_ahead_joined(mariadb_url: str) -> None:
    """A text key could hold "/" or ",": such keys are not joined into one string as spelled
    (nor read ahead); the server digests them encoded (test_partition_buckets)."""
    _create(
        mariadb_url,
        "code varchar(20) NOT NULL, logged_at datetime NOT NULL, PRIMARY KEY (code, logged_at)",
        ["code", "logged_at"],
        [(("a,1",), datetime(2024, 1, 5)), (("a/1",), datetime(2024, 1, 5))],
    )
    rule = RULE.replace('key = ["id", "logged_at"]', 'key = ["code", "logged_at"]')
    config = make_config(mariadb_url, rule)
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        selection = the_plan.rules[0].selection
        assert start_reading(store_for("db"), selection, "events_2024_01", 2, CHUNK) is None  # type: ignore[arg-type]


def test_keys_read_under_the_lock_in_another_order_keep_the_partition(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest is of the keys in the order the server reads them (its index's, the same
    both times while nothing changed): read otherwise under the lock (here in reverse), the
    same keys give another digest, and every partition is kept, none dropped unchecked; their
    rows go by row batches, each named once."""
    create_events(mariadb_url)
    original = partition_keys_mariadb._joined_statement

    def reversed_under_the_lock(*args: Any, digest: bool = False, **more: Any) -> tuple[str, Any]:
        statement, parameters = original(*args, digest=digest, **more)
        if digest:
            order = " ORDER BY `k0` DESC, `k1` DESC SEPARATOR"
            statement = statement.replace(" SEPARATOR", order)
        return statement, parameters

    monkeypatch.setattr(partition_keys_mariadb, "_joined_statement", reversed_under_the_lock)
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, RULE, audit_directory=audit)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    kept = [line["partition"] for line in logs if line["event"] == "partition.kept"]
    assert kept == ["events_2024_01", "events_2024_02", "events_2024_03"]
    assert {"events_2024_01", "events_2024_02", "events_2024_03"} <= _partitions(mariadb_url)
    assert _remaining(mariadb_url) == KEPT
    claimed = _claimed(audit)
    assert len(claimed) == len(set(claimed))
    key = _key(audit)
    assert set(claimed) == {record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE}
    _verified(audit)


def test_a_rule_with_a_condition_drops_partitions_whose_keys_an_index_covers(
    mariadb_url: str, tmp_path: Path
) -> None:
    """A secondary index covers the key columns (the read ahead scans it: the keys in its
    order) and the rule's condition reads a column it does not hold: the pass under the lock
    that takes the digest still reads the keys the same way (the read ahead's statement), so
    the partition goes whole, every row named (the code before took the digest in the count's
    pass, which read the table in its key order, and kept the partition)."""
    _create(
        mariadb_url,
        "id int NOT NULL, logged_at datetime NOT NULL, note text, PRIMARY KEY (id, logged_at), "
        "KEY events_by_time (logged_at)",
        ["id", "logged_at"],
        [((key,), datetime(2024, 1, 20 - key)) for key in range(1, 7)],
    )
    engine = create_engine(mariadb_url)
    with engine.connect() as connection:
        plan_text = " ".join(
            str(row)
            for row in connection.execute(
                text("EXPLAIN SELECT id, logged_at FROM events PARTITION (events_2024_01)")
            )
        )
    engine.dispose()
    assert "events_by_time" in plan_text, "the keys are read through the index"
    audit = tmp_path / "audit"
    rule = RULE + 'where_sql = "note IS NULL"\n'
    config = make_config(mariadb_url, rule, audit_directory=audit)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert not [line for line in logs if line["event"] == "partition.kept"]
    assert "events_2024_01" not in _partitions(mariadb_url)
    key = _key(audit)
    rows = {key_id: datetime(2024, 1, 20 - key_id) for key_id in range(1, 7)}
    assert set(_claimed(audit)) == {record_leaf(key, "db", "events", (i, rows[i])) for i in rows}
    _verified(audit)
