"""MariaDB batches that nobody needs the keys of (no audit trail): a plain delete rule over one
integer key deletes the due rows of the next span of keys, ``DELETE … WHERE key > a AND key <= b
AND <due> ORDER BY key LIMIT n``, and reads back only the row count.

Without the trail, a batch's keys serve only to say where the next batch starts. Returning
them (``DELETE … RETURNING``) costs the server a packet per row and PyMySQL the parsing of it
in Python (together about a quarter of a batch's time on the bench's table, issue 17); finding
the ``n``-th due key first costs a second walk of the key's index. A span whose end is chosen
beforehand costs neither: each batch walks its span once and the next starts at its end.

The span's width is steered from batch to batch: towards ``FILL`` of the batch's limit in due
rows, at the density of due keys the last span met, and growing at most ``GROWTH``-fold, less
when the last statement took long (a span of kept rows still costs a walk, and locks them).
When a span holds more due rows than the limit, the LIMIT keeps the batch to it, and a read of
the first due key left in the span says where the next batch starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, and_, delete, func, select

from retention.selection import KeyValues, Selection
from retention.store_protocol import Batch
from retention.stores.sql_dialect import ordered_limit
from retention.stores.sql_predicate import predicate

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

# A span is steered to meet this fraction of the batch's limit in due rows: one that meets
# more deletes only the limit, and the next batch starts within it.
FILL = 0.9
# How much wider than the keys the last batch covered a span may grow (after a span with few
# or no due rows), and the statement time that growth is scaled towards: the executor's own
# target for a batch's transaction (recorded_batch.TRANSACTION_TARGET_SECONDS).
GROWTH = 4.0
STATEMENT_TARGET_SECONDS = 0.15


@dataclass(frozen=True)
class SpanWalk:
    """Where a rule's walk by spans stands: every due key up to ``low`` has been handled; the
    table's last key when the walk started; how many keys the last batch covered, how many
    rows it deleted, and how long its DELETE took."""

    low: int
    last_key: int
    covered: int
    deleted: int
    seconds: float


def spans_apply(store: SqlStore, key_columns: list[Column[Any]]) -> bool:
    """Whether a rule's batches can go by spans of its key: one integer key column that
    SQLAlchemy returns as the driver reads it (so that ``key + width`` is a key)."""
    return len(key_columns) == 1 and store.plain_integer_keys(key_columns)


def next_span(walk: SpanWalk, limit: int) -> int:
    """Given where a walk stands and the next batch's limit, return the next span's width:
    the keys that should hold ``FILL`` of the limit in due rows at the density the last batch
    met, at most ``GROWTH`` times the keys it covered, and less growth the nearer its DELETE
    came to ``STATEMENT_TARGET_SECONDS`` (less than the keys it covered beyond it). Example: a
    batch that covered 10,000 keys and deleted 5,000 rows in 30 ms, next limit 10,000:
    ``18,000``."""
    growth = GROWTH
    if walk.seconds > 0:
        growth = min(GROWTH, STATEMENT_TARGET_SECONDS / walk.seconds)
    wanted = walk.covered * growth
    if walk.deleted:
        wanted = min(wanted, walk.covered * FILL * limit / walk.deleted)
    return max(1, int(wanted))


def delete_span(
    store: SqlStore,
    connection: Connection,
    selection: Selection,
    after: KeyValues | None,
    limit: int,
) -> Batch:
    """Delete the due rows of the next span of keys, at most ``limit`` of them, the due
    condition checked inside the DELETE; return a Batch without keys (``done`` the rows
    deleted, ``resume_after`` where the next batch starts).

    The first batch of a walk (``after`` None, or not where this store's walk of the rule
    stands) reads the table's first and last keys and spans ``limit`` keys. A span that
    reaches past the last key read is open-ended (rows added since go too), and the last one
    unless it reached its limit.
    """
    rule = selection.rule
    key = store.key_columns(rule)[0]
    table = store.table(rule.table)
    walk = store.span_walks.pop(rule.name, None)
    if after is None or walk is None or (walk.low,) != tuple(after):
        first, last = connection.execute(select(func.min(key), func.max(key))).one()
        if first is None:
            return Batch((), 0, more=False)
        low = int(first) - 1
        if after is not None and isinstance(after[0], int):
            low = max(low, after[0])
        last_key, span = int(last), limit
    else:
        low, last_key, span = walk.low, walk.last_key, next_span(walk, limit)
    due = predicate(store, selection)
    end = None if low + span >= last_key else low + span
    window = and_(key > low, due) if end is None else and_(key > low, key <= end, due)
    started = time.monotonic()
    deleted = connection.execute(delete(table).where(window).ext(ordered_limit([key], limit)))
    seconds = time.monotonic() - started
    resume: int | None = end
    if deleted.rowcount >= limit:
        # Due rows may be left in the span: the next batch starts before the first of them
        # (a read, which no longer sees the rows just deleted, and whose walk stops there).
        left = connection.execute(select(key).where(window).order_by(key).limit(1)).first()
        resume = end if left is None else int(left[0]) - 1
    if resume is None:
        return Batch((), deleted.rowcount, resume_after=(low,), more=False)
    walk = SpanWalk(resume, last_key, resume - low, deleted.rowcount, seconds)
    store.span_walks[rule.name] = walk
    return Batch((), deleted.rowcount, resume_after=(resume,), more=True)
