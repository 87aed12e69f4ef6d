"""Legal holds in the state database: add, list, release. Fail closed: if the state database
cannot be read, nothing is planned (a missing hold could mean deleting what a court froze)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, update
from sqlalchemy.engine import make_url

from retention.config import parse_condition
from retention.errors import StoreUnavailable, UsageError, without_values
from retention.holds import Hold, HoldKind
from retention.state import StateDatabase, holds


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _hold(row: Any) -> Hold:
    value = row["value"]
    return Hold(
        id=row["id"],
        rule=row["rule"],
        kind=row["kind"],
        reason=row["reason"],
        created_at=_aware(row["created_at"]) or datetime.min.replace(tzinfo=UTC),
        created_by=row["created_by"],
        keys=tuple(tuple(key) for key in value.get("keys", [])),
        condition=parse_condition(value["where"]) if "where" in value else None,
        prefix=value.get("prefix"),
        until=_aware(row["until"]),
        released_at=_aware(row["released_at"]),
    )


def add_hold(
    state: StateDatabase,
    *,
    rule: str,
    kind: HoldKind,
    value: dict[str, Any],
    reason: str,
    now: datetime,
    by: str,
    until: datetime | None,
    before_commit: Callable[[Hold], None] = lambda hold: None,
) -> Hold:
    """Given a hold's rule, target, reason and author, store it and return it; ``before_commit``
    sees the hold before it is committed, and an exception from it leaves no hold."""
    with state.transaction() as connection:
        result = connection.execute(
            insert(holds).values(
                rule=rule,
                kind=kind,
                value=value,
                reason=reason,
                created_at=now,
                created_by=by,
                until=until,
            )
        )
        hold_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        row = connection.execute(select(holds).where(holds.c.id == hold_id)).one()
        added = _hold(row._mapping)
        before_commit(added)
    return added


def release_hold(
    state: StateDatabase,
    hold_id: int,
    *,
    reason: str,
    now: datetime,
    by: str,
    before_commit: Callable[[Hold], None] = lambda hold: None,
) -> Hold:
    """Given a hold id, release it (its records become due on the next run); return it.
    ``before_commit`` sees the released hold before the release is committed, and an exception
    from it leaves the hold in force."""
    with state.transaction() as connection:
        row = connection.execute(select(holds).where(holds.c.id == hold_id)).one_or_none()
        if row is None:
            raise UsageError(f"no hold {hold_id}")
        if row.released_at is not None:
            raise UsageError(f"hold {hold_id} was already released on {row.released_at}")
        connection.execute(
            update(holds)
            .where(holds.c.id == hold_id)
            .values(released_at=now, released_by=by, release_reason=reason)
        )
        released = _hold(
            connection.execute(select(holds).where(holds.c.id == hold_id)).one()._mapping
        )
        before_commit(released)
    return released


def list_holds(state: StateDatabase) -> list[Hold]:
    if not state.has(holds):
        return []
    with state.engine.connect() as connection:
        return [
            _hold(row._mapping) for row in connection.execute(select(holds).order_by(holds.c.id))
        ]


def state_exists(url: str) -> bool:
    """A SQLite state database that was never created holds no holds; any other may."""
    parsed = make_url(url)
    return parsed.get_backend_name() != "sqlite" or Path(parsed.database or "").exists()


def read_holds(state: StateDatabase) -> list[Hold]:
    """Given an open state database, return every hold; StoreUnavailable if it cannot be read."""
    try:
        return list_holds(state)
    except sa_exc.DBAPIError as error:
        reason = without_values(str(error.orig))
        raise StoreUnavailable(f"cannot read legal holds: {reason}") from error


def load_holds(url: str) -> list[Hold]:
    """Given the state database URL, return every hold. A state database that was never created
    (no SQLite file yet) has none; one that cannot be read raises StoreUnavailable."""
    if not state_exists(url):
        return []
    state = StateDatabase(url, read_only=True)
    try:
        return read_holds(state)
    finally:
        state.close()
