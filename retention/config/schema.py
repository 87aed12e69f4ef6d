"""The config's shape declared once, with pydantic: every table, key, type, default and range.

From this declaration come the validation of every config file (``retention.config`` checks a
file against it before its readers build the value objects), the JSON Schema (``retention config
schema``, for editors; written by compile.py), the commented sample (``retention config
example``) and the check that docs/config.md lists every key. Each type says in words what it
expects (``Expect``), so that an error reads ``must be a whole number from 1 to 50000, not 0``
rather than pydantic's own sentence; rules between the keys of one table (``Choice``) are
declared here too.

Importing pydantic and building these models takes 0.11-0.14 s of CPU, which loading a config
does not pay: ``python -m retention.config.compile`` writes what validation needs of this
declaration as pydantic-core schemas (retention/config/compiled.json, checked against this file by
the tests), and retention.config.validation validates with pydantic-core alone.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from retention.config import model, stores
from retention.config.expect import Choice, Expect, choices_config
from retention.config.model import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_DELETE,
    DEFAULT_MAX_FRACTION,
    MAX_BATCH_SIZE,
)
from retention.config.object_rules import DEFAULT_OBJECT_BATCH_SIZE
from retention.wording import printable_class

# The readers' own patterns, anchored: JSON Schema patterns match anywhere in the string.
IDENTIFIER = f"^{model.IDENTIFIER.pattern}$"
RULE_NAME = f"^{model.RULE_NAME.pattern}$"
BUCKET = f"^{stores.BUCKET.pattern}$"
# "90s", "15m", "2h", "1d", "1h30m": each unit at most once, in that order.
DURATION = r"^(\d+d(\d+h)?(\d+m)?(\d+s)?|\d+h(\d+m)?(\d+s)?|\d+m(\d+s)?|\d+s)$"
# A period has a unit ("90d", "1y6mo", "P1Y"): a bare number is refused.
PERIOD = r"[A-Za-z]"
NOT_BLANK = r"\S"
NO_LEADING_SLASH = r"^($|[^/])"
LARGEST_MAX_DELETE = 10**12
_PLAIN = "a plain identifier (letters, digits, _)"

Zone = Annotated[str, Expect("a time zone name such as 'Europe/Paris'")]
Identifier = Annotated[
    str,
    StringConstraints(pattern=IDENTIFIER),
    Expect(_PLAIN, mismatch="{value} is not " + _PLAIN),
]
Text = Annotated[str, StringConstraints(pattern=NOT_BLANK), Expect("a string")]
# Words that plans, `audit show`, the reports and the audit trail print as written: refused with
# what str.isprintable() refuses (as hold reasons are), so that no newline forges a line, no
# escape sequence rewrites the terminal and no bidi override or invisible character hides text.
_SHOWN = printable_class()
Label = Annotated[
    str,
    # Printable characters, one of them at least not a space.
    StringConstraints(pattern=f"^{_SHOWN}*{printable_class(but=' ')}{_SHOWN}*$"),
    Expect(
        "a string",
        mismatch="{value} holds a control or invisible character (a newline or tab, an escape "
        "sequence, a bidi override, a zero-width or no-break space): it is printed and audited "
        "as written; write it on one line, with ordinary spaces",
    ),
]
Duration = Annotated[
    str,
    StringConstraints(pattern=DURATION),
    Expect("a duration such as '30s', '15m', '2h' or '1d'"),
]
Period = Annotated[
    str,
    StringConstraints(pattern=PERIOD),
    Expect(
        "a string such as '90d', '1y' or 'P1Y6M' ('0d' for no retention)",
        mismatch="{value} has no unit; write e.g. '90d' (days) or '1y' (years) — units: y, mo, "
        "w, d, h, min, s, or ISO 8601 like 'P1Y'",
        missing="(e.g. '90d', '1y', 'P1Y6M'; '0d' for no retention)",
    ),
]
ColumnOrJoined = Annotated[
    str,
    StringConstraints(pattern=f"^({model.IDENTIFIER.pattern}\\.)?{model.IDENTIFIER.pattern}$"),
    Expect(
        "a column name ('ended_at', or 'contract.ended_at' through a join)",
        mismatch="{value} is not a column ('ended_at', or 'contract.ended_at' through a join)",
    ),
]
# A check-in URL holds its check's secret token: the errors never show the value.
HttpUrl = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[^/\s]"),
    Expect("an http:// or https:// URL", mismatch="must be an http:// or https:// URL with a host"),
]
Columns = Annotated[
    Identifier | Annotated[list[Identifier], Field(min_length=1)],
    Expect("a column name or a non-empty list of column names"),
]
Clock = Annotated[
    ColumnOrJoined | Annotated[list[ColumnOrJoined], Field(min_length=1)],
    Expect(
        "a column ('ended_at', 'contract.ended_at' through a join) or a non-empty list of "
        "columns whose latest non-NULL value counts"
    ),
]
_Condition = Annotated[
    str, StringConstraints(pattern=NOT_BLANK), Expect("a string such as \"status = 'sent'\"")
]
Conditions = Annotated[
    _Condition | list[_Condition],
    Expect("a condition or a list of conditions such as \"status = 'sent'\""),
]
ObjectPrefix = Annotated[
    str,
    StringConstraints(pattern=NO_LEADING_SLASH),
    Expect("a string", mismatch="S3 keys do not start with '/': drop the leading '/'"),
]
Glob = Annotated[
    str,
    StringConstraints(pattern=NO_LEADING_SLASH),
    Expect("a string", mismatch="must stay inside the root: no leading '/', no '..'"),
]


class Table(BaseModel):
    """A TOML table: unknown keys are errors, as the readers say."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)
    choices: ClassVar[tuple[Choice, ...]] = ()


class SettingsTable(Table):
    """Settings shared by every rule."""

    choices = (Choice("not_both", ("hash_key_file", "hash_key_credential"), at="hash_key_file"),)
    model_config = choices_config(*choices)

    timezone: Zone = Field("UTC", examples=["Europe/Paris"])
    """The calendar periods are counted on (an IANA zone name): "1 year" is a calendar step in
    this zone, and a date value is a day in this zone."""
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE)
    """The default number of rows per batch (one transaction) for every rule."""
    hash_key_file: Text | None = Field(None, examples=["/etc/retention/hash.key"])
    """A file holding the secret key of keyed hashes (relative: to the config file's folder)."""
    hash_key_credential: Text | None = Field(None, examples=["hash-key"])
    """The same key, read from $CREDENTIALS_DIRECTORY/NAME (systemd LoadCredential=)."""
    max_delete: int = Field(DEFAULT_MAX_DELETE, ge=1, le=LARGEST_MAX_DELETE)
    """Brake: a rule with more rows due than this purges nothing in that run (exit 3)."""
    max_fraction: float = Field(DEFAULT_MAX_FRACTION, gt=0, le=1)
    """Brake: a rule whose due rows are more than this share of its rows in scope purges
    nothing in that run (exit 3)."""


class AuditTable(Table):
    """The signed audit trail: where it lives and where its keys come from."""

    choices = (
        Choice("not_both", ("hmac_key_file", "hmac_key_credential"), at="hmac_key_file"),
        Choice("not_both", ("signing_key_file", "signing_key_credential"), at="signing_key_file"),
    )
    model_config = choices_config(*choices)

    enabled: bool = True
    """false lets `run` purge with no trail at all: for tests and throw-away data only."""
    directory: Text | None = Field(None, examples=["/var/lib/retention/audit"])
    """Where the trail lives (required when enabled)."""
    public_keys_file: Text | None = Field(None, examples=["/var/lib/retention/public-keys.json"])
    """The verification keys auditors check signatures against (default:
    <directory>/public-keys.json)."""
    hmac_key_file: Text | None = Field(None, examples=["/etc/retention/audit-hmac.key"])
    """The secret that turns record locators into keyed hashes (or hmac_key_credential)."""
    hmac_key_credential: Text | None = Field(None, examples=["audit-hmac-key"])
    """The same secret, read from $CREDENTIALS_DIRECTORY/NAME."""
    signing_key_file: Text | None = Field(None, examples=["/etc/retention/signing.pem"])
    """The Ed25519 private key that signs checkpoints (or signing_key_credential)."""
    signing_key_credential: Text | None = Field(None, examples=["audit-signing-key"])
    """The same key, read from $CREDENTIALS_DIRECTORY/NAME."""


class StateTable(Table):
    """The state database (run ledger, leases, legal holds); at most one of its keys.
    Without it: var/state.sqlite in the config file's folder."""

    choices = (Choice("at_most_one", ("url", "url_env", "url_credential")),)
    model_config = choices_config(*choices)

    url: Text | None = Field(None, examples=["sqlite:///var/state.sqlite"])
    """The database URL (sqlite:///, postgresql+psycopg://, mysql+pymysql://)."""
    url_env: Text | None = Field(None, examples=["RETENTION_STATE_URL"])
    """An environment variable holding the URL."""
    url_credential: Text | None = Field(None, examples=["state-url"])
    """A file in $CREDENTIALS_DIRECTORY holding the URL."""


class DaemonTable(Table):
    """How `retention daemon` runs."""

    timezone: Zone | None = Field(None, examples=["Europe/Paris"])
    """The zone schedules are read in (default: settings.timezone; never the host's own)."""
    metrics_address: Text = "127.0.0.1"
    """The IP address Prometheus metrics are served on."""
    metrics_port: int | None = Field(None, ge=1, le=65535, examples=[9464])
    """Serve Prometheus metrics on this port; no port, no metrics."""
    heartbeat: Duration = "1h"
    """A signed checkpoint in the audit trail this often, even when idle."""
    lease_ttl: Duration = "2m"
    """How long a rule's lease outlives a daemon that died (at least 2s)."""
    overdue_grace: Duration = "1d"
    """retention_overdue_records counts records past their cutoff by more than this."""
    overdue_refresh: Duration = "15m"
    """How often that count is taken (a read-only plan)."""


class CheckinsTable(Table):
    """Monitoring check-ins (healthchecks.io, Uptime Kuma, Cronitor)."""

    start: HttpUrl | None = Field(None, examples=["https://hc-ping.com/UUID/start"])
    """Pinged when a run starts purging (after its plan)."""
    success: HttpUrl | None = Field(None, examples=["https://hc-ping.com/UUID"])
    """Pinged when every rule of the run ended ok."""
    fail: HttpUrl | None = Field(None, examples=["https://hc-ping.com/UUID/fail"])
    """Pinged otherwise: a rule failed, was braked or stopped, or the run could not start."""
    timeout: Duration = "10s"
    """How long one ping may take; at most 1m."""


class SqlStoreTable(Table):
    """A SQL database; exactly one of url, url_env and url_credential."""

    choices = (
        Choice(
            "exactly_one",
            ("url", "url_env", "url_credential"),
            hint="url_env names an environment variable holding the URL, url_credential a file "
            "in $CREDENTIALS_DIRECTORY; keep passwords out of the TOML",
        ),
    )
    model_config = choices_config(*choices)

    kind: Literal["sql"]
    """The kind of store."""
    url: Text | None = Field(None, examples=["sqlite:///var/app.sqlite"])
    """The URL (sqlite:///PATH, postgresql+psycopg://..., mysql+pymysql://...); keep
    passwords out of the TOML."""
    url_env: Text | None = Field(None, examples=["APP_DATABASE_URL"])
    """An environment variable holding the URL."""
    url_credential: Text | None = Field(None, examples=["app-database-url"])
    """A file in $CREDENTIALS_DIRECTORY holding the URL."""
    timezone: Zone = Field("UTC", examples=["Europe/Paris"])
    """The zone that naive timestamps stored in this database are in."""


class S3StoreTable(Table):
    """An S3-compatible bucket (or a prefix of one)."""

    choices = (Choice("not_both", ("credentials_file", "credentials_credential")),)
    model_config = choices_config(*choices)

    kind: Literal["s3"]
    """The kind of store."""
    bucket: Annotated[
        str,
        StringConstraints(pattern=BUCKET),
        Expect("a bucket name", mismatch="{value} is not a valid S3 bucket name"),
    ] = Field(examples=["backups"])
    """The bucket (S3's naming rules: 3-63 characters, lower case, digits, '.', '-')."""
    prefix: ObjectPrefix = Field("", examples=["db/"])
    """Only keys under this prefix belong to the store. No leading '/'."""
    region: Text | None = Field(None, examples=["eu-west-3"])
    """The bucket's region (default: boto3's)."""
    endpoint_url: HttpUrl | None = Field(None, examples=["https://minio.internal:9000"])
    """The server of an S3-compatible store; leave it out for AWS itself."""
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """path: the bucket in the URL path (most self-hosted servers); virtual: in the host name."""
    credentials_file: Text | None = Field(None, examples=["/etc/retention/s3-credentials"])
    """A shared-credentials file (INI, as ~/.aws/credentials). Without it nor
    credentials_credential, boto3's usual chain applies."""
    credentials_credential: Text | None = Field(None, examples=["s3-credentials"])
    """The same file, read from $CREDENTIALS_DIRECTORY/NAME."""
    profile: Text | None = Field(None, examples=["default"])
    """The section of the credentials file to use."""
    max_concurrency: int = Field(8, ge=1, le=64)
    """How many requests run at once."""
    max_attempts: int = Field(8, ge=1, le=20)
    """Attempts per request when the server throttles or a connection drops."""
    timezone: Zone = Field("UTC", examples=["Europe/Paris"])
    """The zone of wall times read from keys by a date_pattern with %H."""


class FilesStoreTable(Table):
    """A local folder of backups."""

    kind: Literal["files"]
    """The kind of store."""
    root: Text = Field(examples=["/srv/backups/db"])
    """The folder (relative: to the config file's folder); never '/'."""
    timezone: Zone = Field("UTC", examples=["Europe/Paris"])
    """The zone of wall times read from file paths by a date_pattern with %H."""


Store = Annotated[
    SqlStoreTable | S3StoreTable | FilesStoreTable,
    Field(discriminator="kind"),
    Expect(
        "a table: [stores.NAME]",
        mismatch="unknown store kind {value} (supported: 'sql', 's3', 'files')",
        missing="(supported: 'sql', 's3', 'files')",
    ),
]


class JoinTable(Table):
    """A many-to-one join: each row of the rule's table has at most one row in `table`."""

    table: Identifier
    """The joined table."""
    on: Annotated[
        dict[Identifier, Identifier],
        Expect("a table mapping local columns to the joined table's columns"),
    ] = Field(min_length=1)
    """Local columns mapped to the joined table's columns."""


class ChildTable(Table):
    """Rows of `table` whose `foreign_key` references a purged row; deleted first."""

    table: Identifier
    """The child table."""
    foreign_key: Identifier
    """Its column that references the parent."""
    references: Identifier | None = None
    """The parent's column that foreign_key references (default: the rule's single key)."""
    children: list[ChildTable] = []
    """Their own children, deleted before them."""


class FixedStrategy(Table):
    """Every value becomes this one."""

    fixed: str | int | float | bool


_STRATEGIES = "null, hash, hash:N, mask_email, truncate_ip, year_only, or { fixed = VALUE }"
Strategy = Annotated[
    Annotated[
        str,
        StringConstraints(pattern=r"^(null|hash|hash:[0-9]+|mask_email|truncate_ip|year_only)$"),
        Expect(
            "a strategy", mismatch="unknown anonymise strategy {value} (known: " + _STRATEGIES + ")"
        ),
    ]
    | FixedStrategy,
    Expect("an anonymise strategy (" + _STRATEGIES + ")"),
]
Schedule = Annotated[
    str,
    StringConstraints(pattern=NOT_BLANK),
    Expect("a crontab expression ('30 2 * * *') or one of hourly, daily, weekly, monthly"),
]


class _RuleLimits(Table):
    name: Annotated[
        str,
        StringConstraints(pattern=RULE_NAME),
        Expect("a rule name", mismatch="{value}: use lower-case letters, digits, '-', '_' or '.'"),
    ] = Field(examples=["logs"])
    """A unique name: lower-case letters, digits, '-', '_' and '.'."""
    policy: Label | None = Field(None, examples=["002 §6.1: « Log de connexion : 1 an »"])
    """The policy reference and its quote, shown in plans."""
    category: Label | None = Field(None, examples=["connection logs"])
    """The data category, shown in plans."""
    store: Text = Field(examples=["app"])
    """A store declared as [stores.NAME]."""
    max_delete: int | None = Field(None, ge=1, le=LARGEST_MAX_DELETE, examples=[100000])
    """Brake: overrides settings.max_delete for this rule."""
    max_fraction: float | None = Field(None, gt=0, le=1, examples=[0.2])
    """Brake: overrides settings.max_fraction for this rule."""
    match_all: bool = False
    """true: a period of 0 with nothing narrowing it means every record, on purpose."""
    schedule: Schedule = "daily"
    """When the daemon runs the rule: a crontab expression ("30 2 * * *") or hourly, daily,
    weekly, monthly, in [daemon].timezone."""
    jitter: Duration = Field("0s", examples=["10m"])
    """A random delay up to this long before each scheduled run."""


class TableRule(_RuleLimits):
    """A rule on a SQL store: the rows of `table` whose clock is older than `period`."""

    table: Identifier = Field(examples=["connection_logs"])
    """The table whose rows expire."""
    key: Columns = Field(examples=["id"])
    """The columns that identify a row: the primary key or a NOT NULL unique key."""
    clock: Clock = Field(examples=["logged_at"])
    """When the period starts: a column, join.column, or a list whose latest non-NULL value
    counts."""
    period: Period = Field(examples=["1y"])
    """How long rows are kept after the clock ("90d", "1y", "P1Y6M"; "0d": no retention)."""
    period_column: ColumnOrJoined | None = Field(None, examples=["retention_years"])
    """A per-row period that overrides `period`."""
    period_unit: Literal["y", "mo", "w", "d"] | None = Field(None, examples=["y"])
    """The unit of a numeric period_column."""
    where: Conditions = Field([], examples=[["status = 'sent'"]])
    """Conditions, all ANDed: `column OP literal`, IS [NOT] NULL, [NOT] IN (...)."""
    where_sql: Text | None = Field(None, examples=["archived_at IS NOT NULL"])
    """A raw SQL filter, ANDed with the rest."""
    joins: Annotated[
        dict[Identifier, JoinTable], Expect("a table of named joins: [rules.joins.NAME]")
    ] = Field({}, examples=[{"account": {"table": "accounts", "on": {"account_id": "id"}}}])
    """Many-to-one joins used by clock, period_column, where and erase_by."""
    action: Literal["delete", "anonymise"] = Field(examples=["delete"])
    """What happens to expired rows."""
    anonymise: (
        Annotated[dict[Identifier, Strategy], Expect("a table mapping each column to a strategy")]
        | None
    ) = Field(None, examples=[{"email": "mask_email"}])
    """With action = "anonymise": the strategy of each column."""
    marker_column: Identifier | None = Field(None, examples=["anonymised_at"])
    """With action = "anonymise": a column set when a row is anonymised."""
    children: Annotated[list[ChildTable], Expect("an array of tables: [[rules.children]]")] = Field(
        [], examples=[[{"table": "log_details", "foreign_key": "log_id"}]]
    )
    """Dependent rows deleted first (action = "delete" only)."""
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE, examples=[500])
    """Rows per batch for this rule (default: settings.batch_size)."""
    erase_by: ColumnOrJoined | None = Field(None, examples=["account_id"])
    """The column naming the person a row is about, for `retention erase`."""
    drop_partitions: bool = True
    """On a partitioned table, drop whole expired partitions; false: row batches only."""


class ObjectRule(_RuleLimits):
    """A rule on an S3 bucket or a backup folder: objects or files are deleted."""

    prefix: ObjectPrefix = Field("", examples=["nightly/"])
    """S3 only: the keys under this prefix (under the store's own)."""
    glob: Glob | None = Field(None, examples=["**/*.sql.gz"])
    """Backup folders only: the files reached, by their path under root (default "**/*")."""
    clock: Literal["last_modified", "key_date", "mtime", "name_date"] | None = Field(
        None, examples=["last_modified"]
    )
    """last_modified or key_date (S3), mtime or name_date (files, the default being mtime)."""
    date_pattern: Text | None = Field(None, examples=["nightly/%Y-%m-%d/"])
    """With key_date or name_date: where the date is in the key or path."""
    period: Period | None = Field(None, examples=["7d"])
    """How long objects are kept (required, except on cross-store rules)."""
    action: Annotated[
        Literal["delete"],
        Expect("'delete'", mismatch="objects and files can only be deleted, not {value}"),
    ] = "delete"
    """The only action on objects and files."""
    subjects: Text | None = Field(None, examples=["customer-content"])
    """Cross-store rules: the SQL rule whose records own these objects."""
    subject_prefix: Text | None = Field(None, examples=["content/{id}/"])
    """Cross-store rules: one record's prefix, each key column a {placeholder}."""
    batch_size: int | None = Field(
        None, ge=1, le=MAX_BATCH_SIZE, examples=[DEFAULT_OBJECT_BATCH_SIZE]
    )
    """Objects or files per batch (default 10000)."""


class ConfigFile(Table):
    """The retention daemon's configuration (docs/config.md)."""

    settings: SettingsTable | None = None
    """Settings shared by every rule."""
    audit: AuditTable | None = None
    """The signed audit trail."""
    state: StateTable | None = None
    """The state database."""
    daemon: DaemonTable | None = None
    """How `retention daemon` runs."""
    checkins: CheckinsTable | None = None
    """Monitoring check-ins."""
    stores: dict[Identifier, Store] = {}
    """The stores rules purge: [stores.NAME], kind "sql", "s3" or "files"."""
    rules: Annotated[
        list[TableRule | ObjectRule],
        Expect("an array of tables: write each rule as [[rules]]"),
    ] = []
    """One [[rules]] per commitment, run in file order."""
