"""Words for people: a count and its noun, singular only for one."""

from __future__ import annotations

import re

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


# What a terminal acts on instead of showing: C0 and C1 controls but the newline and the tab
# (escape sequences, carriage return, backspace, bell), line and paragraph separators, and the
# invisible format characters that reorder or hide text (bidi overrides, zero widths, BOM).
_UNSHOWABLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb]"
)


def printable(text: str) -> str:
    """Given text to print (which may quote a config, a trail or a database written by someone
    else), return it with every character a terminal would act on written as a ``\\uXXXX``
    escape instead: its line breaks and tabs stay, and JSON stays JSON. Example:
    ``printable("a\\x1b[2Jb")`` is ``"a\\\\u001b[2Jb"``."""
    return _UNSHOWABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
