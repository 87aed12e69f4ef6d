"""A subjects' rule purges only the rows ``only`` accepts (the subjects whose objects were
listed): the SQL store's side of that contract, on every database, for delete and anonymise,
run and dry run. The others stay untouched, and the batches still walk the whole key range."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, select

from retention.selection import KeyValues, make_selection
from retention.stores import open_stores
from tests.support import create_tables, make_config

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)
ROWS = range(1, 24)  # all due; batch_size 5
ODD = {key for key in ROWS if key % 2}

RULE = """
[[rules]]
name = "people"
store = "db"
table = "people"
key = "id"
clock = "left_at"
period = "1y"
batch_size = 5
"""
DELETE = 'action = "delete"\n'
ANONYMISE = (
    'action = "anonymise"\nmarker_column = "anonymised_at"\n[rules.anonymise]\nemail = "null"\n'
)


def _people(url: str) -> Table:
    metadata = MetaData()
    people = Table(
        "people",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("email", String(80)),
        Column("left_at", DateTime, index=True),
        Column("anonymised_at", DateTime),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(people),
            [
                {"id": key, "email": f"p{key}@example.com", "left_at": datetime(2020, 1, key)}
                for key in ROWS
            ],
        )
    engine.dispose()
    return people


def _odd(keys: Sequence[KeyValues]) -> set[KeyValues]:
    return {key for key in keys if int(str(key[0])) % 2}


@pytest.mark.parametrize("action", [DELETE, ANONYMISE], ids=["delete", "anonymise"])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_only_the_accepted_rows_are_purged_batch_after_batch(
    database_url: str, action: str, dry_run: bool
) -> None:
    people = _people(database_url)
    config = make_config(database_url, RULE + action)
    (rule,) = config.rules
    selection = make_selection(rule, AS_OF, ZoneInfo("UTC"))
    purged: list[KeyValues] = []
    batches = 0
    with open_stores(config, read_only=dry_run) as store_for:
        store = store_for("db")
        after: KeyValues | None = None
        while True:
            batch = store.purge_batch(
                selection,
                after=after,
                limit=rule.batch_size,
                dry_run=dry_run,
                now=AS_OF,
                hash_key=b"k" * 32,
                only=_odd,
            )
            batches += 1
            purged += batch.keys
            assert batch.done == (0 if dry_run else len(batch.keys))
            if not batch.more:
                break
            after = batch.next_after
        engine = store.engine  # type: ignore[attr-defined]
        with engine.connect() as connection:
            rows = {row.id: row for row in connection.execute(select(people))}
    assert sorted(key[0] for key in purged) == sorted(ODD)
    assert batches == 5  # 23 rows in batches of 5, even ones included in the walk
    if dry_run:
        assert set(rows) == set(ROWS)
        assert all(row.anonymised_at is None for row in rows.values())
    elif action == DELETE:
        assert set(rows) == set(ROWS) - ODD
    else:
        assert set(rows) == set(ROWS)
        assert {key for key, row in rows.items() if row.anonymised_at is not None} == ODD
        assert {key for key, row in rows.items() if row.email is None} == ODD
