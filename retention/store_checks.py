"""The live half of `config validate`: every rule checked against its store, as
``rule_checks.check_against_stores`` does. With S3 stores beside others, the S3 stores are
checked in a child process while this one checks the others: their libraries' imports and
set-up (botocore and S3's service model; SQLAlchemy and the reflection) are CPU work that one
interpreter does one after the other, and the two halves share nothing (docs/performance.md,
start-up)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from retention.config import Config, Rule, S3StoreConfig
from retention.errors import ConfigIssue
from retention.rule_checks import RuleCheck, check_against_stores, check_rules, combined_checks
from retention.runtime.forked import forked
from retention.stores import open_stores


def check_live(config: Config) -> tuple[list[ConfigIssue], dict[str, str]]:
    """Given a config, open its stores read-only and return every schema problem of its rules,
    then every secret it names that cannot be read, and the stores that could not be reached
    (name -> reason); the first expected error of a rule, in the rules' order, raises. The
    answer of ``check_against_stores`` then ``secret_checks.check_secrets``, whether or not the
    S3 stores were checked in a child process. The secrets (cryptography's import) are read
    here, after the other stores: with structlog no longer imported at start, SQLAlchemy's
    import brings asyncio into this half, and botocore's is still the longer one."""
    s3_stores = {name for name, store in config.stores.items() if isinstance(store, S3StoreConfig)}
    in_child = [rule for rule in config.rules if rule.store in s3_stores]
    here = [rule for rule in config.rules if rule.store not in s3_stores]
    if in_child and here:
        with forked(lambda: _checked(config, in_child), "the check of the S3 stores") as child:
            if child is not None:
                checks_here = _checked(config, here)
                secret_issues = _secret_issues(config)
                issues, unreachable = combined_checks(
                    _in_order(config.rules, s3_stores, checks_here, child.result)
                )
                return issues + secret_issues, unreachable
    with open_stores(config, read_only=True) as store_for:
        issues, unreachable = check_against_stores(config.rules, store_for)
    return issues + _secret_issues(config), unreachable


def _secret_issues(config: Config) -> list[ConfigIssue]:
    # Imported where it runs: cryptography and the trail's modules, which the child of a split
    # check has no use for.
    from retention.secret_checks import check_secrets

    return check_secrets(config)


def _checked(config: Config, rules: Sequence[Rule]) -> list[RuleCheck]:
    with open_stores(config, read_only=True) as store_for:
        return check_rules(rules, store_for)


def _in_order(
    rules: Sequence[Rule],
    child_stores: set[str],
    checks_here: list[RuleCheck],
    child_checks: Callable[[], list[RuleCheck]],
) -> Iterator[tuple[Rule, RuleCheck]]:
    """Each rule with its check, in the rules' order; the child's checks are waited for at the
    first of its rules (an error of an earlier rule here raises before)."""
    here = iter(checks_here)
    child: Iterator[RuleCheck] | None = None
    for rule in rules:
        if rule.store in child_stores:
            if child is None:
                child = iter(child_checks())
            check = next(child, None)
        else:
            check = next(here, None)
        if check is None:  # that side ended at an error, raised by an earlier rule
            return
        yield rule, check
