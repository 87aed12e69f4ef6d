"""Rules whose clock another rule can take away: a clock read through a join from a table that
another rule deletes from. Once that row goes, the rows it dated have no clock, and a row
without a clock is never due: kept for ever, in silence. Pure: from the config alone, so
`config validate` warns of it with or without the stores."""

from collections.abc import Iterator, Sequence

from retention.config import Child, ColumnRef, Rule
from retention.errors import ConfigIssue
from retention.rules import Period


def clocks_cut_by_other_rules(rules: Sequence[Rule]) -> list[ConfigIssue]:
    """Given the config's rules, return a warning (``ConfigIssue.warning``) for each clock read
    through a join from a table that another rule of the same store deletes rows from (its own
    table or a child's), unless this rule's table goes with them as one of that rule's
    children, or its rows are due first (the other rule dates its rows by that very column,
    with a longer period).

    Example: ``connection-logs`` with ``clock = "account.closed_at"`` and a delete rule
    ``accounts`` on ``accounts`` give a warning at ``rules[1].clock`` that starts ``rule
    'accounts' deletes rows of 'accounts', which this rule's clock account.closed_at is read
    from``.
    """
    warnings: list[ConfigIssue] = []
    for rule in rules:
        for index, reference in enumerate(rule.clock):
            if reference.join is None:
                continue
            joined = rule.join(reference.join).table
            key = f"{rule.path}.clock" + (f"[{index}]" if len(rule.clock) > 1 else "")
            warnings += [
                ConfigIssue(key, _cut(rule, reference, joined, other), warning=True)
                for other in rules
                if other is not rule
                and other.store == rule.store
                and _deletes_from(other, joined)
                # Its rows go with the rows that dated them, or before them.
                and rule.table not in _child_tables(other.children)
                and not _due_first(rule, reference, joined, other)
            ]
    return warnings


def _cut(rule: Rule, reference: ColumnRef, joined: str, other: Rule) -> str:
    return (
        f"rule {other.name!r} deletes rows of {joined!r}, which this rule's clock {reference} "
        f"is read from: a row whose {joined} row it takes first has no clock any more and is "
        f"kept for ever (a row without a clock is never due); list {rule.table} among "
        f"{other.name}'s children, or date that rule's rows by {reference.column} with a "
        "longer period than this rule's, so that this rule's rows are due first"
    )


def _due_first(rule: Rule, reference: ColumnRef, joined: str, other: Rule) -> bool:
    """Whether each of ``rule``'s rows is due before ``other`` deletes the row that dates it:
    both read that one date alone (``other`` on its own table, the very column), and
    ``rule``'s period is shorter on any calendar: unit by unit, or at its longest (31-day
    months, 25-hour days) against the other's shortest."""
    if len(rule.clock) != 1 or rule.period_column is not None or other.period_column is not None:
        return False
    if other.table != joined or other.clock != (ColumnRef(reference.column),):
        return False
    mine = (rule.period.months, rule.period.days, rule.period.seconds)
    theirs = (other.period.months, other.period.days, other.period.seconds)
    if mine != theirs and all(part <= whole for part, whole in zip(mine, theirs, strict=True)):
        return True
    return _longest_seconds(rule.period) < _shortest_seconds(other.period)


# The bounds of a calendar period: a month has 28 to 31 days, a day 23 to 25 hours (a change
# of daylight saving time in the rule's time zone).
def _longest_seconds(period: Period) -> int:
    return period.months * 31 * 86_400 + period.days * 25 * 3_600 + period.seconds


def _shortest_seconds(period: Period) -> int:
    return period.months * 28 * 86_400 + period.days * 23 * 3_600 + period.seconds


def _deletes_from(other: Rule, table: str) -> bool:
    return other.action == "delete" and (
        other.table == table or table in _child_tables(other.children)
    )


def _child_tables(children: Sequence[Child]) -> Iterator[str]:
    for child in children:
        yield child.table
        yield from _child_tables(child.children)
