"""Keys spelled by the database as the ends of their records' locators: which key columns it can
spell (``spellable``), its text checked and made Python's spelling (``respelled``), and its pieces
cut into chunks of keys (``spelled_chunks``).

Every record of a dropped partition gets a leaf in the trail, so its key is read once per record:
that read, and spelling the key as its record's locator for the leaf, are the drop's per-record
costs outside the hash itself. Python's own spelling of a key read as values (``str()`` of a
datetime, then quoting) costs more than the hash (about 1 µs a key on a quiet core), so where
every key column is a NOT NULL integer, date or datetime without time zone, the database spells
them (``SpelledKeys``): its text of each value, which for these types is Python's ``str()`` but
for the fractional seconds (fixed here: ``respelled``), joined by the server into one string
per piece of the partition, which Python checks (only the bytes such a spelling holds, no zero
date), quotes and splits with a few passes over the whole string.

A key that cannot be spelled exactly (a zero date, a year BC or beyond 9999, infinity) fails
closed: BatchConflict, and the partition goes by row batches.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Column, Date, DateTime, Integer

from retention.errors import BatchConflict
from retention.store_protocol import SpelledKeys

# What the database's text of spellable keys may hold: digits, "-" (dates, negative integers),
# " ", ":" and "." (times), "/" between a key's parts, "," or "\n" between keys. A year BC, an
# infinity or anything else has a letter or another sign.
_SPELLED_BYTES = b"0123456789-:. /,\n"
# Those bytes by class: each digit as "0", anything else not spelled as "?". A year after 9999
# (PostgreSQL's run to 294276) is then "00000-", which nothing else spells: an integer key part
# ends at "/" or a separator, a month or day has two digits.
_SPELLED_CLASSES = bytes(
    ord("0") if byte in b"0123456789" else byte if byte in _SPELLED_BYTES else ord("?")
    for byte in range(256)
)
_FRACTION = re.compile(rb"\.([0-9]+)")
# MariaDB's zero dates: a zero month or day, a year 0. No valid date, time or integer is
# spelled with these (a year is 0001 to 9999, an integer has no leading zero).
_ZERO_DATES = (b"-00", b"0000-")


def spellable(key_columns: Sequence[Column[Any]]) -> bool:
    """Given key columns, return whether the database can spell their values as the ends of
    record locators (``SpelledKeys``): each NOT NULL and an integer, a date or a datetime
    without time zone, whose text the server writes as Python's ``str()`` but for fractional
    seconds (``respelled`` fixes them)."""
    return all(
        not column.nullable
        and (
            isinstance(column.type, Integer | Date)
            or (isinstance(column.type, DateTime) and not column.type.timezone)
        )
        for column in key_columns
    )


def respelled(text: bytes, separator: bytes, zero_dates: bool = True) -> bytes:
    """Given keys as the database spelled them (each part's text, joined by "/"; the keys by
    ``separator``), return each key's locator end as ``record_locator`` spells the values the
    driver gives, joined by newlines: fractional seconds as Python writes them (six digits,
    none when zero), " " and ":" quoted. BatchConflict when a key holds what no such value
    spells (a year BC or after 9999, an infinity; with ``zero_dates``, MariaDB's zero dates
    too)."""
    # One pass for both (1.6 ms for 25,000 keys; a regular expression for the year took 12).
    classes = text.translate(_SPELLED_CLASSES)
    if b"?" in classes or b"00000-" in classes:
        raise BatchConflict("one of its keys cannot be spelled exactly")
    # PostgreSQL has no zero date (no year 0, month 00 or day 00): searching a piece for one
    # cost 0.7 ms of its 3 ms here (600 KB), with the GIL held, in the reading thread.
    if zero_dates and any(zero in text for zero in _ZERO_DATES):
        raise BatchConflict("one of its keys cannot be spelled exactly")
    if b"." in text:
        text = _FRACTION.sub(_microseconds, text)
    if separator != b"\n":
        text = text.replace(separator, b"\n")
    return text.replace(b" ", b"%20").replace(b":", b"%3A")


def _microseconds(found: re.Match[bytes]) -> bytes:
    digits = found[1]
    if len(digits) > 6:
        raise BatchConflict("one of its keys has more than microseconds")
    return b"" if digits.count(b"0") == len(digits) else b"." + digits.ljust(6, b"0")


def spelled_chunks(pieces: Iterator[bytes], chunk: int) -> Iterator[SpelledKeys]:
    """Given pieces of spelled keys, return them as ``SpelledKeys`` of ``chunk`` keys each
    (the last fewer); what a reader left of one is read before the next."""
    rest: list[bytes] = []  # the end of a piece cut at a chunk's end: the next one's

    def gathered() -> Iterator[bytes]:
        count = 0
        while count < chunk:
            piece = rest.pop() if rest else next(pieces, None)
            if piece is None:
                return
            size = piece.count(b"\n") + 1
            if size > chunk - count:
                # Cut where the chunk ends (once a chunk: a piece's lines made objects once).
                lines = piece.split(b"\n", chunk - count)
                rest.append(lines.pop())
                piece, size = b"\n".join(lines), len(lines)
            yield piece
            count += size

    while True:
        if not rest:
            first = next(pieces, None)
            if first is None:
                return
            rest.append(first)
        keys = SpelledKeys(gathered())
        yield keys
        keys.finish()


__all__ = ["respelled", "spellable", "spelled_chunks"]
