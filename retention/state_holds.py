"""Legal holds in the state database: add, list, release. Fail closed: if the state database
cannot be read, nothing is planned (a missing hold could mean deleting what a court froze)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy import exc as sa_exc

from retention.config import parse_condition
from retention.errors import StoreUnavailable, UsageError, os_error_said, without_values
from retention.holds import Hold, HoldKind
from retention.state import StateDatabase, parsed_state_url
from retention.state_tables import holds, holds_unrecorded

# The largest id a hold can have (a 64-bit integer, SQLite's widest).
LAST_HOLD_ID = 2**63 - 1


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _hold(row: Any, recorded: bool = True, placed_while: str | None = None) -> Hold:
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
        recorded=recorded,
        placed_while=None if recorded else placed_while,
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
    unrecorded: tuple[dict[str, str], str] | None = None,
) -> Hold:
    """Given a hold's rule, target, reason and author, store it and return it; ``before_commit``
    sees the hold before it is committed, and an exception from it leaves no hold. With
    ``unrecorded`` (who placed it: tool, host, user; and what held the trail), the hold is
    stored in force but not yet recorded, in the same transaction (``record_unrecorded``)."""
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
        if unrecorded is not None:
            placed_by, writer = unrecorded
            connection.execute(
                insert(holds_unrecorded).values(hold_id=hold_id, placed_by=placed_by, writer=writer)
            )
        row = connection.execute(select(holds).where(holds.c.id == hold_id)).one()
        added = _hold(
            row._mapping,
            recorded=unrecorded is None,
            placed_while=unrecorded[1] if unrecorded is not None else None,
        )
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
    if not 1 <= hold_id <= LAST_HOLD_ID:
        # Ids count from 1; SQLite cannot bind an id past 64 bits (OverflowError).
        raise UsageError(f"no hold {hold_id}")
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
    """Given the state database, return every hold, each saying whether it is recorded in the
    audit trail yet (a database made before the table of unrecorded holds: all are)."""
    if not state.has(holds):
        return []
    if not state.has(holds_unrecorded):
        with state.engine.connect() as connection:
            query = select(holds).order_by(holds.c.id)
            return [_hold(row._mapping) for row in connection.execute(query)]
    query = (
        select(
            holds,
            holds_unrecorded.c.hold_id.label("unrecorded_id"),
            holds_unrecorded.c.writer.label("placed_while"),
        )
        .outerjoin(holds_unrecorded, holds_unrecorded.c.hold_id == holds.c.id)
        .order_by(holds.c.id)
    )
    with state.engine.connect() as connection:
        return [
            _hold(row._mapping, row.unrecorded_id is None, row.placed_while)
            for row in connection.execute(query)
        ]


@dataclass(frozen=True)
class Unrecorded:
    """A hold in force whose hold.added entry is not in the audit trail yet: what it names (its
    stored value, for the entry's digest), who placed it (tool, host, user) and the seq its
    entry was being appended at, if a writer got that far."""

    hold: Hold
    value: dict[str, Any]
    placed_by: dict[str, str]
    recording_seq: int | None


def unrecorded_holds(state: StateDatabase) -> list[Unrecorded]:
    """Given the state database, return the holds not yet recorded in the audit trail, oldest
    first."""
    if not state.has(holds_unrecorded):
        return []
    query = (
        select(holds, holds_unrecorded.c.placed_by, holds_unrecorded.c.recording_seq)
        .join(holds_unrecorded, holds_unrecorded.c.hold_id == holds.c.id)
        .order_by(holds.c.id)
    )
    with _state_errors("read the holds not yet recorded"), state.engine.connect() as connection:
        rows = [row._mapping for row in connection.execute(query)]
    return [
        Unrecorded(
            _hold(row, recorded=False),
            dict(row["value"]),
            dict(row["placed_by"]),
            row["recording_seq"],
        )
        for row in rows
    ]


@contextmanager
def _state_errors(doing: str) -> Iterator[None]:
    """A state database that cannot be read or written here is StoreUnavailable (exit 69)."""
    try:
        yield
    except sa_exc.DBAPIError as error:
        reason = without_values(str(error.orig))
        raise StoreUnavailable(f"cannot {doing}: {reason}") from error


def mark_recording(state: StateDatabase, hold_id: int, seq: int) -> None:
    """Given an unrecorded hold and the seq its entry is about to be appended at, note it."""
    with _state_errors("note a hold being recorded"), state.transaction() as connection:
        connection.execute(
            update(holds_unrecorded)
            .where(holds_unrecorded.c.hold_id == hold_id)
            .values(recording_seq=seq)
        )


def mark_recorded(state: StateDatabase, hold_id: int) -> None:
    """Given a hold whose hold.added entry is in the trail, durably, mark it recorded."""
    with _state_errors("mark a hold recorded"), state.transaction() as connection:
        connection.execute(delete(holds_unrecorded).where(holds_unrecorded.c.hold_id == hold_id))


def state_exists(url: str) -> bool:
    """A SQLite state database that was never created holds no holds; any other may. One in a
    folder this user may not enter (the service's, 0700) may hold some: StoreUnavailable, never
    read as none."""
    parsed = parsed_state_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    try:
        return Path(parsed.database or "").exists()
    except OSError as error:
        raise StoreUnavailable(f"cannot read legal holds: {os_error_said(error)}") from error


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
