"""Words for people: a count and its noun, singular only for one."""

from __future__ import annotations

import os
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


def is_text(value: str) -> bool:
    """Given a value from the command line, standard input or a file name, return whether it is
    text: bytes that are not UTF-8 arrive as lone surrogates, which no database, hash or audit
    entry takes.
    Example: ``is_text("caf\\udce9")`` (``café`` in Latin-1) is false."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_path(path: os.PathLike[str] | str) -> str:
    """Given a path found on disk (whose name anyone who can write its directory chose),
    return it to print: bytes that are not UTF-8 as ``\\xNN``, line breaks, tabs and what
    ``printable`` escapes as escapes, so that it stays on its line and can be written out.
    Example: ``shown_path("trail/a\\nb.jsonl")`` is ``"trail/a\\\\nb.jsonl"``."""
    return one_line(os.fsencode(path).decode("utf-8", "backslashreplace"))


def one_line(text: str) -> str:
    """Given a value to print among others on one line (a sample key, a file's name), return it
    as ``printable`` does, its line breaks and tabs escaped too: a name cannot start a line of
    its own. Example: ``one_line("db-\\nfake")`` is ``"db-\\\\nfake"``."""
    return printable(text.replace("\n", "\\n").replace("\t", "\\t"))


# What str.isprintable() refuses among the characters Unicode 14 assigns: C0 and C1 controls
# (newline and tab included), format characters (bidi overrides and isolates, zero widths, the
# soft hyphen, the BOM), private use, and every separator but the ASCII space (no-break spaces,
# line and paragraph separators). As (first, last) code points.
UNPRINTABLE_RANGES = (
    (0x0000, 0x001F),
    (0x007F, 0x00A0),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x2064),
    (0x2066, 0x206F),
    (0x3000, 0x3000),
    (0xE000, 0xF8FF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
    (0xF0000, 0xFFFFD),
    (0x100000, 0x10FFFD),
)


def printable_class(but: str = "") -> str:
    """Given characters to leave out too (none: every printable one), return a regular
    expression class of every character but those and those of ``UNPRINTABLE_RANGES``,
    written as the characters themselves (the engines that read a config's patterns,
    pydantic-core's, Python's and an editor's, read those alike). Example:
    ``re.fullmatch(printable_class() + "*", "Données – 3 ans")`` matches, and not with a
    ``"\\u202e"`` in it."""
    ranges = (chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in UNPRINTABLE_RANGES)
    return "[^" + "".join(ranges) + but + "]"
