"""The configuration: TOML in, frozen value objects out.

Every problem is collected with its key path (``rules[3].period: ...``) and reported at once.
The declaration (schema.py, through validation.py) checks keys, types, ranges and the rules
between the keys of a table; the readers build the value objects and check the rest. Nothing
here touches a database: checks against the live schema live with the stores. Secrets never
come from the TOML itself, only paths or names that lead to them.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

from retention.config.conditions import parse_condition
from retention.config.cron import SCHEDULE_KEYWORDS, parse_schedule
from retention.config.model import (
    DAILY,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_DELETE,
    DEFAULT_MAX_FRACTION,
    FILES_KEY,
    IDENTIFIER,
    MAX_BATCH_SIZE,
    PERIOD_UNITS,
    RULE_NAME,
    S3_KEY,
    SUPPORTED_URL,
    Action,
    AuditSettings,
    CheckinSettings,
    Child,
    ColumnRef,
    Condition,
    Config,
    DaemonSettings,
    FilesStoreConfig,
    Join,
    ObjectClock,
    ObjectScope,
    Operator,
    Rule,
    S3StoreConfig,
    Scalar,
    Schedule,
    Settings,
    SqlStoreConfig,
    StateSettings,
    StoreConfig,
    Subjects,
)
from retention.config.object_rules import DEFAULT_OBJECT_BATCH_SIZE, resolve_subjects
from retention.config.reader import Reader, resolve_path, resolve_sqlite_url, table_at
from retention.config.settings import (
    read_audit,
    read_checkins,
    read_daemon,
    read_settings,
    read_state,
)
from retention.config.stores import read_stores
from retention.config.table_rules import read_rule
from retention.config.validation import validate_document
from retention.errors import ConfigError, ConfigIssue, RetentionError

__all__ = [
    "DAILY",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_DELETE",
    "DEFAULT_MAX_FRACTION",
    "DEFAULT_OBJECT_BATCH_SIZE",
    "FILES_KEY",
    "IDENTIFIER",
    "MAX_BATCH_SIZE",
    "PERIOD_UNITS",
    "RULE_NAME",
    "S3_KEY",
    "SCHEDULE_KEYWORDS",
    "SUPPORTED_URL",
    "Action",
    "AuditSettings",
    "CheckinSettings",
    "Child",
    "ColumnRef",
    "Condition",
    "Config",
    "DaemonSettings",
    "FilesStoreConfig",
    "Join",
    "ObjectClock",
    "ObjectScope",
    "Operator",
    "Rule",
    "S3StoreConfig",
    "Scalar",
    "Schedule",
    "Settings",
    "SqlStoreConfig",
    "StateSettings",
    "StoreConfig",
    "Subjects",
    "load_config",
    "parse_condition",
    "parse_config",
    "parse_schedule",
    "read_at_most",
    "read_within",
    "resolve_path",
    "resolve_sqlite_url",
]


# Past these sizes a file is not what it was named for: /dev/zero or /dev/urandom never ends.
LONGEST_CONFIG_BYTES = 16 * 2**20


def read_at_most(path: Path, limit: int) -> bytes | None:
    """Given a file (or a pipe, a device) and a size, return its content, or None when it holds
    more than ``limit`` bytes; OSError when it cannot be read.

    Example: ``read_at_most(Path("/dev/zero"), 10)`` returns None.
    """
    with path.open("rb") as handle:
        content = handle.read(limit + 1)
    return None if len(content) > limit else content


def read_within(path: Path, limit: int, noun: str, error: Callable[[str], RetentionError]) -> bytes:
    """Given a file, the most bytes it may hold, what it should be and the error to raise,
    return its content; raise ``error(message)`` when it cannot be read or holds more.

    Example: ``read_within(Path("/dev/zero"), 2**20, "an anchor", UsageError)`` raises
    ``UsageError("'/dev/zero' holds more than 1 MiB: not an anchor")``.
    """
    try:
        content = read_at_most(path, limit)
    except OSError as failure:
        raise error(f"cannot read {str(path)!r}: {failure.strerror}") from failure
    if content is None:
        size = f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"
        raise error(f"{str(path)!r} holds more than {size}: not {noun}")
    return content


def load_config(path: Path) -> Config:
    """Given the path of a TOML file, return the Config; raise ConfigError listing every problem.

    Example: ``load_config(Path("config/retention.toml")).rules[0].name`` returns
    ``"customer-content"``.
    """
    try:
        content = read_at_most(path, LONGEST_CONFIG_BYTES)
    except OSError as error:
        raise ConfigError([ConfigIssue(str(path), f"cannot read: {error.strerror}")]) from error
    if content is None:
        too_long = f"longer than {LONGEST_CONFIG_BYTES // 2**20} MiB: not a config file"
        raise ConfigError([ConfigIssue(str(path), too_long)])
    return parse_config(content, source=str(path), base_directory=path.resolve().parent)


def parse_config(
    content: bytes, *, source: str = "<config>", base_directory: Path | None = None
) -> Config:
    """Given TOML bytes, return the Config; raise ConfigError listing every problem with its path.
    Every relative path in it (key files, the audit directory, a backup folder's ``root``,
    SQLite files, credentials files) is relative to ``base_directory``, the config file's
    folder; without one, relative paths stay as written.

    Example: ``parse_config(b'[settings]\\ntimezone = "UTC"')`` returns a Config with no rules.
    """
    try:
        document = tomllib.loads(content.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError([ConfigIssue(source, f"not UTF-8 text: {error}")]) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([ConfigIssue(source, f"not valid TOML: {error}")]) from error
    except ValueError as error:  # an integer of more digits than Python converts
        raise ConfigError([ConfigIssue(source, f"not valid TOML: {error}")]) from error
    except RecursionError as error:  # arrays or inline tables nested past the parser's depth
        raise ConfigError([ConfigIssue(source, "not valid TOML: nested too deep")]) from error
    # Keys, types, ranges and the rules between the keys of a table: the declaration's; what
    # it refuses is taken out of the document, which the readers then turn into value objects,
    # checking what a schema cannot see.
    reader = Reader(issues=validate_document(document), base_directory=base_directory)
    settings = read_settings(reader, table_at(document, "settings"))
    audit = read_audit(reader, table_at(document, "audit")) if "audit" in document else None
    state = read_state(reader, table_at(document, "state"))
    daemon = read_daemon(reader, table_at(document, "daemon"), settings)
    checkins = read_checkins(reader, table_at(document, "checkins"))
    stores = read_stores(reader, table_at(document, "stores"))
    raw_rules = document.get("rules")
    raw_rules = raw_rules if isinstance(raw_rules, list) else []
    rules: list[Rule] = []
    for index, raw_rule in enumerate(raw_rules):
        rule = read_rule(reader, raw_rule, f"rules[{index}]", stores, settings)
        if rule is not None:
            rules.append(rule)
    if not (settings.hash_key_file or settings.hash_key_credential):
        for rule in rules:
            for column, strategy in rule.anonymise:
                if strategy.kind == "hash":
                    reader.error(
                        f"{rule.path}.anonymise.{column}",
                        "the hash strategy needs a secret key: set settings.hash_key_file or "
                        "settings.hash_key_credential",
                    )
    declared = {rule["name"] for rule in raw_rules if isinstance(rule, dict) and "name" in rule}
    rules = resolve_subjects(reader, rules, declared)
    seen: dict[str, str] = {}
    for index, raw_rule in enumerate(raw_rules):
        name = raw_rule.get("name") if isinstance(raw_rule, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            reader.error(f"rules[{index}].name", f"{name!r} is already the name of {seen[name]}")
        seen.setdefault(name, f"rules[{index}]")
    if reader.issues:
        # The declaration's errors come first; then, rule by rule, the order of the file.
        raise ConfigError(sorted(reader.issues, key=_rule_index))
    return Config(
        settings=settings,
        stores=MappingProxyType(stores),
        rules=tuple(rules),
        source=source,
        digest=hashlib.sha256(content).hexdigest(),
        audit=audit,
        state=state,
        daemon=daemon,
        checkins=checkins,
    )


def _rule_index(issue: ConfigIssue) -> int:
    match = re.match(r"rules\[(\d+)\]", issue.path)
    return int(match.group(1)) if match else -1
