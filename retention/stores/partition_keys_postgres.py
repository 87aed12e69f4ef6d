"""PostgreSQL: a partition's keys spelled by the server, one range of its pages at a time
(``postgres_pieces``, about ``PIECE`` keys a range).

On PostgreSQL 14 and later (psycopg) each range is a TID range scan, read by a thread while the
one before is hashed (partition_ahead.py): the server spells and scans while Python hashes (the
driver lets go of the GIL while it waits). The server sends each key column of a range as one
binary array, which the compiled module spells (``_keys.c``); without it, or for a column type it
does not spell, the server spells the keys as text, one ``string_agg`` a range. Keys the server
cannot spell, and servers before 14, are read as values (partition_keys.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from retention.errors import BatchConflict
from retention.stores.partition_key_spelling import respelled

try:
    from retention.stores import _keys as _native
except ImportError:  # not compiled (setup.py): the server spells PostgreSQL's keys as text
    _native = None  # type: ignore[assignment]

# About how many keys PostgreSQL spells in one piece (what one thread step reads ahead).
PIECE = 25_000


def postgres_pieces(
    driver: Any,
    partition: str,
    names: Sequence[str],
    rows: int,
    fingerprint: tuple[str, str] | None = None,
    summed: list[int] | None = None,
) -> Iterator[bytes]:
    """PostgreSQL: the keys (their columns' quoted ``names``) of the partition of about
    ``rows`` rows spelled, one range of its pages at a time (about ``PIECE`` keys), in this
    transaction's snapshot; the last range open-ended, so that a page added since the size was
    read is read too. The server sends each key column of a range as one binary array, which
    the compiled module spells (``_keys.c``); without it, or for a column type it does not
    spell, the server spells the keys as text. With a ``fingerprint`` (the SQL of two
    aggregates), each range's are read with its keys and their sums left in ``summed`` once
    the last range is read."""
    line = " || '/' || ".join(f"{name}::text" for name in names)
    arrays = ", ".join(f"array_send(array_agg({name}))" for name in names)
    counted = "0, 0" if fingerprint is None else ", ".join(fingerprint)
    totals = [0, 0]
    binary = _native is not None
    with driver.cursor() as cursor:
        # ISO: dates and times as YYYY-MM-DD HH:MM:SS.ffffff (trailing zeros cut).
        cursor.execute("SET LOCAL DateStyle = 'ISO'")
        cursor.execute(
            "SELECT pg_relation_size(CAST(%s AS regclass)) / current_setting('block_size')::int",
            (partition,),
        )
        (pages,) = cursor.fetchone()
        step = max(1, math.ceil(pages * PIECE / max(rows, 1)))
        for start in range(0, max(pages, 1), step):
            bounds = f"ctid >= '({start},0)'::tid"
            if start + step < pages:
                bounds += f" AND ctid < '({start + step},0)'::tid"
            if binary:
                # Two thirds of the server's time per key went to writing its values as text.
                cursor.execute(
                    f"SELECT {counted}, {arrays} FROM {partition} WHERE {bounds}", binary=True
                )
                count, hashed, *found = cursor.fetchone()
                totals[0] += int(count)
                totals[1] += int(hashed)
                if found[0] is None:
                    continue
                try:
                    spelled = _native.spelled_arrays(tuple(found))
                except TypeError:
                    # A column type not spelled there: this range again, and the rest, as text.
                    binary = False
                    totals[0] -= int(count)
                    totals[1] -= int(hashed)
                except ValueError as error:
                    raise BatchConflict("one of its keys cannot be spelled exactly") from error
                else:
                    yield spelled
                    continue
            cursor.execute(
                f"SELECT {counted}, string_agg({line}, E'\\n') FROM {partition} WHERE {bounds}"
            )
            count, hashed, text = cursor.fetchone()
            totals[0] += int(count)
            totals[1] += int(hashed)
            if text:
                yield respelled(text.encode("ascii", "replace"), b"\n", zero_dates=False)
    if summed is not None:
        summed[:] = totals


__all__ = ["PIECE", "postgres_pieces"]
