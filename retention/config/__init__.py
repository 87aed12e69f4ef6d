"""The configuration: TOML in, frozen value objects out.

Every problem is collected with its key path (``rules[3].period: ...``) and reported at once;
unknown keys are errors. Nothing here touches a database: checks against the live schema live with
the stores. Secrets never come from the TOML itself, only paths or names that lead to them.
"""

from __future__ import annotations

import hashlib
import tomllib
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
from retention.config.reader import Reader, resolve_path, resolve_sqlite_url
from retention.config.settings import (
    read_audit,
    read_checkins,
    read_daemon,
    read_settings,
    read_state,
)
from retention.config.stores import read_stores
from retention.config.table_rules import read_rule
from retention.errors import ConfigError, ConfigIssue

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
    "resolve_path",
    "resolve_sqlite_url",
]


def load_config(path: Path) -> Config:
    """Given the path of a TOML file, return the Config; raise ConfigError listing every problem.

    Example: ``load_config(Path("config/retention.toml")).rules[0].name`` returns
    ``"customer-content"``.
    """
    try:
        content = path.read_bytes()
    except OSError as error:
        raise ConfigError([ConfigIssue(str(path), f"cannot read: {error.strerror}")]) from error
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
    reader = Reader(base_directory=base_directory)
    reader.unknown_keys(
        document, "", {"settings", "stores", "rules", "audit", "state", "daemon", "checkins"}
    )
    settings = read_settings(reader, reader.table(document, "settings", required=False))
    audit = read_audit(reader, reader.table(document, "audit")) if "audit" in document else None
    state = read_state(reader, reader.table(document, "state", required=False))
    daemon = read_daemon(reader, reader.table(document, "daemon", required=False), settings)
    checkins = read_checkins(reader, reader.table(document, "checkins", required=False))
    stores = read_stores(reader, reader.table(document, "stores", required=False))
    raw_rules = document.get("rules", [])
    rules: list[Rule] = []
    if not isinstance(raw_rules, list):
        reader.error("rules", "must be an array of tables: write each rule as [[rules]]")
    else:
        for index, raw_rule in enumerate(raw_rules):
            rule = read_rule(reader, raw_rule, f"rules[{index}]", stores, settings)
            if rule is not None:
                rules.append(rule)
    if settings is not None and not (settings.hash_key_file or settings.hash_key_credential):
        for rule in rules:
            for column, strategy in rule.anonymise:
                if strategy.kind == "hash":
                    reader.error(
                        f"{rule.path}.anonymise.{column}",
                        "the hash strategy needs a secret key: set settings.hash_key_file or "
                        "settings.hash_key_credential",
                    )
    declared = {
        raw_rule.get("name")
        for raw_rule in (raw_rules if isinstance(raw_rules, list) else [])
        if isinstance(raw_rule, dict)
    }
    rules = resolve_subjects(reader, rules, declared)
    seen: dict[str, str] = {}
    for index, raw_rule in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        name = raw_rule.get("name") if isinstance(raw_rule, dict) else None
        if not isinstance(name, str) or not name:
            continue
        if name in seen:
            reader.error(f"rules[{index}].name", f"{name!r} is already the name of {seen[name]}")
        seen.setdefault(name, f"rules[{index}]")
    if reader.issues or settings is None:
        raise ConfigError(reader.issues)
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
