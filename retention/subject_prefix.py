"""A cross-store rule's ``subject_prefix``: literal text and plain ``{column}`` placeholders.

A prefix is rendered by joining its parts, never with ``str.format``: a format spec
(``{id:.1}``), a conversion (``{id!r}``) or an attribute or index (``{id.real}``, ``{id[0]}``)
would let several subjects share one prefix, and the objects of a subject that is not due would
go with those of one that is. For the same reason a prefix must name every key column of its
subjects, at most one per path segment: key values never hold a '/', so each segment then gives
back the one value in it, and two subjects never share a prefix. ``{{`` and ``}}`` are literal
braces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_PLAIN_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TOKEN = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[{}]|[^{}]+")


@dataclass(frozen=True)
class Placeholder:
    """Where a subject's value of ``column`` goes in its prefix."""

    column: str


PrefixPart = str | Placeholder


def parse_subject_prefix(text: str) -> tuple[tuple[PrefixPart, ...], list[str]]:
    """Given a subject_prefix, return its parts (literal text and placeholders, in order) and
    what is wrong with its spelling (empty when nothing is).

    Example: ``"customers/{customer_id}/"`` gives ``(("customers/",
    Placeholder("customer_id"), "/"), [])``; ``"c/{id:.1}/"`` gives a problem naming
    ``'{id:.1}'``.
    """
    parts: list[PrefixPart] = []
    problems: list[str] = []
    literal = ""
    for token in _TOKEN.findall(text):
        if token in ("{{", "}}"):
            literal += token[0]
        elif token in ("{", "}"):
            problems.append(f"has an unmatched {token!r} (write {token * 2!r} for a literal one)")
        elif token.startswith("{"):
            column = token[1:-1]
            if not _PLAIN_COLUMN.fullmatch(column):
                problems.append(
                    f"{token!r} is not a plain {{column}} placeholder (a column name only: no "
                    "format spec, conversion, attribute or index)"
                )
                continue
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(Placeholder(column))
        else:
            literal += token
    if literal:
        parts.append(literal)
    return tuple(parts), problems


def key_problems(parts: Sequence[PrefixPart], rule_name: str, key: Sequence[str]) -> list[str]:
    """Given a parsed subject_prefix and the name and key columns of its subjects' rule, return
    why two subjects could share its prefix or a placeholder names no key column (empty: none).

    Example: parts of ``"c/{tenant}/"`` with key ``("tenant", "id")`` give a problem naming
    ``{id}``.
    """
    problems = []
    columns = [part.column for part in parts if isinstance(part, Placeholder)]
    unknown = sorted({column for column in columns if column not in key})
    if unknown:
        problems.append(
            f"{', '.join('{' + column + '}' for column in unknown)} "
            f"{'is not a key column' if len(unknown) == 1 else 'are not key columns'} "
            f"of rule {rule_name!r}"
        )
    missing = [column for column in key if column not in columns]
    if missing:
        problems.append(
            f"lacks {', '.join('{' + column + '}' for column in missing)}: every key column of "
            f"rule {rule_name!r} must be in it, or subjects sharing a prefix would lose each "
            "other's objects"
        )
    segment: list[str] = []
    for part in parts:
        if isinstance(part, Placeholder):
            segment.append(part.column)
            if len(segment) > 1:
                problems.append(
                    f"{{{segment[-2]}}} and {{{segment[-1]}}} are in one path segment: put a '/' "
                    "between them, or keys ('1', '23') and ('12', '3') would share a prefix"
                )
        elif "/" in part:
            segment = []
    return problems


def render_subject_prefix(parts: Sequence[PrefixPart], values: dict[str, str]) -> str:
    """Given a parsed subject_prefix and a subject's values by column, return its prefix.

    Example: parts of ``"customers/{customer_id}/"`` and ``{"customer_id": "42"}`` give
    ``"customers/42/"``.
    """
    return "".join(part if isinstance(part, str) else values[part.column] for part in parts)
