"""Rules x stores -> what is wrong: every rule checked against its store's live schema (tables,
columns, clock types, indexes, cascades; a bucket, a folder), and the stores that could not be
reached. Pure: stores are reached only through the RecordStore protocol. Apart from the planner,
whose plans start with it, so that `config validate` imports only this (docs/performance.md,
start-up)."""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from retention.config import Rule
from retention.errors import ConfigIssue, RetentionError, StoreUnavailable
from retention.store_protocol import RecordStore


@dataclass(frozen=True)
class RuleCheck:
    """What checking one rule against its store found: its schema problems; or that the store
    could not be reached (``unreachable``, the reason, on the first of the store's rules); or
    an expected error that ends the whole check (``error``: a store this config cannot open,
    a refusal)."""

    issues: tuple[ConfigIssue, ...] = ()
    unreachable: str | None = None
    error: RetentionError | None = None


def check_rules(rules: Sequence[Rule], store_for: Callable[[str], RecordStore]) -> list[RuleCheck]:
    """Given rules and a way to reach stores, return what checking each rule found, in the
    rules' order. It ends at the first error (the rules after it are not checked), as
    ``check_against_stores`` does; a store's rules after the one that found it unreachable are
    skipped (empty checks)."""
    checks: list[RuleCheck] = []
    unreachable: set[str] = set()
    for rule in rules:
        if rule.store in unreachable:
            checks.append(RuleCheck())
            continue
        try:
            checks.append(RuleCheck(issues=tuple(store_for(rule.store).check_rule(rule))))
        except StoreUnavailable as error:
            unreachable.add(rule.store)
            checks.append(RuleCheck(unreachable=str(error)))
        except RetentionError as error:
            checks.append(RuleCheck(error=error))
            break
    return checks


def combined_checks(
    checks: Iterable[tuple[Rule, RuleCheck]],
) -> tuple[list[ConfigIssue], dict[str, str]]:
    """Given each rule with what checking it found, in the rules' order, return every schema
    problem, warnings too (``ConfigIssue.warning``), and the stores that could not be reached
    (name -> reason); the first error raises."""
    issues: list[ConfigIssue] = []
    unreachable: dict[str, str] = {}
    for rule, check in checks:
        if check.error is not None:
            raise check.error
        issues += check.issues
        if check.unreachable is not None:
            unreachable.setdefault(rule.store, check.unreachable)
    return issues, unreachable


def check_against_stores(
    rules: Sequence[Rule], store_for: Callable[[str], RecordStore]
) -> tuple[list[ConfigIssue], dict[str, str]]:
    """Given rules and a way to reach stores, return every schema problem of every rule, and the
    stores that could not be reached (name -> reason). Example: a rule naming a missing column
    gives ``[ConfigIssue("rules[2].clock", "no column 'loged_at' in 'connection_logs'")], {}``.
    Warnings are left out: `config validate` prints them (``combined_checks``), nothing
    refuses on them."""
    issues, unreachable = combined_checks(zip(rules, check_rules(rules, store_for), strict=False))
    return [issue for issue in issues if not issue.warning], unreachable
