"""The parsed configuration: frozen value objects, and the constants their defaults come from."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from retention.anonymise import Strategy
from retention.errors import UsageError
from retention.rules import Period
from retention.subject_prefix import (
    PrefixPart,
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
UTC_ZONE = ZoneInfo("UTC")
SUPPORTED_URL = re.compile(r"(sqlite|postgresql\+psycopg|mysql\+pymysql|mariadb\+pymysql)://")
# What a URL that SUPPORTED_URL refuses is told.
SUPPORTED_URL_FORMS = (
    "use sqlite:///PATH, postgresql+psycopg://... or mysql+pymysql://... "
    "(the drivers retention ships with)"
)

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

    timezone: ZoneInfo = UTC_ZONE
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
