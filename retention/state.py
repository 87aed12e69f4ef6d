"""The state database: the run ledger, leases between hosts, and legal holds (SQLAlchemy).

SQLite beside the config by default (var/state.sqlite); PostgreSQL when several daemons share
the rules.
Tables (state_tables.py) are created on first use. Times are stored as aware UTC (naive UTC on
SQLite/MariaDB).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Table,
    create_engine,
    delete,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection

from retention.errors import (
    ConfigError,
    ConfigIssue,
    StoreUnavailable,
    message_without_values,
    os_error_said,
)
from retention.runtime.database_urls import UnusableUrl, engine_of, parsed_url, postgres_options
from retention.runtime.holders import gone_from_this_machine
from retention.runtime.holders import lease_holder_name as lease_holder_name
from retention.runtime.ownership import hand_over
from retention.state_tables import daemons, leases, metadata, runs


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


@dataclass(frozen=True)
class DaemonBeat:
    """A daemon's last heartbeat: who and where it is, since when it runs, when it last beat,
    how often it beats, when it runs each rule next, and whether it counts as alive (it beat
    within the last ``STALE_BEATS`` intervals, and its process is not known to be gone from
    this host)."""

    holder: str
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    beat_seconds: int
    next_runs: dict[str, datetime]
    alive: bool


# A daemon that missed this many beats in a row is taken for dead (killed, frozen, cut off).
STALE_BEATS = 3


@contextmanager
def _written(what: str) -> Iterator[None]:
    """A write to the state database that fails (disk full, connection dropped, read-only file)
    is an expected failure, StoreUnavailable (exit 69), not a traceback."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        reason = message_without_values(error.orig or error)
        raise StoreUnavailable(
            f"the state database cannot be written ({what}): {reason}"
        ) from error


@contextmanager
def _read(what: str) -> Iterator[None]:
    """A read of the state database that fails (its server down, the connection dropped, a
    SQLite file or folder this user may not open: the service's, 0700) is an expected failure,
    StoreUnavailable (exit 69), not a traceback."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        reason = message_without_values(error.orig or error)
        raise StoreUnavailable(f"the state database cannot be read ({what}): {reason}") from error
    except OSError as error:
        # Path.exists() of the SQLite file, in a folder this user may not enter. Its path is
        # the config's, no record's: named, so that the operator sees whose folder it is.
        raise StoreUnavailable(
            f"the state database cannot be read ({what}): {os_error_said(error)}"
        ) from error


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parsed_state_url(url: str) -> URL:
    """Given the state database's URL, return it parsed; ConfigError at ``state`` (the table:
    the URL may come from url, url_env or url_credential) when no engine can be made on it."""
    try:
        return parsed_url(url)
    except UnusableUrl as error:
        raise _refused(error) from None


def state_url_issue(url: str) -> ConfigIssue | None:
    """Given the state database's URL, return why no engine can be made on it, as every
    command that opens it refuses it (None: one can); nothing is connected to. Example: for
    ``postgresql+psycopg://retention@db:54x2/state``, the issue ``state: cannot use this
    database URL: its port is not a number``."""
    try:
        parsed_url(url)
        engine_of(create_engine, url).dispose()
    except UnusableUrl as error:
        return _issue(error)
    return None


def _issue(error: UnusableUrl) -> ConfigIssue:
    return ConfigIssue("state", f"cannot use this database URL: {error}")


def _refused(error: UnusableUrl) -> ConfigError:
    return ConfigError([_issue(error)])


# A shared PostgreSQL state database: how long a connection may take, and a statement wait
# for a row another session holds locked (an admin's open transaction on the leases). Past it
# the statement fails as the database being unavailable, rather than stalling a purge, its
# lease renewals and a stop without end.
STATE_CONNECT_TIMEOUT_SECONDS = 10
STATE_LOCK_TIMEOUT_SECONDS = 5


class StateDatabase:
    """The state database of one deployment."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        """Given its URL, open it and make its missing tables; ``read_only`` (a plan, a dry
        run), write nothing: a table not made yet reads as empty."""
        parsed = parsed_state_url(url)
        sqlite = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, ":memory:")
        self._file = Path(parsed.database or "") if sqlite else None
        self.read_only = read_only
        self._present = frozenset() if read_only else frozenset(metadata.tables)
        with _read("opening its file"):
            new_file = self._file is not None and not read_only and not self._file.exists()
            if self._file is not None and not read_only:
                # Created where it is first written, so that read-only commands leave no trace.
                self._file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            connect_args = {
                "connect_timeout": STATE_CONNECT_TIMEOUT_SECONDS,
                "options": postgres_options(
                    parsed, f"-c lock_timeout={STATE_LOCK_TIMEOUT_SECONDS}s"
                ),
            }
        try:
            self.engine: Engine = engine_of(
                create_engine,
                url,
                pool_pre_ping=True,
                hide_parameters=True,
                connect_args=connect_args,
            )
        except UnusableUrl as error:
            raise _refused(error) from None
        if read_only:
            return
        try:
            with self.engine.begin() as connection:
                if self.engine.dialect.name == "postgresql":
                    # Daemons starting together on a new database would race to create the
                    # tables (a unique violation in pg_type): one at a time.
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": 7231})
                metadata.create_all(connection)
        except sa_exc.OperationalError as error:
            raise StoreUnavailable(
                f"the state database is unreachable: {message_without_values(error.orig or error)}"
            ) from error
        if new_file and self._file is not None and os.geteuid() == 0:
            # Made by an admin's command run as root: the service must still write it. Opened
            # without following a symlink put in its place (ELOOP: not handed over).
            with suppress(OSError):
                descriptor = os.open(self._file, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    hand_over(self._file, descriptor)
                finally:
                    os.close(descriptor)

    def has(self, table: Table) -> bool:
        """Given one of its tables, return whether it is there to read: opened read-only, only
        once something else made it (looked up again until then: a run may make it meanwhile)."""
        if table.name not in self._present and (self._file is None or self._file.exists()):
            self._present = frozenset(inspect(self.engine).get_table_names())
        return table.name in self._present

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        assert not self.read_only, "opened read-only: a plan or a dry run writes nothing"
        with self.engine.begin() as connection:
            yield connection

    def _stored(self, moment: datetime) -> datetime:
        """A time as this database keeps it: aware UTC on PostgreSQL, naive UTC elsewhere."""
        moment = moment.astimezone(UTC)
        return moment if self.engine.dialect.name == "postgresql" else moment.replace(tzinfo=None)

    # --- leases: one holder per name at a time, across hosts -------------------------------------

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        """Given a lease name, who asks, now and a time to live: take the lease when nobody has it
        or its holder let it expire, or its holder is a process of this machine that is gone (a
        crashed run, restarted at once, need not wait for the expiry); return whether ``holder``
        has it now. Atomic on every database: the conditional UPDATEs and the INSERT on the
        primary key cannot both win."""
        with _written(f"taking the lease {name}"):
            return self._acquire_lease(name, holder, now, ttl)

    def _acquire_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        expires_at = self._stored(now + ttl)
        current = select(leases.c.holder).where(leases.c.name == name)
        with self.engine.connect() as connection:
            previous = connection.execute(current).scalar_one_or_none()
        free = leases.c.expires_at <= self._stored(now)
        if previous is not None and gone_from_this_machine(previous):
            free = free | (leases.c.holder == previous)
        with self.transaction() as connection:
            taken = connection.execute(
                update(leases)
                .where(leases.c.name == name, free)
                .values(holder=holder, expires_at=expires_at)
            ).rowcount
        if taken == 1:
            return True
        try:
            with self.transaction() as connection:
                connection.execute(
                    insert(leases).values(name=name, holder=holder, expires_at=expires_at)
                )
        except sa_exc.IntegrityError:
            return False
        return True

    def renew_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        """Given a lease this holder took, push its expiry to ``now + ttl``; return False when
        someone else has taken it since."""
        with self.transaction() as connection:
            renewed = connection.execute(
                update(leases)
                .where(leases.c.name == name, leases.c.holder == holder)
                .values(expires_at=self._stored(now + ttl))
            ).rowcount
        return bool(renewed == 1)

    def release_lease(self, name: str, holder: str) -> None:
        """Given a lease this holder took, give it up (a lease someone else has is left alone)."""
        with self.transaction() as connection:
            connection.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )

    def lease_holders(self, now: datetime) -> dict[str, tuple[str, datetime]]:
        """Given now, return each lease still in force: its holder and expiry."""
        return {
            name: (holder, expires_at)
            for name, (holder, expires_at) in self.recorded_leases().items()
            if expires_at > now
        }

    def recorded_leases(self) -> dict[str, tuple[str, datetime]]:
        """Return every lease row, expired or not (a holder that died keeps its row until the
        next holder takes it): its holder and expiry; StoreUnavailable when it cannot be read."""
        with _read("the leases"):
            if not self.has(leases):
                return {}
            with self.engine.connect() as connection:
                return {
                    row.name: (
                        row.holder,
                        _aware(row.expires_at) or datetime.min.replace(tzinfo=UTC),
                    )
                    for row in connection.execute(select(leases))
                }

    # --- daemon heartbeats ------------------------------------------------------------------

    def beat_daemon(
        self,
        holder: str,
        *,
        host: str,
        pid: int,
        started_at: datetime,
        now: datetime,
        every: timedelta,
        next_runs: dict[str, datetime],
    ) -> None:
        """Given a running daemon (its lease holder name, host and process id), record that it
        is alive now, beating ``every`` so often, with when it runs each rule next; raise
        StoreUnavailable when the state database cannot be written."""
        values = {
            "beat_at": self._stored(now),
            "beat_seconds": max(1, round(every.total_seconds())),
            "next_runs": {
                rule: moment.astimezone(UTC).isoformat() for rule, moment in next_runs.items()
            },
        }
        try:
            with self.transaction() as connection:
                updated = connection.execute(
                    update(daemons).where(daemons.c.holder == holder).values(**values)
                ).rowcount
                if updated == 0:
                    connection.execute(
                        insert(daemons).values(
                            holder=holder,
                            host=host,
                            pid=pid,
                            started_at=self._stored(started_at),
                            **values,
                        )
                    )
        except sa_exc.SQLAlchemyError as error:
            raise StoreUnavailable(
                f"the state database is unreachable: {getattr(error, 'orig', None) or error}"
            ) from error

    def forget_daemon(self, holder: str) -> None:
        """Given a daemon stopping cleanly, remove its heartbeat (when the state database
        cannot be written, the heartbeat goes stale instead)."""
        with suppress(sa_exc.SQLAlchemyError), self.transaction() as connection:
            connection.execute(delete(daemons).where(daemons.c.holder == holder))

    def daemon_beats(self, now: datetime) -> list[DaemonBeat]:
        """Given now, return every daemon heartbeat recorded, the latest first, each alive when
        it beat within its last ``STALE_BEATS`` intervals and its process is not known to be
        gone: one of this host whose pid no longer exists (killed, crashed) is not alive at once,
        as a lease of its holder is taken over at once. StoreUnavailable when it cannot be read."""
        query = select(daemons).order_by(daemons.c.beat_at.desc())
        with _read("the daemons' heartbeats"):
            if not self.has(daemons):
                return []
            with self.engine.connect() as connection:
                rows = [row._mapping for row in connection.execute(query)]
        beats = []
        for row in rows:
            beat_at = _aware(row["beat_at"]) or now
            every = timedelta(seconds=row["beat_seconds"])
            beats.append(
                DaemonBeat(
                    holder=row["holder"],
                    host=row["host"],
                    pid=row["pid"],
                    started_at=_aware(row["started_at"]) or beat_at,
                    beat_at=beat_at,
                    beat_seconds=row["beat_seconds"],
                    next_runs={
                        rule: datetime.fromisoformat(moment)
                        for rule, moment in (row["next_runs"] or {}).items()
                    },
                    alive=now - beat_at <= STALE_BEATS * every
                    and not gone_from_this_machine(row["holder"]),
                )
            )
        return beats

    # --- run ledger ---------------------------------------------------------------------------

    def mark_interrupted(self, rule: str) -> int:
        """Given a rule whose lease was just taken, mark its runs still 'running' (their process
        died: nobody else can be running it now) as 'interrupted'; return how many."""
        with _written("the run ledger"), self.transaction() as connection:
            return int(
                connection.execute(
                    update(runs)
                    .where(runs.c.rule == rule, runs.c.status == "running")
                    .values(status="interrupted")
                ).rowcount
            )

    def record_run_start(self, run_id: str, rule: str, started_at: datetime, host: str) -> int:
        with _written("the run ledger"), self.transaction() as connection:
            result = connection.execute(
                insert(runs).values(
                    run_id=run_id,
                    rule=rule,
                    started_at=self._stored(started_at),
                    status="running",
                    host=host,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def record_run_end(self, row_id: int, finished_at: datetime, **counters: Any) -> None:
        with _written("the run ledger"), self.transaction() as connection:
            connection.execute(
                update(runs)
                .where(runs.c.id == row_id)
                .values(finished_at=self._stored(finished_at), **counters)
            )

    def last_runs(self, rule: str, limit: int = 1) -> list[RunRecord]:
        """Given a rule, return its most recent runs, newest first; StoreUnavailable when the
        run ledger cannot be read."""
        query = select(runs).where(runs.c.rule == rule).order_by(runs.c.id.desc()).limit(limit)
        with _read("the run ledger"):
            if not self.has(runs):
                return []
            with self.engine.connect() as connection:
                return [_run_record(row._mapping) for row in connection.execute(query)]

    def last_success(self, rule: str) -> datetime | None:
        """Given a rule, return when its last successful run finished (None: never);
        StoreUnavailable when the run ledger cannot be read."""
        query = (
            select(runs.c.finished_at)
            .where(runs.c.rule == rule, runs.c.status == "ok")
            .order_by(runs.c.id.desc())
            .limit(1)
        )
        with _read("the run ledger"):
            if not self.has(runs):
                return None
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
