"""The configuration: TOML in, frozen value objects out.

Every problem is collected with its key path (``rules[3].period: ...``) and reported at once;
unknown keys are errors. Nothing here touches a database: checks against the live schema live with
the stores. Secrets never come from the TOML itself, only paths or names that lead to them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from retention.anonymise import Strategy, parse_strategy
from retention.errors import ConfigError, ConfigIssue, UsageError
from retention.rules import Period, PeriodError, compile_date_pattern, parse_period, parse_zone
from retention.subject_prefix import (
    PrefixPart,
    key_problems,
    parse_subject_prefix,
    render_subject_prefix,
)

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 50_000
# Brakes, on out of the box: a run that would purge more than this of a rule stops that rule.
DEFAULT_MAX_DELETE = 1_000_000
DEFAULT_MAX_FRACTION = 0.5
PERIOD_UNITS = ("y", "mo", "w", "d")
_UTC = ZoneInfo("UTC")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
# A daemon interval or a jitter of more than a year means a typo, and past it the scheduler's
# arithmetic (now + interval) could leave the calendar.
_LONGEST_DURATION = timedelta(days=366)
SUPPORTED_URL = re.compile(r"(sqlite|postgresql\+psycopg|mysql\+pymysql|mariadb\+pymysql)://")

Scalar = str | int | float | bool
Operator = Literal["=", "!=", "<", "<=", ">", ">=", "is_null", "is_not_null", "in", "not_in"]
Action = Literal["delete", "anonymise"]


@dataclass(frozen=True)
class ColumnRef:
    """A column of the rule's table (``join`` None) or of one of its declared joins."""

    column: str
    join: str | None = None

    def __str__(self) -> str:
        return self.column if self.join is None else f"{self.join}.{self.column}"


@dataclass(frozen=True)
class Join:
    """A many-to-one join: each row of the rule's table has at most one row in ``table``."""

    name: str
    table: str
    local_columns: tuple[str, ...]
    remote_columns: tuple[str, ...]


@dataclass(frozen=True)
class Condition:
    """A filter such as ``status = 'sent'``; the value is always bound, never spliced."""

    column: ColumnRef
    operator: Operator
    value: Scalar | tuple[Scalar, ...] | None = None
    text: str = ""


@dataclass(frozen=True)
class Child:
    """Rows of ``table`` whose ``foreign_key`` references ``references`` of a purged row."""

    table: str
    foreign_key: str
    references: str
    children: tuple[Child, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """When a rule runs, as crontab(5) means it, on the wall clock of [daemon].timezone: the
    values each field allows (``weekday`` 0 is Sunday). ``either_day``: day of month and day of
    week are both restricted, and either one matching is enough (crontab's rule)."""

    text: str
    minute: tuple[int, ...]
    hour: tuple[int, ...]
    day: tuple[int, ...]
    month: tuple[int, ...]
    weekday: tuple[int, ...]
    either_day: bool = False


DAILY = Schedule("daily", (0,), (0,), tuple(range(1, 32)), tuple(range(1, 13)), tuple(range(7)))


ObjectClock = Literal["last_modified", "key_date", "mtime", "name_date"]


@dataclass(frozen=True)
class Subjects:
    """A cross-store rule's subjects: the records that the SQL rule ``rule`` selects, each one
    owning the objects under ``prefix`` with its key values filled in (``customers/{id}/``)."""

    rule: Rule
    prefix: str
    # The prefix as parsed at load: literal text and plain {column} placeholders, each key
    # column at least once (retention.subject_prefix).
    parts: tuple[PrefixPart, ...]

    def prefix_for(self, key: tuple[object, ...]) -> str | None:
        """Given a subject's key values, return its prefix, or None when a value is empty or
        holds a '/' (it would reach into another subject's objects).

        Example: with prefix ``"customers/{customer_id}/"`` and key ``(42,)``, return
        ``"customers/42/"``.
        """
        values = {}
        for column, value in zip(self.rule.key, key, strict=True):
            text = str(value)
            if not text or "/" in text:
                return None
            values[column] = text
        return render_subject_prefix(self.parts, values)


@dataclass(frozen=True)
class ObjectScope:
    """Which objects (S3) or files (a backup folder) a rule reaches and how their clock reads.

    ``prefix``: a key prefix under the store's own prefix (S3). ``glob``: a pattern relative to
    the root (files). ``clock``: ``last_modified`` (S3) or ``mtime`` (files), or a date read from
    the key or file path with ``date_pattern`` (``nightly/%Y-%m-%d/``). ``subjects``: a cross-store
    rule, whose objects are everything under its subjects' prefixes."""

    clock: ObjectClock
    prefix: str = ""
    glob: str | None = None
    date_pattern: str | None = None
    subjects: Subjects | None = None


@dataclass(frozen=True)
class Rule:
    """One retention commitment, as the config says it. Rules on object stores and backup
    folders have ``objects``; their ``table`` names the bucket or root (the audit's dataset)
    and their ``key`` is ``("key", "version_id")`` (S3) or ``("path",)`` (files)."""

    name: str
    path: str
    policy: str
    category: str
    store: str
    table: str
    key: tuple[str, ...]
    clock: tuple[ColumnRef, ...]
    period: Period
    action: Action
    period_column: ColumnRef | None = None
    period_unit: str | None = None
    conditions: tuple[Condition, ...] = ()
    where_sql: str | None = None
    joins: tuple[Join, ...] = ()
    children: tuple[Child, ...] = ()
    anonymise: tuple[tuple[str, Strategy], ...] = ()
    marker_column: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_delete: int = DEFAULT_MAX_DELETE
    max_fraction: float = DEFAULT_MAX_FRACTION
    match_all: bool = False
    schedule: Schedule = DAILY
    jitter: timedelta = timedelta(0)
    objects: ObjectScope | None = None
    # The column (maybe through a join) that names the person a row is about: what
    # `retention erase` matches a request's subject against (policies.md row 13).
    erase_by: ColumnRef | None = None
    # On a partitioned table, whole expired partitions are dropped (docs/config.md).
    drop_partitions: bool = True

    def join(self, name: str) -> Join:
        return next(join for join in self.joins if join.name == name)

    @property
    def clock_text(self) -> str:
        if self.objects is not None:
            if self.objects.subjects is not None:
                subject = self.objects.subjects.rule
                return f"subjects of {subject.name} ({subject.clock_text})"
            if self.objects.date_pattern is not None:
                return f"{self.objects.clock}({self.objects.date_pattern})"
            return self.objects.clock
        if len(self.clock) == 1:
            return str(self.clock[0])
        return "latest(" + ", ".join(str(column) for column in self.clock) + ")"


@dataclass(frozen=True)
class SqlStoreConfig:
    """A SQL database. Exactly one of ``url``, ``url_env`` and ``url_credential`` is set."""

    name: str
    timezone: ZoneInfo
    url: str | None = None
    url_env: str | None = None
    url_credential: str | None = None
    kind: Literal["sql"] = "sql"
    # The config file's folder: a relative SQLite path read from url_env or url_credential
    # resolves against it, as one in url already has.
    base_directory: Path | None = None


@dataclass(frozen=True)
class S3StoreConfig:
    """An S3-compatible bucket. Credentials come from boto3's chain (environment, shared files,
    instance role) or from a shared-credentials file (INI, ``aws_access_key_id`` ...):
    ``credentials_file``, or ``credentials_credential`` in $CREDENTIALS_DIRECTORY; never from
    the TOML itself. ``timezone`` reads dates found in keys."""

    name: str
    bucket: str
    timezone: ZoneInfo
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    credentials_file: Path | None = None
    credentials_credential: str | None = None
    profile: str | None = None
    max_concurrency: int = 8
    max_attempts: int = 8
    kind: Literal["s3"] = "s3"


@dataclass(frozen=True)
class FilesStoreConfig:
    """A local folder of backups. ``root`` is absolute and never ``/``; ``timezone`` reads
    dates found in file names."""

    name: str
    root: Path
    timezone: ZoneInfo
    kind: Literal["files"] = "files"


StoreConfig = SqlStoreConfig | S3StoreConfig | FilesStoreConfig
S3_KEY = ("key", "version_id")
FILES_KEY = ("path",)


@dataclass(frozen=True)
class Settings:
    """Settings shared by every rule."""

    timezone: ZoneInfo
    batch_size: int = DEFAULT_BATCH_SIZE
    hash_key_file: Path | None = None
    hash_key_credential: str | None = None
    max_delete: int = DEFAULT_MAX_DELETE
    max_fraction: float = DEFAULT_MAX_FRACTION


@dataclass(frozen=True)
class AuditSettings:
    """Where the audit trail lives and where its keys come from (files or credentials).

    ``enabled = false`` lets ``run`` purge without a trail: for tests and throw-away data only.
    """

    directory: Path
    public_keys_file: Path
    hmac_key_file: Path | None = None
    hmac_key_credential: str | None = None
    signing_key_file: Path | None = None
    signing_key_credential: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class StateSettings:
    """Where the state database is (run ledger, leases, legal holds). At most one of ``url``,
    ``url_env`` and ``url_credential``; when [state] is absent, ``var/state.sqlite`` in the
    config file's folder (``base_directory``), so that every process reading one config file
    shares one state database, wherever it was started from."""

    url: str | None = None
    url_env: str | None = None
    url_credential: str | None = None
    base_directory: Path | None = None


@dataclass(frozen=True)
class CheckinSettings:
    """Monitoring check-ins (healthchecks.io, Uptime Kuma, Cronitor): the URL to ping when a run
    starts, when it succeeds and when it fails (each optional), and how long a ping may take."""

    start: str | None = None
    success: str | None = None
    fail: str | None = None
    timeout: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class DaemonSettings:
    """How `retention daemon` runs: the time zone schedules are read in, where metrics are served
    (off without a port), how often an idle trail gets a signed checkpoint, how long a rule's
    lease lasts, and the grace after a cutoff past which a record counts as overdue."""

    timezone: ZoneInfo = _UTC
    metrics_address: str = "127.0.0.1"
    metrics_port: int | None = None
    heartbeat: timedelta = timedelta(hours=1)
    lease_ttl: timedelta = timedelta(minutes=2)
    overdue_grace: timedelta = timedelta(days=1)
    overdue_refresh: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Config:
    """A whole, valid configuration. ``digest`` identifies the exact file content."""

    settings: Settings
    stores: Mapping[str, StoreConfig]
    rules: tuple[Rule, ...]
    source: str
    digest: str = ""
    audit: AuditSettings | None = None
    state: StateSettings = StateSettings()
    daemon: DaemonSettings = DaemonSettings()
    checkins: CheckinSettings = CheckinSettings()

    def rules_named(self, names: tuple[str, ...]) -> tuple[Rule, ...]:
        """Given rule names (empty: all), return those rules in config order, except that a
        cross-store rule and its subjects' rule always go together, the objects first (a
        subject's row is what finds its objects).

        Example: ``config.rules_named(("customer-content",))`` returns the ``customer-files``
        rule, then ``customer-content``.
        """
        unknown = sorted(set(names) - {rule.name for rule in self.rules})
        if unknown:
            known = ", ".join(rule.name for rule in self.rules)
            missing = ", ".join(repr(name) for name in unknown)
            raise UsageError(f"--rule: no rule named {missing} (rules: {known})")
        chosen = set(names) if names else {rule.name for rule in self.rules}
        owner_of: dict[str, Rule] = {}
        for rule in self.rules:
            subjects = rule.objects.subjects if rule.objects else None
            if subjects is not None:
                owner_of[subjects.rule.name] = rule
                if rule.name in chosen or subjects.rule.name in chosen:
                    chosen |= {rule.name, subjects.rule.name}
        ordered: dict[str, Rule] = {}
        for rule in self.rules:
            if rule.name not in chosen:
                continue
            if rule.name in owner_of:
                ordered.setdefault(owner_of[rule.name].name, owner_of[rule.name])
            ordered.setdefault(rule.name, rule)
        return tuple(ordered.values())


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


def resolve_path(value: str, base_directory: Path | None) -> Path:
    """Given a path from the config and the config file's folder, return the path, made
    absolute against that folder when it is relative (as it is without a folder).

    Example: ``resolve_path("var/hmac.key", Path("/etc/retention"))`` returns
    ``Path("/etc/retention/var/hmac.key")``; ``resolve_path("/k", Path("/etc"))`` ``Path("/k")``.
    """
    path = Path(value)
    if path.is_absolute() or base_directory is None:
        return path
    return Path(os.path.normpath(base_directory / path))


_SQLITE_URL = re.compile(r"(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?", re.DOTALL)


def resolve_sqlite_url(url: str, base_directory: Path | None) -> str:
    """Given a database URL and the config file's folder, return the URL with a relative SQLite
    file path made absolute against that folder; any other URL (absolute, in-memory, another
    database) as it is.

    Example: ``resolve_sqlite_url("sqlite:///var/app.db", Path("/etc/retention"))`` returns
    ``"sqlite:////etc/retention/var/app.db"``.
    """
    match = _SQLITE_URL.fullmatch(url)
    if match is None or base_directory is None:
        return url
    scheme, file, query = match.group(1), match.group(2), match.group(3) or ""
    if not file or file == ":memory:" or file.startswith(("/", "file:")):
        return url
    return f"{scheme}{resolve_path(file, base_directory)}{query}"


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
    reader = _Reader(base_directory=base_directory)
    reader.unknown_keys(
        document, "", {"settings", "stores", "rules", "audit", "state", "daemon", "checkins"}
    )
    settings = _read_settings(reader, reader.table(document, "settings", required=False))
    audit = _read_audit(reader, reader.table(document, "audit")) if "audit" in document else None
    state = _read_state(reader, reader.table(document, "state", required=False))
    daemon = _read_daemon(reader, reader.table(document, "daemon", required=False), settings)
    checkins = _read_checkins(reader, reader.table(document, "checkins", required=False))
    stores = _read_stores(reader, reader.table(document, "stores", required=False))
    raw_rules = document.get("rules", [])
    rules: list[Rule] = []
    if not isinstance(raw_rules, list):
        reader.error("rules", "must be an array of tables: write each rule as [[rules]]")
    else:
        for index, raw_rule in enumerate(raw_rules):
            rule = _read_rule(reader, raw_rule, f"rules[{index}]", stores, settings)
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
    rules = _resolve_subjects(reader, rules, declared)
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


@dataclass
class _Reader:
    """Collects issues while values are read, so that every problem is reported at once."""

    issues: list[ConfigIssue] = field(default_factory=list)
    # Cross-store rules by path, until every rule is read and their subjects can be linked.
    pending_subjects: dict[str, _PendingSubjects] = field(default_factory=dict)
    base_directory: Path | None = None

    def error(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path, message))

    def path(self, value: str | None) -> Path | None:
        return resolve_path(value, self.base_directory) if value else None

    def unknown_keys(self, table: Mapping[str, object], path: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                where = f"{path}.{key}" if path else key
                self.error(where, f"unknown key (known here: {', '.join(sorted(known))})")

    def table(
        self, parent: Mapping[str, object], key: str, *, required: bool = True, path: str = ""
    ) -> Mapping[str, object]:
        where = f"{path}.{key}" if path else key
        value = parent.get(key)
        if value is None:
            if required:
                self.error(where, "missing")
            return {}
        if not isinstance(value, dict):
            self.error(where, f"must be a table, not {type(value).__name__}")
            return {}
        return value

    def string(
        self, table: Mapping[str, object], key: str, path: str, *, required: bool = False
    ) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.error(f"{path}.{key}", "missing")
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(f"{path}.{key}", f"must be a non-empty string, not {value!r}")
            return None
        return value

    def identifier(self, value: object, where: str) -> str | None:
        if value is None:
            self.error(where, "missing")
            return None
        if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
            self.error(where, f"{value!r} is not a plain identifier (letters, digits, _)")
            return None
        return value

    def identifiers(self, value: object, where: str) -> tuple[str, ...]:
        """A string or a non-empty list of strings, each an identifier."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.error(where, "must be a column name or a non-empty list of column names")
            return ()
        names = [self.identifier(item, f"{where}[{index}]") for index, item in enumerate(items)]
        return tuple(name for name in names if name is not None)

    def positive_int(
        self, table: Mapping[str, object], key: str, path: str, default: int, maximum: int
    ) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            self.error(
                f"{path}.{key}", f"must be a whole number from 1 to {maximum}, not {value!r}"
            )
            return default
        return value

    def fraction(self, table: Mapping[str, object], key: str, path: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            self.error(f"{path}.{key}", f"must be a fraction above 0 and at most 1, not {value!r}")
            return default
        return float(value)

    def duration(
        self,
        table: Mapping[str, object],
        key: str,
        path: str,
        default: timedelta,
        minimum: timedelta,
    ) -> timedelta:
        """A duration such as ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` or ``"1h30m"``."""
        raw = table.get(key)
        if raw is None:
            return default
        match = _DURATION.fullmatch(raw) if isinstance(raw, str) else None
        if match is None or not raw:
            self.error(
                f"{path}.{key}",
                f"must be a duration such as '30s', '15m', '2h' or '1d', not {raw!r}",
            )
            return default
        try:
            days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
            value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        except (OverflowError, ValueError):
            value = _LONGEST_DURATION + timedelta(1)  # thousands of digits, or past timedelta
        if value > _LONGEST_DURATION:
            self.error(f"{path}.{key}", f"must be at most {_LONGEST_DURATION.days}d, not {raw!r}")
            return default
        if value < minimum:
            self.error(f"{path}.{key}", f"must be at least {minimum}, not {raw!r}")
            return default
        return value

    def zone(self, table: Mapping[str, object], path: str) -> ZoneInfo:
        name = table.get("timezone", "UTC")
        if not isinstance(name, str):
            self.error(f"{path}.timezone", f"must be a time zone name, not {name!r}")
            return ZoneInfo("UTC")
        try:
            return parse_zone(name)
        except ValueError as error:
            self.error(f"{path}.timezone", str(error))
            return ZoneInfo("UTC")


def _read_settings(reader: _Reader, table: Mapping[str, object]) -> Settings | None:
    path = "settings"
    reader.unknown_keys(
        table,
        path,
        {
            "timezone",
            "batch_size",
            "hash_key_file",
            "hash_key_credential",
            "max_delete",
            "max_fraction",
        },
    )
    hash_key_file = reader.string(table, "hash_key_file", path)
    hash_key_credential = reader.string(table, "hash_key_credential", path)
    if hash_key_file and hash_key_credential:
        reader.error(f"{path}.hash_key_file", "give hash_key_file or hash_key_credential, not both")
    return Settings(
        timezone=reader.zone(table, path),
        batch_size=reader.positive_int(
            table, "batch_size", path, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
        ),
        hash_key_file=reader.path(hash_key_file),
        hash_key_credential=hash_key_credential,
        max_delete=reader.positive_int(table, "max_delete", path, DEFAULT_MAX_DELETE, 10**12),
        max_fraction=reader.fraction(table, "max_fraction", path, DEFAULT_MAX_FRACTION),
    )


def _read_audit(reader: _Reader, table: Mapping[str, object]) -> AuditSettings | None:
    path = "audit"
    pairs = (
        ("hmac_key_file", "hmac_key_credential"),
        ("signing_key_file", "signing_key_credential"),
    )
    reader.unknown_keys(
        table, path, {"enabled", "directory", "public_keys_file", *(k for p in pairs for k in p)}
    )
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        reader.error(f"{path}.enabled", f"must be true or false, not {enabled!r}")
        enabled = True
    directory = reader.string(table, "directory", path, required=enabled)
    values = {key: reader.string(table, key, path) for pair in pairs for key in pair}
    for file_key, credential_key in pairs:
        if values[file_key] and values[credential_key]:
            reader.error(f"{path}.{file_key}", f"give {file_key} or {credential_key}, not both")
        elif enabled and not (values[file_key] or values[credential_key]):
            reader.error(f"{path}.{file_key}", f"missing (or {credential_key})")
    if directory is None:
        return AuditSettings(Path("."), Path("."), enabled=False) if not enabled else None
    public_keys = reader.string(table, "public_keys_file", path)
    directory_path = resolve_path(directory, reader.base_directory)
    return AuditSettings(
        directory=directory_path,
        public_keys_file=reader.path(public_keys) or directory_path / "public-keys.json",
        hmac_key_file=reader.path(values["hmac_key_file"]),
        hmac_key_credential=values["hmac_key_credential"],
        signing_key_file=reader.path(values["signing_key_file"]),
        signing_key_credential=values["signing_key_credential"],
        enabled=enabled,
    )


def _read_state(reader: _Reader, table: Mapping[str, object]) -> StateSettings:
    path = "state"
    reader.unknown_keys(table, path, {"url", "url_env", "url_credential"})
    sources = {key: reader.string(table, key, path) for key in ("url", "url_env", "url_credential")}
    if sum(value is not None for value in sources.values()) > 1:
        reader.error(path, "give one of url, url_env or url_credential")
    url = sources["url"]
    if url is not None and not SUPPORTED_URL.match(url):
        reader.error(
            f"{path}.url", "use sqlite:///PATH, postgresql+psycopg://... or mysql+pymysql://..."
        )
    if url is not None:
        sources["url"] = resolve_sqlite_url(url, reader.base_directory)
    return StateSettings(**sources, base_directory=reader.base_directory)


def _read_stores(reader: _Reader, table: Mapping[str, object]) -> dict[str, StoreConfig]:
    stores: dict[str, StoreConfig] = {}
    for name, raw in table.items():
        path = f"stores.{name}"
        if reader.identifier(name, path) is None:
            continue
        if not isinstance(raw, dict):
            reader.error(path, "must be a table: [stores.NAME]")
            continue
        kind = raw.get("kind")
        if kind == "s3":
            stores[name] = _read_s3_store(reader, name, raw, path)
            continue
        if kind == "files":
            files_store = _read_files_store(reader, name, raw, path)
            if files_store is not None:
                stores[name] = files_store
            continue
        if kind != "sql":
            reader.error(
                f"{path}.kind", f"unknown store kind {kind!r} (supported: 'sql', 's3', 'files')"
            )
            continue
        reader.unknown_keys(raw, path, {"kind", "url", "url_env", "url_credential", "timezone"})
        sources = {
            key: reader.string(raw, key, path) for key in ("url", "url_env", "url_credential")
        }
        if sum(value is not None for value in sources.values()) != 1:
            reader.error(
                path,
                "give exactly one of url, url_env (an environment variable holding the URL) or "
                "url_credential (a file in $CREDENTIALS_DIRECTORY); keep passwords out of the TOML",
            )
        url = sources["url"]
        if url is not None and not re.match(
            r"(sqlite|postgresql\+psycopg|mysql\+pymysql|mariadb\+pymysql)://", url
        ):
            reader.error(
                f"{path}.url",
                "use sqlite:///PATH, postgresql+psycopg://... or mysql+pymysql://... "
                "(the drivers retention ships with)",
            )
        stores[name] = SqlStoreConfig(
            name=name,
            timezone=reader.zone(raw, path),
            url=resolve_sqlite_url(url, reader.base_directory) if url is not None else None,
            url_env=sources["url_env"],
            url_credential=sources["url_credential"],
            base_directory=reader.base_directory,
        )
    return stores


_S3_STORE_KEYS = {
    "kind",
    "bucket",
    "prefix",
    "region",
    "endpoint_url",
    "addressing_style",
    "credentials_file",
    "credentials_credential",
    "profile",
    "max_concurrency",
    "max_attempts",
    "timezone",
}
# S3's own rules for bucket names (3-63 characters, lower case, digits, dots, hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _read_s3_store(
    reader: _Reader, name: str, raw: Mapping[str, object], path: str
) -> S3StoreConfig:
    reader.unknown_keys(raw, path, _S3_STORE_KEYS)
    bucket = reader.string(raw, "bucket", path, required=True) or ""
    if bucket and not _BUCKET.fullmatch(bucket):
        reader.error(f"{path}.bucket", f"{bucket!r} is not a valid S3 bucket name")
    prefix = _object_prefix(reader, raw, path)
    endpoint_url = reader.string(raw, "endpoint_url", path)
    if endpoint_url is not None and not re.match(r"https?://[^/\s]+", endpoint_url):
        reader.error(f"{path}.endpoint_url", "must be an http:// or https:// URL")
    credentials_file = reader.string(raw, "credentials_file", path)
    credentials_credential = reader.string(raw, "credentials_credential", path)
    if credentials_file and credentials_credential:
        reader.error(path, "give credentials_file or credentials_credential, not both")
    style = raw.get("addressing_style", "auto")
    if style not in ("auto", "path", "virtual"):
        reader.error(f"{path}.addressing_style", "must be 'auto', 'path' or 'virtual'")
        style = "auto"
    return S3StoreConfig(
        name=name,
        bucket=bucket,
        timezone=reader.zone(raw, path),
        prefix=prefix,
        region=reader.string(raw, "region", path),
        endpoint_url=endpoint_url,
        addressing_style=style,  # type: ignore[arg-type]  # checked just above
        credentials_file=reader.path(credentials_file),
        credentials_credential=credentials_credential,
        profile=reader.string(raw, "profile", path),
        max_concurrency=reader.positive_int(raw, "max_concurrency", path, 8, 64),
        max_attempts=reader.positive_int(raw, "max_attempts", path, 8, 20),
    )


def _read_files_store(
    reader: _Reader, name: str, raw: Mapping[str, object], path: str
) -> FilesStoreConfig | None:
    reader.unknown_keys(raw, path, {"kind", "root", "timezone"})
    root = reader.string(raw, "root", path, required=True)
    zone = reader.zone(raw, path)
    if root is None:
        return None
    root_path = Path(root)
    if not root_path.is_absolute():
        # Relative to the config file, never to the working directory: where `retention` is
        # started from must not change which folder it deletes from.
        if reader.base_directory is None:
            reader.error(f"{path}.root", f"{root!r}: give an absolute path")
            return None
        root_path = resolve_path(root, reader.base_directory)
    # A root of / (however spelt: /tmp/.., //) would put the whole machine in scope.
    if Path(*[part for part in root_path.parts if part not in ("", ".")]).resolve() == Path("/"):
        reader.error(f"{path}.root", "refusing / as a root: name the backup folder itself")
        return None
    return FilesStoreConfig(name=name, root=root_path, timezone=zone)


def _object_prefix(reader: _Reader, raw: Mapping[str, object], path: str) -> str:
    prefix = raw.get("prefix", "")
    if not isinstance(prefix, str):
        reader.error(f"{path}.prefix", f"must be a string, not {prefix!r}")
        return ""
    if prefix.startswith("/"):
        reader.error(f"{path}.prefix", "S3 keys do not start with '/': drop the leading '/'")
    return prefix


_RULE_KEYS = {
    "name",
    "policy",
    "category",
    "store",
    "table",
    "key",
    "clock",
    "period",
    "period_column",
    "period_unit",
    "where",
    "where_sql",
    "action",
    "anonymise",
    "marker_column",
    "joins",
    "children",
    "batch_size",
    "max_delete",
    "max_fraction",
    "match_all",
    "schedule",
    "jitter",
    "erase_by",
    "drop_partitions",
}


@dataclass(frozen=True)
class _RunLimits:
    """How any rule runs, whatever its store: batches, brakes, schedule."""

    batch_size: int
    max_delete: int
    max_fraction: float
    match_all: bool
    schedule: Schedule
    jitter: timedelta


def _read_run_limits(
    reader: _Reader,
    raw: Mapping[str, object],
    path: str,
    settings: Settings | None,
    default_batch: int,
) -> _RunLimits:
    batch_size = reader.positive_int(raw, "batch_size", path, default_batch, MAX_BATCH_SIZE)
    defaults = settings or Settings(ZoneInfo("UTC"))
    max_delete = reader.positive_int(raw, "max_delete", path, defaults.max_delete, 10**12)
    max_fraction = reader.fraction(raw, "max_fraction", path, defaults.max_fraction)
    schedule = DAILY
    if "schedule" in raw:
        try:
            schedule = parse_schedule(raw["schedule"])
        except ValueError as error:
            reader.error(f"{path}.schedule", str(error))
    jitter = reader.duration(raw, "jitter", path, timedelta(0), timedelta(0))
    match_all = raw.get("match_all", False)
    if not isinstance(match_all, bool):
        reader.error(f"{path}.match_all", f"must be true or false, not {match_all!r}")
        match_all = False
    return _RunLimits(batch_size, max_delete, max_fraction, match_all, schedule, jitter)


def _read_rule(
    reader: _Reader,
    raw: object,
    path: str,
    stores: Mapping[str, StoreConfig],
    settings: Settings | None,
) -> Rule | None:
    if not isinstance(raw, dict):
        reader.error(path, "must be a table")
        return None
    issues_before = len(reader.issues)
    name = reader.string(raw, "name", path, required=True)
    if name is not None and not RULE_NAME.fullmatch(name):
        reader.error(f"{path}.name", f"{name!r}: use lower-case letters, digits, '-', '_' or '.'")
    store = reader.string(raw, "store", path, required=True)
    if store is not None and store not in stores:
        reader.error(f"{path}.store", f"no store named {store!r} (declare it as [stores.{store}])")
    store_config = stores.get(store) if store is not None else None
    if isinstance(store_config, S3StoreConfig | FilesStoreConfig):
        return _read_object_rule(reader, raw, path, name, store_config, settings)
    reader.unknown_keys(raw, path, _RULE_KEYS)
    table = reader.identifier(raw.get("table"), f"{path}.table")
    key = reader.identifiers(raw.get("key"), f"{path}.key")
    joins = _read_joins(reader, raw.get("joins", {}), f"{path}.joins")
    join_names = {join.name for join in joins}
    clock_raw = raw.get("clock")
    clock_items = [clock_raw] if isinstance(clock_raw, str) else clock_raw
    clock: list[ColumnRef] = []
    if not isinstance(clock_items, list) or not clock_items:
        reader.error(
            f"{path}.clock",
            "must be a column ('ended_at', 'contract.ended_at' through a join) or a list of "
            "columns whose latest non-NULL value counts",
        )
    else:
        for index, item in enumerate(clock_items):
            where = f"{path}.clock" if isinstance(clock_raw, str) else f"{path}.clock[{index}]"
            reference = _column_ref(reader, item, where, join_names)
            if reference is not None:
                clock.append(reference)
    period = _read_period(reader, raw.get("period"), f"{path}.period")
    period_column = None
    if "period_column" in raw:
        period_column = _column_ref(
            reader, raw["period_column"], f"{path}.period_column", join_names
        )
    erase_by = None
    if "erase_by" in raw:
        erase_by = _column_ref(reader, raw["erase_by"], f"{path}.erase_by", join_names)
    period_unit = reader.string(raw, "period_unit", path)
    if period_unit is not None and period_unit not in PERIOD_UNITS:
        reader.error(f"{path}.period_unit", f"must be one of {', '.join(PERIOD_UNITS)}")
    if period_unit is not None and period_column is None:
        reader.error(f"{path}.period_unit", "only makes sense with period_column")
    conditions = _read_conditions(reader, raw.get("where", []), f"{path}.where", join_names)
    where_sql = reader.string(raw, "where_sql", path)
    action, anonymise, marker_column = _read_action(reader, raw, path)
    children = _read_children(reader, raw.get("children", []), f"{path}.children", key)
    if children and action == "anonymise":
        reader.error(f"{path}.children", "only goes with action = 'delete' (anonymised rows stay)")
    default_batch = settings.batch_size if settings else DEFAULT_BATCH_SIZE
    limits = _read_run_limits(reader, raw, path, settings, default_batch)
    drop_partitions = raw.get("drop_partitions", True)
    if not isinstance(drop_partitions, bool):
        reader.error(f"{path}.drop_partitions", f"must be true or false, not {drop_partitions!r}")
    if (
        period is not None
        and period == Period(text=period.text)
        and not conditions
        and where_sql is None
        and not limits.match_all
    ):
        reader.error(
            path,
            "a period of 0 and no condition purges every row whose clock is set; add a `where` "
            "condition, or write match_all = true if that is what this rule means",
        )
    if (
        len(reader.issues) > issues_before
        or name is None
        or store is None
        or table is None
        or not key
        or period is None
        or action is None
    ):
        return None
    return Rule(
        name=name,
        path=path,
        policy=reader.string(raw, "policy", path) or "",
        category=reader.string(raw, "category", path) or "",
        store=store,
        table=table,
        key=key,
        clock=tuple(clock),
        period=period,
        action=action,
        period_column=period_column,
        period_unit=period_unit,
        conditions=conditions,
        where_sql=where_sql,
        joins=joins,
        children=children,
        anonymise=anonymise,
        marker_column=marker_column,
        batch_size=limits.batch_size,
        max_delete=limits.max_delete,
        max_fraction=limits.max_fraction,
        match_all=limits.match_all,
        schedule=limits.schedule,
        jitter=limits.jitter,
        erase_by=erase_by,
        drop_partitions=drop_partitions is not False,
    )


_OBJECT_RULE_KEYS = {
    "name",
    "policy",
    "category",
    "store",
    "prefix",
    "glob",
    "clock",
    "date_pattern",
    "period",
    "action",
    "subjects",
    "subject_prefix",
    "batch_size",
    "max_delete",
    "max_fraction",
    "match_all",
    "schedule",
    "jitter",
}
DEFAULT_OBJECT_BATCH_SIZE = 10_000
# A subject rule's own clock, period and schedule are the ones that count.
_SUBJECT_RULE_ONLY = ("period", "clock", "date_pattern", "prefix", "glob", "schedule", "jitter")


@dataclass(frozen=True)
class _PendingSubjects:
    """A cross-store rule's subjects, named before every rule is read."""

    rule_name: str
    prefix: str
    parts: tuple[PrefixPart, ...]
    path: str


def _read_object_rule(
    reader: _Reader,
    raw: Mapping[str, object],
    path: str,
    name: str | None,
    store: S3StoreConfig | FilesStoreConfig,
    settings: Settings | None,
) -> Rule | None:
    issues_before = len(reader.issues)
    kind = store.kind
    for key in raw:
        if key not in _OBJECT_RULE_KEYS:
            reader.error(
                f"{path}.{key}",
                f"not for rules on {kind!r} stores (known here: "
                f"{', '.join(sorted(_OBJECT_RULE_KEYS))})",
            )
    subjects_name = reader.string(raw, "subjects", path)
    subject_prefix = reader.string(raw, "subject_prefix", path)
    pending: _PendingSubjects | None = None
    if subjects_name is not None or subject_prefix is not None:
        if kind != "s3":
            reader.error(f"{path}.subjects", "cross-store rules purge S3 prefixes only")
        elif subjects_name is None or subject_prefix is None:
            reader.error(path, "a cross-store rule needs both subjects and subject_prefix")
        else:
            for key in _SUBJECT_RULE_ONLY:
                if key in raw:
                    reader.error(
                        f"{path}.{key}",
                        f"comes from the subjects' rule {subjects_name!r}: leave it out here",
                    )
            if not subject_prefix.endswith("/"):
                reader.error(
                    f"{path}.subject_prefix",
                    "must end with '/', or customers/1 would also reach customers/10/",
                )
            parts, problems = parse_subject_prefix(subject_prefix)
            for problem in problems:
                reader.error(f"{path}.subject_prefix", problem)
            pending = _PendingSubjects(
                subjects_name, subject_prefix, parts, f"{path}.subject_prefix"
            )
    clocks: tuple[ObjectClock, ObjectClock] = (
        ("last_modified", "key_date") if kind == "s3" else ("mtime", "name_date")
    )
    clock: ObjectClock = raw.get("clock", clocks[0])  # type: ignore[assignment]  # checked next
    if clock not in clocks:
        reader.error(f"{path}.clock", f"must be {clocks[0]!r} or {clocks[1]!r} here, not {clock!r}")
        clock = clocks[0]
    date_pattern = reader.string(raw, "date_pattern", path)
    if clock == clocks[1] and date_pattern is None:
        reader.error(f"{path}.date_pattern", f"missing: clock = {clocks[1]!r} reads it")
    if clock == clocks[0] and date_pattern is not None:
        reader.error(f"{path}.date_pattern", f"only goes with clock = {clocks[1]!r}")
    if date_pattern is not None:
        try:
            compile_date_pattern(date_pattern)
        except ValueError as error:
            reader.error(f"{path}.date_pattern", str(error))
    prefix = _object_prefix(reader, raw, path)
    if kind == "files" and "prefix" in raw:
        reader.error(f"{path}.prefix", "backup folders select files with glob, not prefix")
    glob = reader.string(raw, "glob", path)
    if kind == "s3" and glob is not None:
        reader.error(f"{path}.glob", "S3 rules select objects with prefix, not glob")
    if glob is not None and (glob.startswith("/") or ".." in Path(glob).parts):
        reader.error(f"{path}.glob", "must stay inside the root: no leading '/', no '..'")
    period = None
    if pending is None:
        period = _read_period(reader, raw.get("period"), f"{path}.period")
    action = raw.get("action", "delete")
    if action != "delete":
        reader.error(f"{path}.action", f"objects and files can only be deleted, not {action!r}")
    limits = _read_run_limits(reader, raw, path, settings, DEFAULT_OBJECT_BATCH_SIZE)
    if (
        period is not None
        and period == Period(text=period.text)
        and not prefix
        and not glob
        and date_pattern is None
        and not limits.match_all
    ):
        reader.error(
            path,
            "a period of 0 and no prefix, glob or date_pattern purges everything in the store; "
            "narrow it, or write match_all = true if that is what this rule means",
        )
    if len(reader.issues) > issues_before or name is None:
        return None
    dataset = store.bucket if isinstance(store, S3StoreConfig) else str(store.root)
    scope = ObjectScope(
        clock=clock,
        prefix=prefix,
        glob=glob if glob is not None or kind == "s3" else "**/*",
        date_pattern=date_pattern,
    )
    rule = Rule(
        name=name,
        path=path,
        policy=reader.string(raw, "policy", path) or "",
        category=reader.string(raw, "category", path) or "",
        store=store.name,
        table=dataset,
        key=S3_KEY if kind == "s3" else FILES_KEY,
        clock=(ColumnRef(clock),),
        period=period or Period(text="0d"),
        action="delete",
        batch_size=limits.batch_size,
        max_delete=limits.max_delete,
        max_fraction=limits.max_fraction,
        match_all=limits.match_all,
        schedule=limits.schedule,
        jitter=limits.jitter,
        objects=scope,
    )
    if pending is not None:
        reader.pending_subjects[path] = pending
    return rule


def _resolve_subjects(reader: _Reader, rules: list[Rule], declared: set[object]) -> list[Rule]:
    """Cross-store rules name their subjects' rule by name: link them once all are read. The
    subjects' rule must be a SQL rule, named by one cross-store rule at most. A subjects' rule
    that is declared but has errors of its own is not reported again here."""
    by_name = {rule.name: rule for rule in rules}
    claimed: dict[str, str] = {}
    resolved: list[Rule] = []
    for rule in rules:
        pending = reader.pending_subjects.get(rule.path)
        if pending is None or rule.objects is None:
            resolved.append(rule)
            continue
        subject = by_name.get(pending.rule_name)
        where = pending.path.rsplit(".", 1)[0] + ".subjects"
        if subject is None and pending.rule_name in declared:
            continue
        if subject is None or subject.objects is not None:
            reader.error(where, f"{pending.rule_name!r} is not the name of a rule on a SQL store")
            continue
        if pending.rule_name in claimed:
            reader.error(where, f"{pending.rule_name!r} already has {claimed[pending.rule_name]}")
            continue
        claimed[pending.rule_name] = f"cross-store rule {rule.name!r}"
        problems = key_problems(pending.parts, subject.name, subject.key)
        if problems:
            placeholders = "".join("{" + column + "}/" for column in subject.key)
            reader.error(
                pending.path,
                f"{'; '.join(problems)} (use the key columns of {subject.name!r} as "
                f"placeholders, one per path segment: '...{placeholders}')",
            )
            continue
        subjects = Subjects(rule=subject, prefix=pending.prefix, parts=pending.parts)
        resolved.append(
            replace(
                rule,
                period=subject.period,
                schedule=subject.schedule,
                jitter=subject.jitter,
                objects=replace(rule.objects, subjects=subjects),
            )
        )
    return resolved


def _read_daemon(
    reader: _Reader, table: Mapping[str, object], settings: Settings | None
) -> DaemonSettings:
    path = "daemon"
    reader.unknown_keys(table, path, {field.name for field in fields(DaemonSettings)})
    defaults = DaemonSettings()
    address = reader.string(table, "metrics_address", path) or defaults.metrics_address
    try:
        ipaddress.ip_address(address)
    except ValueError:
        reader.error(
            f"{path}.metrics_address", f"must be an IP address such as 127.0.0.1, not {address!r}"
        )
    port = None
    if "metrics_port" in table:
        port = reader.positive_int(table, "metrics_port", path, 9464, 65535)
    second = timedelta(seconds=1)
    return DaemonSettings(
        # Never the host's local zone: a schedule means the same wherever it runs.
        timezone=reader.zone(table, path)
        if "timezone" in table or settings is None
        else settings.timezone,
        metrics_address=address,
        metrics_port=port,
        heartbeat=reader.duration(table, "heartbeat", path, defaults.heartbeat, second),
        lease_ttl=reader.duration(table, "lease_ttl", path, defaults.lease_ttl, 2 * second),
        overdue_grace=reader.duration(
            table, "overdue_grace", path, defaults.overdue_grace, timedelta(0)
        ),
        overdue_refresh=reader.duration(
            table, "overdue_refresh", path, defaults.overdue_refresh, second
        ),
    )


_LONGEST_CHECKIN = timedelta(minutes=1)


def _read_checkins(reader: _Reader, table: Mapping[str, object]) -> CheckinSettings:
    path = "checkins"
    reader.unknown_keys(table, path, {field.name for field in fields(CheckinSettings)})
    urls: dict[str, str | None] = {}
    for key in ("start", "success", "fail"):
        url = reader.string(table, key, path)
        if url is not None and not _is_http_url(url):
            # Not the value: a check-in URL holds its check's secret token.
            reader.error(f"{path}.{key}", "must be an http:// or https:// URL with a host")
            url = None
        urls[key] = url
    timeout = reader.duration(table, "timeout", path, CheckinSettings.timeout, timedelta(seconds=1))
    if timeout > _LONGEST_CHECKIN:
        reader.error(f"{path}.timeout", "must be at most 1m: a ping must not hold up a purge")
        timeout = CheckinSettings.timeout
    return CheckinSettings(urls["start"], urls["success"], urls["fail"], timeout)


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(character.isspace() or ord(character) < 32 for character in text)
    )


def _read_period(reader: _Reader, raw: object, where: str) -> Period | None:
    if raw is None:
        reader.error(where, "missing (e.g. '90d', '1y', 'P1Y6M'; '0d' for no retention)")
        return None
    try:
        return parse_period(raw)  # type: ignore[arg-type]
    except PeriodError as error:
        reader.error(where, str(error))
        return None


def _column_ref(reader: _Reader, raw: object, where: str, join_names: set[str]) -> ColumnRef | None:
    if not isinstance(raw, str):
        reader.error(where, f"must be a column name, not {raw!r}")
        return None
    join, dot, column = raw.rpartition(".")
    if not dot:
        return ColumnRef(column) if reader.identifier(column, where) else None
    if join not in join_names:
        known = ", ".join(sorted(join_names)) or "none declared"
        reader.error(where, f"{raw!r} goes through join {join!r}, which is not declared ({known})")
        return None
    return ColumnRef(column, join) if reader.identifier(column, where) else None


def _read_joins(reader: _Reader, raw: object, path: str) -> tuple[Join, ...]:
    if not isinstance(raw, dict):
        reader.error(path, "must be a table of named joins: [rules.joins.NAME]")
        return ()
    joins = []
    for name, spec in raw.items():
        where = f"{path}.{name}"
        if reader.identifier(name, where) is None:
            continue
        if not isinstance(spec, dict):
            reader.error(where, "must be a table with table and on")
            continue
        reader.unknown_keys(spec, where, {"table", "on"})
        table = reader.identifier(spec.get("table"), f"{where}.table")
        on = spec.get("on")
        if not isinstance(on, dict) or not on:
            reader.error(f"{where}.on", "must map local columns to the joined table's columns")
            continue
        local = [reader.identifier(column, f"{where}.on") for column in on]
        remote = [reader.identifier(column, f"{where}.on.{local}") for local, column in on.items()]
        if table is None or None in local or None in remote:
            continue
        joins.append(
            Join(
                name=name,
                table=table,
                local_columns=tuple(column for column in local if column),
                remote_columns=tuple(column for column in remote if column),
            )
        )
    return tuple(joins)


def _read_action(
    reader: _Reader, raw: Mapping[str, object], path: str
) -> tuple[Action | None, tuple[tuple[str, Strategy], ...], str | None]:
    action = raw.get("action")
    marker_column = raw.get("marker_column")
    strategies_raw = raw.get("anonymise")
    if action == "delete":
        if strategies_raw is not None:
            reader.error(f"{path}.anonymise", "only goes with action = 'anonymise'")
        if marker_column is not None:
            reader.error(f"{path}.marker_column", "only goes with action = 'anonymise'")
        return "delete", (), None
    if action != "anonymise":
        reader.error(f"{path}.action", f"must be 'delete' or 'anonymise', not {action!r}")
        return None, (), None
    marker = reader.identifier(marker_column, f"{path}.marker_column")
    if not isinstance(strategies_raw, dict) or not strategies_raw:
        reader.error(f"{path}.anonymise", "must map each column to a strategy")
        return "anonymise", (), marker
    strategies = []
    for column, spec in strategies_raw.items():
        where = f"{path}.anonymise.{column}"
        if reader.identifier(column, where) is None:
            continue
        try:
            strategies.append((column, parse_strategy(spec)))
        except ValueError as error:
            reader.error(where, str(error))
    if marker is not None and marker in dict(strategies):
        reader.error(f"{path}.marker_column", "cannot also be an anonymised column")
    return "anonymise", tuple(strategies), marker


def _read_children(
    reader: _Reader, raw: object, path: str, parent_key: tuple[str, ...]
) -> tuple[Child, ...]:
    if not isinstance(raw, list):
        reader.error(path, "must be an array of tables: [[rules.children]]")
        return ()
    children = []
    for index, spec in enumerate(raw):
        where = f"{path}[{index}]"
        if not isinstance(spec, dict):
            reader.error(where, "must be a table with table and foreign_key")
            continue
        reader.unknown_keys(spec, where, {"table", "foreign_key", "references", "children"})
        table = reader.identifier(spec.get("table"), f"{where}.table")
        foreign_key = reader.identifier(spec.get("foreign_key"), f"{where}.foreign_key")
        references_raw = spec.get("references")
        if references_raw is None and len(parent_key) != 1:
            reader.error(
                f"{where}.references",
                "missing: the column of the parent table that foreign_key references "
                "(needed for nested children and composite parent keys)",
            )
        references = (
            reader.identifier(references_raw, f"{where}.references")
            if references_raw is not None
            else (parent_key[0] if len(parent_key) == 1 else None)
        )
        # A child table's key is not declared, so its own children must say what they reference.
        grandchildren = _read_children(reader, spec.get("children", []), f"{where}.children", ())
        if table and foreign_key and references:
            children.append(Child(table, foreign_key, references, grandchildren))
    return tuple(children)


# --- conditions: `column OP literal`, parsed here so that values are bound, never spliced ---

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


def _read_conditions(
    reader: _Reader, raw: object, path: str, join_names: set[str]
) -> tuple[Condition, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        reader.error(path, "must be a list of conditions such as \"status = 'sent'\"")
        return ()
    conditions = []
    for index, text in enumerate(items):
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


# --- schedules: crontab expressions, read as crontab(5) reads them --------------------------

SCHEDULE_KEYWORDS = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class _CronField(NamedTuple):
    name: str
    lowest: int
    highest: int
    star_highest: int  # what `*` goes up to
    names: tuple[str, ...] = ()  # names of the values from the lowest on


_CRON_FIELDS = (
    _CronField("minute", 0, 59, 59),
    _CronField("hour", 0, 23, 23),
    _CronField("day of month", 1, 31, 31),
    _CronField("month", 1, 12, 12, _MONTH_NAMES),
    # 7 is Sunday too, as in crontab; `*` means 0-6.
    _CronField("day of week", 0, 7, 6, _WEEKDAY_NAMES),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_schedule(text: object) -> Schedule:
    """Given a crontab expression (``"30 2 * * *"``) or hourly/daily/weekly/monthly, return the
    Schedule; raise ValueError saying what is wrong.

    Fields mean what crontab(5) says, not what APScheduler 3.x says: weekday 0 and 7 are Sunday
    (names too: ``sun``-``sat``), and when day of month and day of week are both restricted,
    either matching is enough. Example: ``parse_schedule("0 3 * * 0").weekday`` is ``(0,)``.
    """
    keywords = ", ".join(SCHEDULE_KEYWORDS)
    if not isinstance(text, str):
        raise ValueError(f"must be a crontab expression or one of {keywords}, not {text!r}")
    expression = SCHEDULE_KEYWORDS.get(text.strip().lower().removeprefix("@"), text)
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(
            f"{text!r}: expected 5 fields (minute hour day-of-month month day-of-week) or one "
            f"of {keywords}"
        )
    minute, hour, day, month, weekday = (
        _cron_field(part, spec, text) for part, spec in zip(parts, _CRON_FIELDS, strict=True)
    )
    either_day = not parts[2].startswith("*") and not parts[4].startswith("*")
    if not either_day and not any(d <= _DAYS_IN_MONTH[m - 1] for d in day for m in month):
        raise ValueError(f"{text!r}: never happens (no such day in those months)")
    return Schedule(
        text=text,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        weekday=tuple(sorted({value % 7 for value in weekday})),
        either_day=either_day,
    )


def _cron_field(text: str, spec: _CronField, whole: str) -> tuple[int, ...]:
    name = spec.name
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"{whole!r}: {name} step {step_text!r} is not a positive number")
        step = int(step_text) if slash else 1
        if base == "*":
            start, end = spec.lowest, spec.star_highest
        else:
            first, dash, last = base.partition("-")
            if slash and not dash:
                raise ValueError(f"{whole!r}: {name} {item!r}: a step goes with * or a range")
            start = _cron_value(first, spec, whole)
            end = _cron_value(last, spec, whole) if dash else start
            if start > end:
                raise ValueError(f"{whole!r}: {name} range {base!r} goes backwards")
        values.update(range(start, end + 1, step))
    return tuple(sorted(values))


def _cron_value(text: str, spec: _CronField, whole: str) -> int:
    if text.isdigit() and spec.lowest <= int(text) <= spec.highest:
        return int(text)
    if text.lower() in spec.names:
        return spec.names.index(text.lower()) + spec.lowest
    names = f" or {spec.names[0]}-{spec.names[-1]}" if spec.names else ""
    raise ValueError(
        f"{whole!r}: {spec.name} {text!r} is not in {spec.lowest}-{spec.highest}{names}"
    )
