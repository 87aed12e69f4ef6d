"""PostgreSQL's plain delete batches, pipelined: a batch's keys are read by a read-only probe
before its transaction, its DELETE runs while its intent is written, and the next batch's probe
runs meanwhile on another connection.

The intent still becomes durable before the COMMIT, and nothing is committed if it cannot be
written (the DELETE waits, uncommitted, then rolls back): only the database's work and the
trail's overlap. One transaction writes at a time; the probes read in read-only transactions.

Recorded, a batch's intent names its transaction (its 64-bit id, taken before the intent is
written), and the probed keys its DELETE did not return are recorded before the COMMIT (when
there are any): after a crash, whether that transaction committed says exactly which rows this
batch deleted, whatever another session did to them since (``transaction_status``).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, wait
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, text
from sqlalchemy import exc as sa_exc

from retention.errors import BatchConflict, StoreUnavailable
from retention.runtime.faults import crash_point
from retention.selection import KeyValues, Selection
from retention.store_protocol import NO_DETAIL, Batch, BeforeCommit, BeforeWrite, IntentDetail
from retention.stores.sql_keys import result_keys
from retention.stores.sql_predicate import batch_query, range_delete

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore


@dataclass(frozen=True)
class Probe:
    """The keys of the batch after ``after`` (up to ``limit``), being read."""

    selection: Selection
    after: KeyValues | None
    limit: int
    keys: Future[tuple[KeyValues, ...]]

    def serves(self, selection: Selection, after: KeyValues | None, limit: int) -> bool:
        """Whether these are the keys a probe for this batch would read now: the same rule,
        holds and start, and at least as many keys asked for (the first ``limit`` of them are
        what a smaller probe reads)."""
        return (self.after, self.selection) == (after, selection) and self.limit >= limit


def delete_probed(
    store: SqlStore,
    selection: Selection,
    after: KeyValues | None,
    limit: int,
    before_write: BeforeWrite | None,
    before_commit: BeforeCommit | None = None,
) -> Batch:
    """Delete the next batch of a plain delete rule: its keys are the next ``limit`` due keys
    after ``after`` in key order, read before its transaction (by the previous batch's probe
    when that read this one's, else now); then the DELETE of every row in their range still
    due, RETURNING the keys, runs on the write connection while ``before_write`` (the audit
    intent) records the probed keys; then the COMMIT, once both have ended.

    A probed row that stopped being due, or went, stays out of the DELETE: it is in the batch's
    ``not_done_keys``, which the trail does not claim. With ``before_commit`` too, the intent's
    detail names the transaction, and ``before_commit`` gets those keys before the COMMIT (if
    there are any). A row that became due in the range since
    the probe would go without its intent naming it: BatchConflict (the batch rolls back and is
    read again). The next batch starts after the last probed key; a probe of fewer than
    ``limit`` keys was the last.
    """
    keys = _probed_keys(store, selection, after, limit)
    if not keys:
        return Batch((), 0, more=False)
    more = len(keys) >= limit
    key_columns = store.key_columns(selection.rule)
    statement = range_delete(store, selection, after, keys[-1])
    started = time.monotonic()
    with store.reachable(), store.held_writer.use() as connection, connection.begin():
        # The transaction's id is read beside, first thing on its connection: the intent
        # waits for it only once its keys are hashed.
        transaction: Future[int] | None = None
        detail = NO_DETAIL
        if before_write is not None and before_commit is not None:
            transaction = Future()
            detail = IntentDetail(transaction=transaction)
        deleting = store.beside().submit(
            _deleted_keys, store, connection, statement, key_columns, transaction
        )
        if more:
            store.keep_probe(_start_probe(store, selection, keys[-1], limit))
        try:
            if before_write is not None:
                before_write(keys, detail)
        except BaseException:
            # The statement ends before the transaction rolls back on this connection.
            wait([deleting])
            if transaction is not None and transaction.exception() is not None:
                # The database failed, not the trail: the intent could not name its
                # transaction.
                failure = deleting.exception() or transaction.exception()
                assert failure is not None
                raise failure from None
            raise
        deleted = deleting.result()
        not_done = _not_deleted(keys, deleted)
        if not_done and transaction is not None and before_commit is not None:
            before_commit(not_done)
        crash_point("mid_batch")
    seconds = time.monotonic() - started
    crash_point("after_commit")
    return Batch(
        keys,
        done=len(keys) - len(not_done),
        not_done_keys=not_done,
        more=more,
        transaction_seconds=seconds,
    )


def _probed_keys(
    store: SqlStore, selection: Selection, after: KeyValues | None, limit: int
) -> tuple[KeyValues, ...]:
    """The keys of the batch after ``after``: the probe read ahead for it, if it serves, else
    read now."""
    probe = store.take_probe()
    if probe is not None and probe.serves(selection, after, limit):
        with store.reachable():
            return probe.keys.result()[:limit]
    if probe is not None:
        wait([probe.keys])
    with store.reachable():
        return _read_keys(store, selection, after, limit)


def _start_probe(store: SqlStore, selection: Selection, after: KeyValues, limit: int) -> Probe:
    # The query is built here, in the calling thread: the table's schema is read already.
    query = batch_query(store, selection, after, limit)
    keys = store.beside().submit(_read_query, store, query)
    return Probe(selection, after, limit, keys)


def _read_keys(
    store: SqlStore, selection: Selection, after: KeyValues | None, limit: int
) -> tuple[KeyValues, ...]:
    return _read_query(store, batch_query(store, selection, after, limit))


def _read_query(store: SqlStore, query: Any) -> tuple[KeyValues, ...]:
    """The keys a probe reads, in a read-only transaction of its own (rolled back)."""
    with store.held_reader.use() as connection:
        try:
            result = connection.execute(query)
            return tuple(result_keys(result, store.plain_integer_keys(query.selected_columns)))
        finally:
            connection.rollback()


def _deleted_keys(
    store: SqlStore,
    connection: Connection,
    statement: Any,
    key_columns: list[Column[Any]],
    transaction: Future[int] | None,
) -> list[KeyValues]:
    if transaction is not None:
        try:
            transaction.set_result(current_transaction(connection))
        except BaseException as error:
            transaction.set_exception(error)
            raise
    return result_keys(connection.execute(statement), store.plain_integer_keys(key_columns))


def _not_deleted(keys: tuple[KeyValues, ...], deleted: list[KeyValues]) -> tuple[KeyValues, ...]:
    """Given the probed keys and those the DELETE returned, return the probed keys it did not
    delete; BatchConflict if it deleted a row that was not probed."""
    if len(deleted) == len(keys):
        # RETURNING comes in the key's order, most often: then one pass tells that the two are
        # the same keys. (Python may order text keys otherwise than the database: then sets.)
        with suppress(TypeError):
            deleted.sort()
        if deleted == list(keys):
            return ()
    probed = set(keys)
    unnamed = sum(key not in probed for key in deleted)
    if unnamed:
        raise BatchConflict(f"{unnamed} rows became due in the batch's range since it was read")
    gone = set(deleted)
    return tuple(key for key in keys if key not in gone)


# How long a reconcile waits for the transaction of a batch a crash interrupted to end (its
# process died; the server rolls it back once it notices): then the batch waits for a later run.
IN_PROGRESS_WAIT_SECONDS = 10.0


def current_transaction(connection: Connection) -> int:
    """The id of the connection's transaction, assigned now if it had none: 64 bits, its epoch
    included, so that it never names another transaction later."""
    function = "pg_current_xact_id()::text" if _xact_functions(connection) else "txid_current()"
    return int(connection.execute(text(f"SELECT {function}")).scalar_one())


def transaction_status(store: SqlStore, connection: Connection, transaction: int) -> str | None:
    """Given a transaction id that ``current_transaction`` gave, return "committed" or
    "aborted" once that transaction has ended (waiting up to IN_PROGRESS_WAIT_SECONDS), or None
    when the database no longer knows (older than its oldest kept commit status); a server
    that crashed meanwhile reports its transactions then in progress as aborted.
    StoreUnavailable while it is still in progress."""
    if _xact_functions(connection):
        query = text("SELECT pg_xact_status(CAST(:transaction AS xid8))")
        parameters: dict[str, Any] = {"transaction": str(transaction)}
    else:
        query = text("SELECT txid_status(:transaction)")
        parameters = {"transaction": transaction}
    deadline = time.monotonic() + IN_PROGRESS_WAIT_SECONDS
    while True:
        try:
            status = connection.execute(query, parameters).scalar_one()
        except sa_exc.DBAPIError as error:
            connection.rollback()
            if "is in the future" in str(error.orig):
                # A number this server never gave: its history was restored (or failed over)
                # from before that transaction. It does not know.
                return None
            raise
        connection.rollback()
        if status != "in progress":
            return None if status is None else str(status)
        if time.monotonic() > deadline:
            raise StoreUnavailable(
                f"store {store.name!r}: the transaction of a batch a crash interrupted is still "
                "in progress"
            )
        time.sleep(0.05)


def _xact_functions(connection: Connection) -> bool:
    """Whether the server has pg_current_xact_id and pg_xact_status (PostgreSQL 13 and later);
    before, txid_current and txid_status (the same 64-bit ids)."""
    version = connection.dialect.server_version_info
    return version is None or version >= (13,)
