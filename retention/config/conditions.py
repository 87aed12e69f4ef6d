"""Conditions: `column OP literal`, parsed here so that values are bound, never spliced."""

from __future__ import annotations

import re
from collections.abc import Iterator

from retention.config.model import ColumnRef, Condition, Operator, Scalar
from retention.config.reader import Reader, names

_CONDITION_HEAD = re.compile(
    r"\s*(?P<column>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*"
    r"(?P<operator>(?<![A-Za-z0-9_])(?:is\s+not\s+null|is\s+null|not\s+in|in)(?![A-Za-z0-9_])"
    r"|<=|>=|!=|<>|=|<|>)",
    re.IGNORECASE,
)
_LITERAL = re.compile(
    r"\s*(?:'(?P<string>(?:[^']|'')*)'|(?P<number>-?\d+(?:\.\d+)?)|(?P<word>true|false|null))\s*",
    re.IGNORECASE,
)


def read_conditions(
    reader: Reader, raw: object, path: str, join_names: set[str]
) -> tuple[Condition, ...]:
    """The grammar of each condition (the declaration checks that each is a string)."""
    conditions = []
    for index, text in enumerate(names(raw)):
        where = f"{path}[{index}]"
        try:
            condition = parse_condition(text)
        except ValueError as error:
            reader.error(where, str(error))
            continue
        if condition.column.join is not None and condition.column.join not in join_names:
            reader.error(
                where, f"goes through join {condition.column.join!r}, which is not declared"
            )
            continue
        conditions.append(condition)
    return tuple(conditions)


def parse_condition(text: object) -> Condition:
    """Given a condition as written in the config, return it; raise ValueError when it is not one.

    Understood: ``column = literal`` (also ``!=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``),
    ``column IS [NOT] NULL``, ``column [NOT] IN (literal, ...)``; literals are 'text' (quote
    doubled to escape), numbers, true and false. Example: ``parse_condition("hired = false")``
    returns ``Condition(ColumnRef("hired"), "=", False, "hired = false")``.
    """
    if not isinstance(text, str):
        raise ValueError(f"must be a string such as \"status = 'sent'\", not {text!r}")
    head = _CONDITION_HEAD.match(text)
    if head is None:
        raise ValueError(f"{text!r}: expected `column OPERATOR value` (or where_sql for raw SQL)")
    join, _, column = head.group("column").rpartition(".")
    reference = ColumnRef(column, join or None)
    operator_text = " ".join(head.group("operator").lower().split())
    rest = text[head.end() :]
    if operator_text in ("is null", "is not null"):
        if rest.strip():
            raise ValueError(f"{text!r}: unexpected {rest.strip()!r} after {operator_text.upper()}")
        operator: Operator = "is_null" if operator_text == "is null" else "is_not_null"
        return Condition(reference, operator, None, text)
    if operator_text in ("in", "not in"):
        stripped = rest.strip()
        if not (stripped.startswith("(") and stripped.endswith(")")):
            raise ValueError(f"{text!r}: IN takes a parenthesised list, e.g. IN ('a', 'b')")
        values = tuple(_literal(part, text) for part in _split_list(stripped[1:-1], text))
        return Condition(reference, "in" if operator_text == "in" else "not_in", values, text)
    value = _literal(rest, text)
    symbol: Operator = "!=" if operator_text == "<>" else operator_text  # type: ignore[assignment]
    return Condition(reference, symbol, value, text)


def _literal(text: str, whole: str) -> Scalar:
    match = _LITERAL.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{whole!r}: {text.strip()!r} is not a literal ('text', a number, true or false)"
        )
    if match.group("string") is not None:
        return match.group("string").replace("''", "'")
    if match.group("number") is not None:
        number = match.group("number")
        return float(number) if "." in number else int(number)
    word = match.group("word").lower()
    if word == "null":
        raise ValueError(f"{whole!r}: compare with NULL using IS NULL or IS NOT NULL")
    return word == "true"


def _split_list(text: str, whole: str) -> Iterator[str]:
    """Split a literal list on commas outside quotes."""
    current: list[str] = []
    quoted = False
    for character in text:
        if character == "'":
            quoted = not quoted
        if character == "," and not quoted:
            yield "".join(current)
            current = []
        else:
            current.append(character)
    if quoted:
        raise ValueError(f"{whole!r}: unterminated quote")
    if not "".join(current).strip() and not text.strip():
        raise ValueError(f"{whole!r}: IN needs at least one value")
    yield "".join(current)


def where_sql_problem(sql: str) -> str | None:
    """Given a rule's where_sql, return why it cannot be spliced into the rule's predicate as
    one parenthesised term (None when it can).

    It is ANDed as ``(where_sql)``: a comment would swallow the closing parenthesis (and what
    follows), a stray parenthesis would let an OR escape its term, a semicolon would start
    another statement. Quotes are read both with and without backslash escapes (MariaDB's and
    PostgreSQL's strings), and either reading must hold. Example:
    ``where_sql_problem("1=1 --")`` returns ``"holds a comment (--) outside quotes..."``.
    """
    for backslash_escapes in (False, True):
        problem = _splice_problem(sql, backslash_escapes)
        if problem is not None:
            return (
                f"read as MariaDB reads it (a backslash escapes), {problem}"
                if backslash_escapes
                else problem
            )
    return None


def _splice_problem(sql: str, backslash_escapes: bool) -> str | None:
    depth = 0
    quote = ""
    index = 0
    while index < len(sql):
        character = sql[index]
        following = sql[index : index + 2]
        index += 1
        if quote:
            if backslash_escapes and character == "\\":
                index += 1
            elif character == quote:
                quote = ""
        elif character in "'\"`":
            quote = character
        elif following in ("--", "/*") or character == "#":
            shown = following if following in ("--", "/*") else character
            return (
                f"holds a comment ({shown}) outside quotes: write the condition alone (a "
                "comment can swallow the parenthesis that closes it in the rule's predicate)"
            )
        elif character == ";":
            return "holds a semicolon outside quotes: one expression, not statements"
        elif character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
            if depth < 0:
                return "closes a parenthesis it did not open: it must be one expression"
    if quote:
        return f"leaves a quote ({quote}) open"
    if depth:
        return "leaves a parenthesis open"
    return None
