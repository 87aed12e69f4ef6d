"""MariaDB without an audit trail: a plain delete rule's batches delete spans of the key and
return no keys (stores/sql_spans.py), against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    event,
    insert,
    text,
)

from retention.stores.sql_spans import SpanWalk, next_span
from tests.support import create_tables, logs_rule, make_config, remaining_ids

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
OLD = datetime(2020, 1, 1)
NEW = datetime(2025, 12, 1)


def _logs(url: str, clocks: dict[int, datetime]) -> Engine:
    metadata = MetaData()
    logs = Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", DateTime(), index=True),
        Column("note", String(50)),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(insert(logs), [{"id": k, "logged_at": at} for k, at in clocks.items()])
    return engine


@contextmanager
def _deletes(engine: Engine) -> Iterator[list[tuple[str, int]]]:
    """The DELETE statements sent through ``engine`` and the rows each deleted."""
    sent: list[tuple[str, int]] = []

    def record(_connection: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.upper().startswith("DELETE"):
            sent.append((statement.upper(), cursor.rowcount))

    event.listen(engine, "after_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "after_cursor_execute", record)


def _run(url: str, batch_size: int, *, audit: Path | None = None, during: Any = None) -> Any:
    from retention.app import make_plan, run_plan
    from retention.stores import open_stores

    config = make_config(
        url,
        logs_rule(extra=f"batch_size = {batch_size}\nmax_delete = 100000"),
        audit_directory=audit,
    )
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        engine = store_for("db").engine  # type: ignore[attr-defined]
        if during is not None:
            event.listen(engine, "before_cursor_execute", during)
        with _deletes(engine) as sent:
            report = run_plan(config, the_plan, store_for, dry_run=False)
    return report.outcomes[0], sent


@pytest.mark.mariadb
def test_without_a_trail_each_batch_deletes_a_span_and_returns_no_keys(mariadb_url: str) -> None:
    """Two rows in three due, scattered through ids 1..600, in batches of 40: every due row
    goes and no other, each batch one DELETE of a span of ids (bounded on both sides but the
    last), no RETURNING, at most 40 rows each; the spans steer towards most of 40 rows."""
    clocks = {key: OLD if key % 3 else NEW for key in range(1, 601)}
    engine = _logs(mariadb_url, clocks)
    outcome, sent = _run(mariadb_url, 40)
    due = {key for key, at in clocks.items() if at == OLD}
    assert (outcome.status, outcome.deleted) == ("ok", len(due))
    assert remaining_ids(engine, "logs") == set(clocks) - due
    assert not any("RETURNING" in statement for statement, _rows in sent)
    assert all("ORDER BY" in statement and "LIMIT" in statement for statement, _rows in sent)
    assert all(0 <= rows <= 40 for _statement, rows in sent)
    assert sum(rows for _statement, rows in sent) == len(due)
    assert all(statement.count("LOGS.ID") == 3 for statement, _rows in sent[:-1])
    # 400 due rows at 36 (90 %) a batch, the first one at 20 (a span of 40 ids).
    assert len(sent) <= 14
    assert outcome.batches == len(sent)


@pytest.mark.mariadb
def test_with_the_trail_batches_return_their_keys(mariadb_url: str, tmp_path: Path) -> None:
    clocks = {key: OLD if key % 3 else NEW for key in range(1, 61)}
    _logs(mariadb_url, clocks)
    outcome, sent = _run(mariadb_url, 10, audit=tmp_path / "audit")
    assert outcome.deleted == 40
    assert all("RETURNING" in statement for statement, _rows in sent)


def test_a_span_denser_than_foreseen_keeps_to_the_limit_and_the_next_starts_within_it(
    mariadb_url: str,
) -> None:
    """One row in ten due for ids 1..200, then every row for 201..400: the span steered by the
    sparse part meets more due rows than the limit; it deletes the limit, and the next batch
    starts at the first due row left. Every due row goes, no batch over the limit, and the
    spans then fit the dense part (no batch deletes nothing)."""
    clocks = {key: OLD if key > 200 or key % 10 == 0 else NEW for key in range(1, 401)}
    engine = _logs(mariadb_url, clocks)
    outcome, sent = _run(mariadb_url, 20)
    due = {key for key, at in clocks.items() if at == OLD}
    assert outcome.deleted == len(due) == 220
    assert remaining_ids(engine, "logs") == set(clocks) - due
    deletes = [rows for _statement, rows in sent]
    assert all(rows <= 20 for rows in deletes)
    assert any(rows == 20 for rows in deletes)
    assert all(rows > 0 for rows in deletes[deletes.index(20) :])


@pytest.mark.mariadb
def test_gaps_in_the_key_are_crossed_by_wider_spans(mariadb_url: str) -> None:
    """Ids 1..30 and 10,000,001..10,000,030, every row due, batches of 10: the empty spans
    between grow fourfold each, so the gap takes a few statements, not a million."""
    clocks = {key: OLD for key in [*range(1, 31), *range(10_000_001, 10_000_031)]}
    engine = _logs(mariadb_url, clocks)
    outcome, sent = _run(mariadb_url, 10)
    assert outcome.deleted == 60
    assert remaining_ids(engine, "logs") == set()
    assert len(sent) <= 30


def _on_first_delete(engine: Engine, statement: str) -> tuple[Any, list[bool]]:
    """A before_cursor_execute listener that runs ``statement`` on another connection, once,
    just before the run's first DELETE; and the list it marks when it has."""
    done: list[bool] = []

    def listener(_connection: Any, _cursor: Any, sent: str, *_args: Any) -> None:
        if sent.upper().startswith("DELETE") and not done:
            done.append(True)
            with engine.begin() as other:
                other.execute(text(statement))

    return listener, done


@pytest.mark.mariadb
def test_rows_added_beyond_the_last_key_during_the_run_go_too(mariadb_url: str) -> None:
    """The last span is open-ended: a due row inserted with a key past the table's last one
    after the walk began goes in this run, as it did when each batch took the next due keys."""
    clocks = {key: OLD for key in range(1, 51)}
    engine = _logs(mariadb_url, clocks)
    add_once, added = _on_first_delete(
        engine, "INSERT INTO logs (id, logged_at) VALUES (900, '2019-01-01')"
    )
    outcome, _sent = _run(mariadb_url, 10, during=add_once)
    assert added
    assert outcome.deleted == 51
    assert remaining_ids(engine, "logs") == set()


@pytest.mark.mariadb
def test_a_row_that_stops_being_due_before_its_span_is_kept(mariadb_url: str) -> None:
    clocks = {key: OLD for key in range(1, 41)}
    engine = _logs(mariadb_url, clocks)
    change_once, changed = _on_first_delete(
        engine, "UPDATE logs SET logged_at = '2025-12-31' WHERE id = 35"
    )
    outcome, _sent = _run(mariadb_url, 10, during=change_once)
    assert changed
    assert outcome.deleted == 39
    assert remaining_ids(engine, "logs") == {35}


def test_the_next_span_fills_most_of_the_limit_and_grows_less_after_a_long_statement() -> None:
    half_due = SpanWalk(low=0, last_key=10**6, covered=10_000, deleted=5_000, seconds=0.03)
    assert next_span(half_due, 10_000) == 18_000
    assert next_span(half_due, 5_000) == 9_000
    # Few or no due rows: fourfold, unless the statement took long (a walk of kept rows).
    assert next_span(SpanWalk(0, 10**6, 100, 0, 0.001), 10_000) == 400
    assert next_span(SpanWalk(0, 10**6, 100, 1, 0.001), 10_000) == 400
    assert next_span(SpanWalk(0, 10**6, 100_000, 0, 0.075), 10_000) == 200_000
    assert next_span(SpanWalk(0, 10**6, 100_000, 0, 0.3), 10_000) == 50_000
    assert next_span(SpanWalk(0, 10**6, 0, 10_000, 0.01), 10_000) == 1


@pytest.mark.mariadb
def test_a_span_that_deletes_nothing_counts_towards_the_longest_transaction(
    mariadb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids 1..20 due, 21..200 kept, batches of 10: the walk ends on spans of kept rows that
    delete nothing but still lock what they read. Each transaction here appears to take a
    second longer than the one before, so the last one, which deleted nothing, is the longest;
    the run reports its time (it reported the last batch that deleted rows before)."""
    from types import SimpleNamespace

    clocks = {key: OLD if key <= 20 else NEW for key in range(1, 201)}
    engine = _logs(mariadb_url, clocks)
    ticks = iter(tick for step in range(100) for tick in (step * step, (step + 1) ** 2))
    durations: list[float] = []

    def monotonic() -> float:
        return float(next(ticks))

    monkeypatch.setattr("retention.stores.sql_purge.time", SimpleNamespace(monotonic=monotonic))
    from retention.stores import sql_purge

    purge = sql_purge.purge_batch

    def recorded(*args: Any, **kwargs: Any) -> Any:
        batch = purge(*args, **kwargs)
        durations.append(batch.transaction_seconds)
        return batch

    monkeypatch.setattr(sql_purge, "purge_batch", recorded)
    outcome, sent = _run(mariadb_url, 10)
    assert outcome.deleted == 20
    assert remaining_ids(engine, "logs") == set(range(21, 201))
    assert sent[-1][1] == 0
    assert durations == sorted(durations)
    assert outcome.longest_transaction_seconds == durations[-1]
