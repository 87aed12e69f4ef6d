"""The state database: the run ledger, leases between hosts, and legal holds (SQLAlchemy).

SQLite under the state directory by default; PostgreSQL when several daemons share the rules.
Tables are created on first use. Times are stored as aware UTC (naive UTC on SQLite/MariaDB).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from retention.errors import StoreUnavailable

metadata = MetaData()

runs = Table(
    "retention_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("rule", String(100), nullable=False, index=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(20), nullable=False),
    Column("due", Integer, nullable=False, default=0),
    Column("deleted", Integer, nullable=False, default=0),
    Column("anonymised", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("host", String(255)),
)

leases = Table(
    "retention_leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

holds = Table(
    "retention_holds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(100), nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # key | where | prefix
    Column("value", JSON, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("until", DateTime(timezone=True)),
    Column("released_at", DateTime(timezone=True)),
    Column("released_by", String(255)),
    Column("release_reason", Text),
)


@dataclass(frozen=True)
class RunRecord:
    """One rule's run, as the ledger keeps it."""

    run_id: str
    rule: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    due: int = 0
    deleted: int = 0
    anonymised: int = 0
    skipped: int = 0
    error: str | None = None
    host: str | None = None


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class StateDatabase:
    """The state database of one deployment."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        try:
            metadata.create_all(self.engine)
        except sa_exc.OperationalError as error:
            raise StoreUnavailable(f"the state database is unreachable: {error.orig}") from error

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    # --- run ledger ---------------------------------------------------------------------------

    def record_run_start(self, run_id: str, rule: str, started_at: datetime, host: str) -> int:
        with self.transaction() as connection:
            result = connection.execute(
                insert(runs).values(
                    run_id=run_id, rule=rule, started_at=started_at, status="running", host=host
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def record_run_end(self, row_id: int, finished_at: datetime, **counters: Any) -> None:
        with self.transaction() as connection:
            connection.execute(
                update(runs).where(runs.c.id == row_id).values(finished_at=finished_at, **counters)
            )

    def last_runs(self, rule: str, limit: int = 1) -> list[RunRecord]:
        """Given a rule, return its most recent runs, newest first."""
        query = select(runs).where(runs.c.rule == rule).order_by(runs.c.id.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [_run_record(row._mapping) for row in connection.execute(query)]

    def last_success(self, rule: str) -> datetime | None:
        query = (
            select(runs.c.finished_at)
            .where(runs.c.rule == rule, runs.c.status == "ok")
            .order_by(runs.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            return _aware(connection.execute(query).scalar_one_or_none())


def _run_record(row: Any) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        rule=row["rule"],
        started_at=_aware(row["started_at"]) or datetime.min.replace(tzinfo=UTC),
        finished_at=_aware(row["finished_at"]),
        status=row["status"],
        due=row["due"],
        deleted=row["deleted"],
        anonymised=row["anonymised"],
        skipped=row["skipped"],
        error=row["error"],
        host=row["host"],
    )
