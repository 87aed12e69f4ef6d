"""Legal holds, pure: what a hold names and whether it is in force. They live in the state
database (retention/state.py) so that legal staff never edit the deployment's config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from retention.config import Condition, Rule, parse_condition
from retention.wording import counted, is_text, one_line

HoldKind = Literal["key", "where", "prefix"]


@dataclass(frozen=True)
class Hold:
    """A hold on some records of one rule: by key, by condition, or by object key prefix.

    ``keys`` are key tuples (kind "key"), ``condition`` a parsed condition (kind "where"),
    ``prefix`` an object key prefix (kind "prefix", object stores only).
    """

    id: int
    rule: str
    kind: HoldKind
    reason: str
    created_at: datetime
    created_by: str
    keys: tuple[tuple[str, ...], ...] = ()
    condition: Condition | None = None
    prefix: str | None = None
    until: datetime | None = None
    released_at: datetime | None = None
    # False while its hold.added entry is not yet in the audit trail (placed while a run held
    # the trail): in force all the same. Not part of what the hold is (equality, a plan's holds).
    recorded: bool = field(default=True, compare=False)
    # When not recorded: what held the trail when it was placed (which run, whose).
    placed_while: str | None = field(default=None, compare=False)

    def in_force(self, now: datetime) -> bool:
        """Given the time, return whether the hold still protects its records."""
        return self.released_at is None and (self.until is None or now < self.until)

    @property
    def target(self) -> str:
        if self.kind == "key":
            return counted(len(self.keys), "key")
        if self.kind == "where":
            return self.condition.text if self.condition else ""
        return f"prefix {one_line(self.prefix or '')}"


def parse_hold_target(
    rule: Rule, keys: tuple[str, ...], where: str | None, prefix: str | None
) -> tuple[HoldKind, tuple[tuple[str, ...], ...], Condition | None, str | None]:
    """Given a rule and exactly one of keys / where / prefix from the command line, return what
    the hold names; raise ValueError saying what is wrong.

    Keys of a composite key are written ``a/b`` (one part per key column). Example:
    ``parse_hold_target(rule, ("42",), None, None)`` returns ``("key", (("42",),), None, None)``.
    """
    given = [
        name for name, value in (("--key", keys), ("--where", where), ("--prefix", prefix)) if value
    ]
    if len(given) != 1:
        raise ValueError("give exactly one of --key (repeatable), --where or --prefix")
    # Stored as given, such a value would fail every later plan and run of the rule.
    for value in (*keys, where or "", prefix or ""):
        if not is_text(value):
            raise ValueError(f"{given[0]} holds bytes that are not UTF-8: no record has them")
    if rule.objects is not None:
        return _object_hold_target(rule, keys, where, prefix)
    if keys:
        parsed = tuple(tuple(key.split("/")) for key in keys)
        wrong = [
            key for key, parts in zip(keys, parsed, strict=True) if len(parts) != len(rule.key)
        ]
        if wrong:
            raise ValueError(
                f"rule {rule.name!r} has a key of {counted(len(rule.key), 'column')} "
                f"({', '.join(rule.key)}); {wrong[0]!r} does not match (write parts as a/b)"
            )
        return "key", parsed, None, None
    if where is not None:
        condition = parse_condition(where)
        if condition.column.join is not None:
            raise ValueError("a hold condition names a column of the rule's own table")
        return "where", (), condition, None
    raise ValueError(f"rule {rule.name!r} purges SQL rows: --prefix holds are for object stores")


def _object_hold_target(
    rule: Rule, keys: tuple[str, ...], where: str | None, prefix: str | None
) -> tuple[HoldKind, tuple[tuple[str, ...], ...], Condition | None, str | None]:
    """On objects and files, a key is a whole object key or path (every version of it), a
    prefix the start of object keys or paths: '/' is part of both, never a separator here."""
    if where is not None:
        raise ValueError(f"rule {rule.name!r} purges objects: hold them by --key or --prefix")
    if prefix is not None:
        return "prefix", (), None, prefix
    return "key", tuple((key,) for key in keys), None, None


def object_held(holds: Sequence[Hold], key: str) -> bool:
    """Given the holds in force on an object rule and an object key (or a file's path under
    the root), return whether a hold protects it.

    Example: a hold with ``prefix="customers/42/"`` protects ``"customers/42/a.pdf"`` and not
    ``"customers/420/a.pdf"``; a key hold on ``"a.pdf"`` protects every version of ``"a.pdf"``.
    """
    for hold in holds:
        if hold.kind == "prefix" and hold.prefix is not None and key.startswith(hold.prefix):
            return True
        if hold.kind == "key" and any(held[0] == key for held in hold.keys if held):
            return True
    return False
