"""The live half of `config validate`: every rule checked against its store, as
``rule_checks.check_against_stores`` does. With S3 stores beside others, the S3 stores are
checked in a child process while this one checks the others: their libraries' imports and
set-up (botocore and S3's service model; SQLAlchemy and the reflection) are CPU work that one
interpreter does one after the other, and the two halves share nothing (docs/performance.md,
start-up). Where the config file names an S3 store, that child starts before the config is read
(``live_checks``): it imports botocore and the S3 store while this process reads the config,
then is handed the config; it checks the folders and reads the secrets too (cryptography's
import costs it less than it costs this process, whose half, SQLAlchemy's, is the longer one
once it reads the config).

Nothing at the top of this module imports the config's modules: the child is forked before
them."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.runtime.forked import Forked, forked, forked_awaiting

if TYPE_CHECKING:
    from retention.config import Config, Rule
    from retention.errors import ConfigIssue
    from retention.rule_checks import RuleCheck

    # The child's rule checks, and the secrets' problems when it read them (None: not read).
    ChildChecks = tuple[list[RuleCheck], list[ConfigIssue] | None]
    LiveCheck = Callable[[Config], tuple[list[ConfigIssue], dict[str, str]]]

# Only a hint, read before the config is: where it is wrong, the check is the same (a child
# started for nothing is handed the config and finds no S3 rule; one not started early is
# started once the config is read).
NAMES_AN_S3_STORE = re.compile(rb"""\bkind\s*=\s*["']s3["']""")
# Past this, the hint is not worth reading: the config's own load says what the file is.
LONGEST_HINTED_BYTES = 2**20
CHILD_DOING = "the check of the S3 stores"


@contextmanager
def live_checks(config_path: Path) -> Iterator[LiveCheck]:
    """Given the path of the config about to be loaded, yield the function that checks the
    loaded config against its stores (``check_live``'s answer). Where the file names an S3
    store and a child process can be forked, the child is started now and imports the S3
    store's modules while this process reads the config; the function hands it the config.
    The child is ended with the block (a config that fails to load never reaches it)."""
    starting = forked_awaiting(_s3_half, CHILD_DOING) if _names_s3(config_path) else nullcontext()
    with starting as child:
        yield functools.partial(check_live, child=child)


def check_live(
    config: Config, child: Forked[ChildChecks] | None = None
) -> tuple[list[ConfigIssue], dict[str, str]]:
    """Given a config, open its stores read-only and return every schema problem of its rules
    (and their warnings, ``ConfigIssue.warning``), then every secret it names that cannot be
    read, and the stores that could not be reached (name -> reason); the first expected error
    of a rule, in the rules' order, raises. The answer of ``combined_checks`` (warnings
    kept) then ``secret_checks.check_secrets``, whether or not the
    S3 stores were checked in a child process (``child``: one started by ``live_checks``,
    waiting for the config, which reads the secrets too). Otherwise the secrets
    (cryptography's import) are read here, after the other stores."""
    from retention.rule_checks import check_rules, combined_checks

    if child is not None:
        child.send(config)
        child_stores = _early_child_stores(config)
        here = [rule for rule in config.rules if rule.store not in child_stores]
        return _split(config, child_stores, here, child.result, secrets_in_child=True)
    s3_stores = _store_names(config, "s3")
    here = [rule for rule in config.rules if rule.store not in s3_stores]
    in_child = [rule for rule in config.rules if rule.store in s3_stores]
    if in_child and here:
        with forked(lambda: (_checked(config, in_child), None), CHILD_DOING) as late:
            if late is not None:
                return _split(config, s3_stores, here, late.result, secrets_in_child=False)
    from retention.stores import open_stores

    with open_stores(config, read_only=True) as store_for:
        checks = zip(config.rules, check_rules(config.rules, store_for), strict=False)
        issues, unreachable = combined_checks(checks)
    return issues + _secret_issues(config), unreachable


def _names_s3(config_path: Path) -> bool:
    try:
        # A regular file only: a pipe (--config /dev/stdin) is read once, by the config's load.
        if not config_path.is_file():
            return False
        with config_path.open("rb") as handle:
            return NAMES_AN_S3_STORE.search(handle.read(LONGEST_HINTED_BYTES)) is not None
    except OSError:  # the config's load says why
        return False


def _s3_half(receive: Callable[[], Any]) -> ChildChecks:
    """In the child: import what checking S3 stores takes while the parent reads the config,
    then check the rules of the S3 stores and folders of the config it hands over, then read
    its secrets."""
    import retention.stores.files
    import retention.stores.s3  # noqa: F401  (botocore: the longest import of this half)

    config = receive()
    child_stores = _early_child_stores(config)
    checks = _checked(config, [rule for rule in config.rules if rule.store in child_stores])
    return checks, _secret_issues(config)


def _split(
    config: Config,
    child_stores: set[str],
    here: Sequence[Rule],
    child_result: Callable[[], ChildChecks],
    *,
    secrets_in_child: bool,
) -> tuple[list[ConfigIssue], dict[str, str]]:
    """The rules of ``here`` checked in this process, the S3 stores' rules by a child meanwhile,
    both merged in the rules' order; then the secrets' problems, read by the child or here."""
    from retention.rule_checks import combined_checks

    checks_here = _checked(config, here)
    secret_issues = None if secrets_in_child else _secret_issues(config)
    result: ChildChecks | None = None

    def child_checks() -> list[RuleCheck]:
        nonlocal result
        result = child_result()
        return result[0]

    issues, unreachable = combined_checks(
        _in_order(config.rules, child_stores, checks_here, child_checks)
    )
    if secret_issues is None:
        if result is None:  # no S3 rule: the child was started on a hint the config belied
            result = child_result()
        secret_issues = result[1] or []
    return issues + secret_issues, unreachable


def _store_names(config: Config, *kinds: str) -> set[str]:
    from retention.config import FilesStoreConfig, S3StoreConfig

    classes = {"s3": S3StoreConfig, "files": FilesStoreConfig}
    wanted = tuple(classes[kind] for kind in kinds)
    return {name for name, store in config.stores.items() if isinstance(store, wanted)}


def _early_child_stores(config: Config) -> set[str]:
    """The stores a child started before the config was read checks: the S3 stores, and the
    folders (a few ms, taken off this process's half, SQLAlchemy's, the longer one)."""
    return _store_names(config, "s3", "files")


def _secret_issues(config: Config) -> list[ConfigIssue]:
    # Imported where it runs: cryptography and the trail's modules, which the child of a split
    # check has no use for.
    from retention.secret_checks import check_secrets

    return check_secrets(config)


def _checked(config: Config, rules: Sequence[Rule]) -> list[RuleCheck]:
    from retention.rule_checks import check_rules
    from retention.stores import open_stores

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
