"""Words for people: a count and its noun, singular only for one."""

from __future__ import annotations

# Nouns whose plural is not the singular plus "s".
_IRREGULAR = {"entry": "entries", "directory": "directories", "batch": "batches"}


def plural(noun: str, count: int) -> str:
    """Given a noun (singular, or several words ending in one) and a count, return the noun as
    the count wants it. Example: ``plural("delete marker", 2)`` is ``"delete markers"``."""
    if count == 1:
        return noun
    head, _space, last = noun.rpartition(" ")
    last = _IRREGULAR.get(last, last + "s")
    return f"{head} {last}" if head else last


def counted(count: int, noun: str) -> str:
    """Given a count and a singular noun, return both, the count with thousands separators.
    Example: ``counted(1, "rule")`` is ``"1 rule"``; ``counted(1200, "record")`` is
    ``"1,200 records"``."""
    return f"{count:,} {plural(noun, count)}"
