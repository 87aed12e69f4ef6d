"""The pure side of object stores and backup folders: their config, dates read from keys and
file names, the expiry test the stores apply, holds on objects, the order of a cross-store rule
and its subjects' rule, and how the executor drives stores that list more than they purge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from retention.config import Config, Rule, load_config, parse_config
from retention.documents import plan_document
from retention.errors import ConfigError, ConfigIssue, RetentionError
from retention.executor import execute
from retention.holds import Hold, object_held, parse_hold_target
from retention.planner import Plan, RulePlan, build_plan, display_key
from retention.render import render_plan, render_report
from retention.rules import (
    compile_date_pattern,
    expired_as_of,
    is_expired,
    is_future,
    parse_period,
    read_date,
)
from retention.run_report import RunReport
from retention.selection import KeyValues, Selection
from retention.store_protocol import (
    Batch,
    BeforeCommit,
    BeforeWrite,
    KeyFilter,
    RecordStore,
    Survey,
)

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
UTC_ZONE = ZoneInfo("UTC")

STORES = """
[settings]
timezone = "UTC"
max_fraction = 1.0

[stores.app]
kind = "sql"
url = "sqlite://"

[stores.content]
kind = "s3"
bucket = "acme-content"
prefix = "prod/"
endpoint_url = "http://127.0.0.1:4566"
addressing_style = "path"

[stores.backups]
kind = "files"
root = "/var/backups/app"
timezone = "Europe/Paris"
"""

CUSTOMERS = """
[[rules]]
name = "customer-content"
store = "app"
table = "customers"
key = "customer_id"
clock = "contract.ended_at"
joins = { contract = { table = "contracts", on = { contract_id = "contract_id" } } }
period = "90d"
action = "delete"
"""

CUSTOMER_FILES = """
[[rules]]
name = "customer-files"
store = "content"
subjects = "customer-content"
subject_prefix = "customers/{customer_id}/"
"""

NIGHTLY = """
[[rules]]
name = "nightly"
store = "content"
prefix = "nightly/"
clock = "key_date"
date_pattern = "nightly/%Y-%m-%d/"
period = "7d"
"""

LOCAL = """
[[rules]]
name = "local-backups"
store = "backups"
glob = "**/*.sql.gz"
clock = "name_date"
date_pattern = "db-%Y-%m-%d"
period = "7d"
"""


def config(*rules: str) -> Config:
    return parse_config((STORES + "".join(rules)).encode())


def issues_of(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(text.encode())
    return {issue.path: issue.message for issue in raised.value.issues}


# --- config -------------------------------------------------------------------------------------


def test_an_s3_store_and_a_files_store_are_read_with_their_defaults() -> None:
    loaded = config()
    content, backups = loaded.stores["content"], loaded.stores["backups"]

    assert content.kind == "s3"
    assert (content.bucket, content.prefix, content.addressing_style) == (
        "acme-content",
        "prod/",
        "path",
    )
    assert (content.max_concurrency, content.region, content.credentials_file) == (8, None, None)
    assert backups.kind == "files"
    assert backups.root == Path("/var/backups/app")
    assert backups.timezone == PARIS


def test_an_object_rule_names_its_bucket_as_dataset_and_keys_objects_by_version() -> None:
    (nightly,) = config(NIGHTLY).rules

    assert nightly.objects is not None
    assert (nightly.table, nightly.key) == ("acme-content", ("key", "version_id"))
    assert nightly.objects.prefix == "nightly/"
    assert nightly.clock_text == "key_date(nightly/%Y-%m-%d/)"
    assert nightly.batch_size == 10_000
    assert nightly.action == "delete"


def test_a_files_rule_keys_files_by_path_and_globs_everything_by_default() -> None:
    (local,) = config(LOCAL).rules
    (every,) = config(
        '[[rules]]\nname = "all"\nstore = "backups"\nperiod = "7d"\nclock = "mtime"\n'
    ).rules

    assert (local.table, local.key) == ("/var/backups/app", ("path",))
    assert local.objects is not None
    assert local.objects.glob == "**/*.sql.gz"
    assert every.objects is not None
    assert every.objects.glob == "**/*"
    assert every.clock_text == "mtime"


def test_a_cross_store_rule_takes_period_clock_and_schedule_from_its_subjects_rule() -> None:
    loaded = config(
        CUSTOMERS.replace('action = "delete"', 'action = "delete"\nschedule = "@weekly"'),
        CUSTOMER_FILES,
    )
    files = next(rule for rule in loaded.rules if rule.name == "customer-files")

    assert files.objects is not None
    assert files.objects.subjects is not None
    assert files.objects.subjects.rule.name == "customer-content"
    assert files.period == parse_period("90d")
    assert files.schedule.text == "@weekly"
    assert files.clock_text == "subjects of customer-content (contract.ended_at)"


def test_a_subject_prefix_is_filled_with_the_subjects_key_and_refuses_a_slash() -> None:
    loaded = config(CUSTOMERS, CUSTOMER_FILES)
    files = next(rule for rule in loaded.rules if rule.name == "customer-files")
    assert files.objects is not None
    assert files.objects.subjects is not None
    subjects = files.objects.subjects

    assert subjects.prefix_for((42,)) == "customers/42/"
    assert subjects.prefix_for(("a/b",)) is None
    assert subjects.prefix_for(("",)) is None


@pytest.mark.parametrize(
    ("rule", "path", "fragment"),
    [
        ('table = "x"\nperiod = "7d"', "rules[0].table", "not for rules on 's3' stores"),
        ('period = "7d"\nclock = "mtime"', "rules[0].clock", "'last_modified' or 'key_date'"),
        ('period = "7d"\nclock = "key_date"', "rules[0].date_pattern", "missing"),
        ('period = "7d"\ndate_pattern = "%Y-%m-%d"', "rules[0].date_pattern", "only goes with"),
        (
            'period = "7d"\nclock = "key_date"\ndate_pattern = "%Y-%m"',
            "rules[0].date_pattern",
            "needs %Y, %m and %d",
        ),
        ('period = "7d"\naction = "anonymise"', "rules[0].action", "can only be deleted"),
        ('period = "7d"\nglob = "*.gz"', "rules[0].glob", "with prefix, not glob"),
        ('period = "0d"', "rules[0]", "match_all = true"),
        ('period = "7d"\nprefix = "/nightly/"', "rules[0].prefix", "do not start with '/'"),
        ('subjects = "nobody"\nsubject_prefix = "c/{id}/"', "rules[0].subjects", "not the name"),
    ],
)
def test_object_rule_errors_name_their_key_path(rule: str, path: str, fragment: str) -> None:
    text = STORES + f'[[rules]]\nname = "r"\nstore = "content"\n{rule}\n'

    assert fragment in issues_of(text)[path]


def test_a_period_of_zero_on_a_prefix_is_a_narrowed_rule_not_a_match_all() -> None:
    (rule,) = config(
        '[[rules]]\nname = "tmp"\nstore = "content"\nprefix = "tmp/"\nperiod = "0d"\n'
    ).rules

    assert rule.period == parse_period("0d")


def test_cross_store_rule_errors_are_all_reported() -> None:
    text = (
        STORES
        + CUSTOMERS
        + """
[[rules]]
name = "customer-files"
store = "content"
subjects = "customer-content"
subject_prefix = "customers/{customer}"
period = "1y"

[[rules]]
name = "local-subjects"
store = "backups"
subjects = "customer-content"
subject_prefix = "customers/{customer_id}/"
"""
    )
    issues = issues_of(text)

    assert "must end with '/'" in issues["rules[1].subject_prefix"]
    assert "comes from the subjects' rule" in issues["rules[1].period"]
    assert "S3 prefixes only" in issues["rules[2].subjects"]


def test_a_subject_prefix_must_use_the_subjects_key_columns() -> None:
    text = STORES + CUSTOMERS + CUSTOMER_FILES.replace("{customer_id}", "{email}")

    assert "{customer_id}" in issues_of(text)["rules[1].subject_prefix"]


@pytest.mark.parametrize(
    ("prefix", "fragment"),
    [
        ("customers/{customer_id:.1}/", "'{customer_id:.1}' is not a plain {column}"),
        ("customers/{customer_id!r}/", "'{customer_id!r}' is not a plain {column}"),
        ("customers/{customer_id.real}/", "'{customer_id.real}' is not a plain {column}"),
        ("customers/{customer_id[0]}/", "'{customer_id[0]}' is not a plain {column}"),
        ("customers/{}/{customer_id}/", "'{}' is not a plain {column}"),
        ("customers/{0}/{customer_id}/", "'{0}' is not a plain {column}"),
        ("customers/{customer_id/", "unmatched '{'"),
        ("customers}/{customer_id}/", "unmatched '}'"),
    ],
)
def test_a_subject_prefix_takes_plain_column_placeholders_only(prefix: str, fragment: str) -> None:
    """A format spec, conversion, attribute or index could give several subjects one prefix
    (``{customer_id:.1}`` makes 1, 10 and 12 all ``customers/1/``)."""
    text = STORES + CUSTOMERS + CUSTOMER_FILES.replace("customers/{customer_id}/", prefix)

    issues = issues_of(text)

    assert fragment in issues["rules[1].subject_prefix"]
    assert set(issues) == {"rules[1].subject_prefix"}


COMPOSITE = CUSTOMERS.replace('key = "customer_id"', 'key = ["tenant", "customer_id"]')


@pytest.mark.parametrize(
    ("prefix", "fragment"),
    [
        ("customers/{customer_id}/", "lacks {tenant}: every key column"),
        ("t/{tenant}/", "lacks {customer_id}: every key column"),
        ("t/{tenant}{customer_id}/", "{tenant} and {customer_id} are in one path segment"),
        ("t/{tenant}-{customer_id}/", "{tenant} and {customer_id} are in one path segment"),
        ("t/{tenant}/{customer_id}/{email}/", "{email} is not a key column"),
    ],
)
def test_a_subject_prefix_gives_every_subject_a_prefix_of_its_own(
    prefix: str, fragment: str
) -> None:
    """Two subjects sharing one prefix would each reach the other's objects, whether or not the
    other is due, and one object would be counted and recorded twice."""
    text = STORES + COMPOSITE + CUSTOMER_FILES.replace("customers/{customer_id}/", prefix)

    message = issues_of(text)["rules[1].subject_prefix"]

    assert fragment in message
    assert "'...{tenant}/{customer_id}/'" in message


def test_a_subject_prefix_is_rendered_without_str_format() -> None:
    prefix = "t/{{raw}}-{tenant}/c-{customer_id}/x/{tenant}/"
    loaded = config(COMPOSITE, CUSTOMER_FILES.replace("customers/{customer_id}/", prefix))
    files = next(rule for rule in loaded.rules if rule.name == "customer-files")
    assert files.objects is not None
    assert files.objects.subjects is not None

    subjects = files.objects.subjects

    assert subjects.prefix_for(("eu", 7)) == "t/{raw}-eu/c-7/x/eu/"
    assert subjects.prefix_for(("{tenant}", 7)) == "t/{raw}-{tenant}/c-7/x/{tenant}/"


def test_two_cross_store_rules_cannot_share_one_subjects_rule() -> None:
    second = CUSTOMER_FILES.replace('"customer-files"', '"customer-files-2"')
    text = STORES + CUSTOMERS + CUSTOMER_FILES + second

    assert "already has" in issues_of(text)["rules[2].subjects"]


@pytest.mark.parametrize(
    ("store", "path", "fragment"),
    [
        ('kind = "files"\nroot = "/"', "stores.bad.root", "refusing /"),
        ('kind = "files"\nroot = "/tmp/.."', "stores.bad.root", "refusing /"),
        ('kind = "files"\nroot = "backups"', "stores.bad.root", "absolute path"),
        ('kind = "files"', "stores.bad.root", "missing"),
        ('kind = "s3"\nbucket = "Bad_Bucket"', "stores.bad.bucket", "not a valid S3 bucket"),
        ('kind = "s3"\nbucket = "ok-bucket"\nsecret = "x"', "stores.bad.secret", "unknown key"),
        (
            'kind = "s3"\nbucket = "ok-bucket"\nendpoint_url = "localhost:9000"',
            "stores.bad.endpoint_url",
            "http://",
        ),
        (
            'kind = "s3"\nbucket = "ok-bucket"\naddressing_style = "dns"',
            "stores.bad.addressing_style",
            "'path'",
        ),
        (
            'kind = "s3"\nbucket = "ok-bucket"\ncredentials_file = "/a"\n'
            'credentials_credential = "b"',
            "stores.bad",
            "not both",
        ),
    ],
)
def test_store_errors_name_their_key_path(store: str, path: str, fragment: str) -> None:
    text = f'[settings]\ntimezone = "UTC"\n[stores.bad]\n{store}\n'

    assert fragment in issues_of(text)[path]


@pytest.mark.parametrize(
    "root", ['root = "/"', 'root = "/tmp/.."', 'root = "backups"', 'root = "a\\u0000b"', ""]
)
def test_a_refused_backup_root_is_one_error_not_one_more_per_rule(root: str) -> None:
    """docs/config.md: one mistake is one error. A backup folder whose root is refused was left
    out of the stores, and each rule on it said `no store named 'bad' (declare it as
    [stores.bad])`, of a store declared a few lines above."""
    text = (
        f'[settings]\ntimezone = "UTC"\n[stores.bad]\nkind = "files"\n{root}\n'
        '[[rules]]\nname = "dumps"\nstore = "bad"\nglob = "*.gz"\nperiod = "7d"\n'
        '[[rules]]\nname = "logs"\nstore = "bad"\nglob = "*.log"\nperiod = "30d"\n'
    )

    assert list(issues_of(text)) == ["stores.bad.root"]


# --- ordering -----------------------------------------------------------------------------------


def test_a_cross_store_rule_runs_right_before_its_subjects_rule_whatever_the_config_order() -> None:
    loaded = config(CUSTOMERS, NIGHTLY, CUSTOMER_FILES)

    assert [rule.name for rule in loaded.rules_named(())] == [
        "customer-files",
        "customer-content",
        "nightly",
    ]


@pytest.mark.parametrize("asked", ["customer-content", "customer-files"])
def test_asking_for_one_of_the_pair_brings_the_other(asked: str) -> None:
    loaded = config(NIGHTLY, CUSTOMER_FILES, CUSTOMERS)

    assert [rule.name for rule in loaded.rules_named((asked,))] == [
        "customer-files",
        "customer-content",
    ]


# --- dates in keys and expiry ---------------------------------------------------------------------


def test_a_date_pattern_reads_the_first_real_date_in_a_key() -> None:
    pattern = compile_date_pattern("nightly/%Y-%m-%d/")

    assert read_date(pattern, "nightly/2024-02-29/db.dump") == date(2024, 2, 29)
    assert read_date(pattern, "old/nightly/2025-02-29/db.dump") is None
    assert read_date(pattern, "weekly/2024-02-29/db.dump") is None


def test_a_date_pattern_with_hours_reads_a_wall_time() -> None:
    pattern = compile_date_pattern("db-%Y%m%dT%H%M")

    assert read_date(pattern, "db-20261123T0230.sql.gz") == datetime(2026, 11, 23, 2, 30)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("%Y-%m", "needs %Y, %m and %d"),
        ("%Y-%m-%d-%b", "%b is not supported"),
        # A repeated directive is not "not supported": it says which, and why once.
        ("%Y%Y-%m-%d", "%Y appears twice"),
        ("%Y-%m-%d-%Y", "%Y appears twice"),
        ("%Y-%m-%d %H%H", "%H appears twice"),
        ("%Y-%m-%d%", "ends with a lone %"),
        ("%Y-%m-%dT%M", "%M and %S need %H"),
    ],
)
def test_a_bad_date_pattern_says_why(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        compile_date_pattern(text)


def test_literal_characters_of_a_pattern_are_not_regular_expressions() -> None:
    pattern = compile_date_pattern("db.%Y-%m-%d")

    assert read_date(pattern, "db.2026-01-02") == date(2026, 1, 2)
    assert read_date(pattern, "dbx2026-01-02") is None


def test_an_instant_is_expired_exactly_when_its_period_has_passed() -> None:
    expired = expired_as_of(parse_period("7d"), AS_OF, UTC_ZONE)

    assert is_expired(AS_OF - timedelta(days=7), expired, UTC_ZONE)
    assert not is_expired(AS_OF - timedelta(days=7) + timedelta(microseconds=1), expired, UTC_ZONE)


def test_a_date_from_a_key_is_expired_once_its_whole_day_plus_the_period_has_passed() -> None:
    # A backup named 2026-11-16 may have been taken at 23:59 that day: 7 days later is the
    # end of 2026-11-23, not yet over at noon.
    expired = expired_as_of(parse_period("7d"), AS_OF, UTC_ZONE)

    assert is_expired(date(2026, 11, 15), expired, UTC_ZONE)
    assert not is_expired(date(2026, 11, 16), expired, UTC_ZONE)


def test_a_year_after_a_leap_day_in_a_key_ends_on_the_28th() -> None:
    as_of = datetime(2025, 3, 1, 12, tzinfo=UTC)
    expired = expired_as_of(parse_period("1y"), as_of, UTC_ZONE)

    assert is_expired(date(2024, 2, 29), expired, UTC_ZONE)
    assert not is_expired(date(2024, 3, 1), expired, UTC_ZONE)


def test_a_wall_time_from_a_key_is_read_in_the_stores_zone() -> None:
    # 7 days before 2026-11-23 12:00 UTC is 13:00 in Paris (UTC+1 in November).
    expired = expired_as_of(parse_period("7d"), AS_OF, PARIS)

    assert is_expired(datetime(2026, 11, 16, 13, 0), expired, PARIS)
    assert not is_expired(datetime(2026, 11, 16, 13, 0, 1), expired, PARIS)


def test_an_ambiguous_wall_time_is_read_late_so_it_never_expires_early() -> None:
    # 02:30 happens twice in Paris on 2026-10-25: 00:30 UTC and 01:30 UTC.
    as_of = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
    expired = expired_as_of(parse_period("0d"), as_of, PARIS)

    assert not is_expired(datetime(2026, 10, 25, 2, 30), expired, PARIS)


def test_clocks_after_as_of_are_future_in_either_form() -> None:
    assert is_future(AS_OF + timedelta(seconds=1), AS_OF, UTC_ZONE)
    assert not is_future(AS_OF, AS_OF, UTC_ZONE)
    assert is_future(date(2026, 11, 24), AS_OF, UTC_ZONE)
    assert not is_future(date(2026, 11, 23), AS_OF, UTC_ZONE)


# --- holds on objects -----------------------------------------------------------------------------


def hold(kind: str, **values: object) -> Hold:
    return Hold(
        id=1,
        rule="nightly",
        kind=kind,  # type: ignore[arg-type]
        reason="court order",
        created_at=AS_OF,
        created_by="legal",
        **values,  # type: ignore[arg-type]
    )


def test_a_prefix_hold_protects_its_prefix_and_nothing_beside_it() -> None:
    holds = [hold("prefix", prefix="customers/42/")]

    assert object_held(holds, "customers/42/invoice.pdf")
    assert not object_held(holds, "customers/420/invoice.pdf")


def test_a_key_hold_on_an_object_protects_that_whole_key() -> None:
    holds = [hold("key", keys=(("nightly/2026-01-01/db.dump",),))]

    assert object_held(holds, "nightly/2026-01-01/db.dump")
    assert not object_held(holds, "nightly/2026-01-01/db.dump.sha256")


def test_object_holds_take_keys_whole_and_refuse_conditions() -> None:
    (nightly,) = config(NIGHTLY).rules

    assert parse_hold_target(nightly, ("a/b/c.dump",), None, None) == (
        "key",
        (("a/b/c.dump",),),
        None,
        None,
    )
    assert parse_hold_target(nightly, (), None, "a/")[0] == "prefix"
    with pytest.raises(ValueError, match="--key or --prefix"):
        parse_hold_target(nightly, (), "size > 3", None)


# --- the executor with stores that list more than they purge ------------------------------------


class ListingStore:
    """An object store in memory: pages of ``page`` listed entries, ``due`` marks the ones to
    delete, ``refused`` the ones the store refuses (a per-key error)."""

    def __init__(self, entries: Sequence[tuple[str, bool]], page: int, refused: set[str]) -> None:
        self.entries = list(entries)
        self.page = page
        self.refused = refused
        self.deleted: list[str] = []
        self.intents: list[tuple[KeyValues, ...]] = []
        self.crash_after: int | None = None

    def check_rule(self, rule: Rule) -> list[ConfigIssue]:
        return []

    def period_values(self, rule: Rule) -> tuple[object, ...]:
        return ()

    def survey(self, selection: Selection, sample_size: int) -> Survey:
        due = [(key, "null") for key, is_due in self.entries if is_due]
        return Survey(
            due=len(due),
            oldest=None,
            sample_keys=tuple(due[:sample_size]),
            # A cross-store rule's scope is its subjects': no fraction of its own.
            in_scope=0 if selection.subjects is not None else len(self.entries),
            details=(("current_versions", len(due)), ("bytes", 2048 * len(due))),
        )

    def purge_batch(
        self,
        selection: Selection,
        *,
        after: KeyValues | None,
        limit: int,
        dry_run: bool,
        now: datetime,
        hash_key: bytes | None,
        before_write: BeforeWrite | None = None,
        only: KeyFilter | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> Batch:
        assert only is None
        start = 0 if after is None else int(str(after[0])) + 1
        listed = self.entries[start : start + self.page]
        keys = tuple((key, "null") for key, is_due in listed if is_due)
        if keys and before_write is not None:
            before_write(keys)
            self.intents.append(keys)
        refused = [key for key, _ in keys if key in self.refused]
        if self.crash_after is not None and start >= self.crash_after:
            raise RuntimeError("listing broke")
        if not dry_run:
            self.deleted += [key for key, _ in keys if key not in self.refused]
        return Batch(
            keys=keys,
            done=len(keys) - len(refused),
            resume_after=(start + len(listed) - 1,),
            more=start + len(listed) < len(self.entries),
            failed=len(refused),
            errors=(f"AccessDenied: {len(refused)}",) if refused else (),
            # Keys here look like customers/<id>/...: the subject is the second part.
            kept_subjects=tuple((int(key.split("/")[1]),) for key in refused if "/" in key),
            # A page lists each of its subjects whole.
            visited_subjects=tuple(
                dict.fromkeys((int(key.split("/")[1]),) for key, _ in listed if "/" in key)
            ),
        )

    def existing_keys(
        self,
        table_name: str,
        key_columns: Sequence[str],
        keys: Sequence[KeyValues],
        marker_column: str | None = None,
    ) -> set[KeyValues]:
        return set()


class Recording:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    def warning(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    def error(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


def plan_with(loaded: Config, stores: dict[str, RecordStore]) -> Plan:
    return build_plan(
        loaded,
        loaded.rules_named(()),
        stores.__getitem__,
        AS_OF,
        hash_key=b"k",
        keyed=True,
    )


def run(plan: Plan, stores: dict[str, RecordStore], dry_run: bool = False) -> RunReport:
    return execute(
        plan,
        stores.__getitem__,
        now=lambda: AS_OF,
        dry_run=dry_run,
        hash_key=None,
        logger=Recording(),
    )


def test_batches_with_nothing_due_do_not_end_the_listing() -> None:
    # Due entries only on the third page: a store-driven listing must go on past empty pages.
    entries = [(str(index), index >= 20) for index in range(25)]
    store = ListingStore(entries, page=10, refused=set())
    loaded = config(NIGHTLY)
    stores: dict[str, RecordStore] = {"content": store}

    report = run(plan_with(loaded, stores), stores)

    assert report.outcomes[0].status == "ok"
    assert report.outcomes[0].deleted == 5
    assert report.outcomes[0].batches == 1
    assert store.deleted == [str(index) for index in range(20, 25)]


def test_records_a_store_refuses_make_the_rule_fail_with_their_count() -> None:
    entries = [(str(index), True) for index in range(6)]
    store = ListingStore(entries, page=4, refused={"1", "5"})
    loaded = config(NIGHTLY)
    stores: dict[str, RecordStore] = {"content": store}

    report = run(plan_with(loaded, stores), stores)
    (outcome,) = report.outcomes

    assert (outcome.status, outcome.deleted, outcome.failed, outcome.skipped) == (
        "failed",
        4,
        2,
        0,
    )
    assert outcome.error == "2 could not be purged: AccessDenied: 1"
    assert int(report.exit_code) == 3
    assert "FAILED" in render_report(report)


class SubjectRows:
    """The SQL side of a cross-store rule, in memory: it only counts what it is asked to purge."""

    def __init__(self, due: int) -> None:
        self.due = due
        self.purged: list[int] = []

    def check_rule(self, rule: Rule) -> list[ConfigIssue]:
        return []

    def period_values(self, rule: Rule) -> tuple[object, ...]:
        return ()

    def survey(self, selection: Selection, sample_size: int) -> Survey:
        return Survey(due=self.due, oldest=None, sample_keys=(), in_scope=self.due * 10)

    def purge_batch(
        self,
        selection: Selection,
        *,
        after: KeyValues | None,
        limit: int,
        dry_run: bool,
        now: datetime,
        hash_key: bytes | None,
        before_write: BeforeWrite | None = None,
        only: KeyFilter | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> Batch:
        if after is not None:
            return Batch(keys=(), done=0)
        held = {key for hold in selection.holds for key in hold.keys}
        keys = tuple((index,) for index in range(1, self.due + 1) if (str(index),) not in held)
        if only is not None:
            accepted = only(keys)
            keys = tuple(key for key in keys if key in accepted)
        if not dry_run:
            self.purged += [key[0] for key in keys]
        return Batch(keys=keys, done=len(keys))

    def existing_keys(
        self,
        table_name: str,
        key_columns: Sequence[str],
        keys: Sequence[KeyValues],
        marker_column: str | None = None,
    ) -> set[KeyValues]:
        return set()


def test_a_subjects_row_stays_while_one_of_its_objects_does() -> None:
    entries = [("customers/1/a", True), ("customers/2/b", True)]
    objects = ListingStore(entries, 10, {"customers/2/b"})
    rows = SubjectRows(due=2)
    stores: dict[str, RecordStore] = {"content": objects, "app": rows}
    loaded = config(CUSTOMERS, CUSTOMER_FILES)

    report = run(plan_with(loaded, stores), stores)
    by_rule = {outcome.rule: outcome for outcome in report.outcomes}

    assert [outcome.rule for outcome in report.outcomes] == ["customer-files", "customer-content"]
    assert by_rule["customer-files"].status == "failed"
    assert by_rule["customer-files"].kept_subjects == ((2,),)
    assert by_rule["customer-content"].status == "ok"
    assert (by_rule["customer-content"].deleted, by_rule["customer-content"].skipped) == (1, 1)
    assert rows.purged == [1]
    assert int(report.exit_code) == 3


def test_subjects_rows_all_stay_when_their_objects_rule_broke_off() -> None:
    entries = [(f"customers/{index}/a", True) for index in range(1, 5)]
    objects = ListingStore(entries, 2, set())
    objects.crash_after = 2
    rows = SubjectRows(due=4)
    stores: dict[str, RecordStore] = {"content": objects, "app": rows}

    report = run(plan_with(config(CUSTOMERS, CUSTOMER_FILES), stores), stores)

    assert [outcome.status for outcome in report.outcomes] == ["failed", "failed"]
    assert "did not purge every object" in str(report.outcomes[1].error)
    assert rows.purged == []


def test_subjects_rows_go_once_their_objects_went() -> None:
    objects = ListingStore([("customers/1/a", True), ("customers/2/b", True)], 10, set())
    rows = SubjectRows(due=2)
    stores: dict[str, RecordStore] = {"content": objects, "app": rows}

    report = run(plan_with(config(CUSTOMERS, CUSTOMER_FILES), stores), stores)

    assert [outcome.status for outcome in report.outcomes] == ["ok", "ok"]
    assert rows.purged == [1, 2]


def test_a_dry_run_walks_both_sides_of_a_cross_store_rule_and_writes_nothing() -> None:
    objects = ListingStore([("customers/1/a", True)], 10, {"customers/1/a"})
    rows = SubjectRows(due=1)
    stores: dict[str, RecordStore] = {"content": objects, "app": rows}

    report = run(plan_with(config(CUSTOMERS, CUSTOMER_FILES), stores), stores, dry_run=True)

    assert report.outcomes[1].status == "ok"
    assert (objects.deleted, rows.purged) == ([], [])


def test_a_cross_store_rule_shares_the_brake_of_its_subjects_rule() -> None:
    objects = ListingStore([("customers/1/a", True)], 10, set())
    rows = SubjectRows(due=2)
    stores: dict[str, RecordStore] = {"content": objects, "app": rows}
    loaded = config(
        CUSTOMERS.replace('action = "delete"', 'action = "delete"\nmax_delete = 1'), CUSTOMER_FILES
    )

    report = run(plan_with(loaded, stores), stores)

    assert [outcome.status for outcome in report.outcomes] == ["braked", "braked"]
    assert "--allow-over-limit customer-content" in str(report.outcomes[0].error)
    assert objects.deleted == []


def test_the_plan_shows_object_details_in_text_and_json() -> None:
    entries = [("nightly/2026-01-01/db.dump", True), ("nightly/2026-11-22/db.dump", False)]
    store = ListingStore(entries, 10, set())
    stores: dict[str, RecordStore] = {"content": store}

    plan = plan_with(config(NIGHTLY), stores)
    document = plan_document(plan)
    text = render_plan(plan, "UTC")

    assert document["rules"][0]["objects"] == {"current_versions": 1, "bytes": 2048}  # type: ignore[index]
    assert "1 current version, 2.0 KiB" in text
    assert "nightly/2026-01-01" not in text


def test_show_keys_puts_keys_in_clear_and_says_so() -> None:
    store = ListingStore([("nightly/2026-01-01/db.dump", True)], 10, set())
    stores: dict[str, RecordStore] = {"content": store}
    loaded = config(NIGHTLY)

    plan = build_plan(
        loaded, loaded.rules, stores.__getitem__, AS_OF, hash_key=b"k", keyed=True, show_keys=True
    )

    assert plan.rules[0].samples == ("nightly/2026-01-01/db.dump",)
    assert "in clear" in render_plan(plan, "UTC")
    assert plan_document(plan)["sample_hashing"] == "clear"


def test_display_key_shows_versions_but_not_the_null_version() -> None:
    (nightly,) = config(NIGHTLY).rules
    (customers,) = config(CUSTOMERS).rules

    assert display_key(nightly, ("a/b.tar", "null")) == "a/b.tar"
    assert display_key(nightly, ("a/b.tar", "3HL4kqtJ")) == "a/b.tar @3HL4kqtJ"
    assert display_key(customers, (42,)) == "42"
    assert display_key(customers, (7, 2)) == "7/2"


def test_rule_plan_brake_of_a_cross_store_rule_ignores_the_fraction() -> None:
    loaded = config(CUSTOMERS, CUSTOMER_FILES)
    files = loaded.rules_named(())[0]

    assert RulePlan(files, None, due=5, in_scope=0).brake is None


class BrokenStore(ListingStore):
    def survey(self, selection: Selection, sample_size: int) -> Survey:
        raise RetentionError("S3 said InternalError: We encountered an internal error")


def test_a_rule_whose_store_fails_to_survey_fails_alone() -> None:
    broken = BrokenStore([], 10, set())
    rows = SubjectRows(due=2)
    stores: dict[str, RecordStore] = {"content": broken, "app": rows}
    loaded = config(NIGHTLY, CUSTOMERS)

    plan = plan_with(loaded, stores)
    by_rule = {rule_plan.rule.name: rule_plan for rule_plan in plan.rules}

    assert by_rule["nightly"].error == "S3 said InternalError: We encountered an internal error"
    assert not by_rule["nightly"].unavailable
    assert (by_rule["customer-content"].error, by_rule["customer-content"].due) == (None, 2)


def test_a_relative_root_is_relative_to_the_config_file_never_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_directory = tmp_path / "etc" / "retention"
    config_directory.mkdir(parents=True)
    path = config_directory / "retention.toml"
    path.write_text(
        '[settings]\ntimezone = "UTC"\n[stores.b]\nkind = "files"\nroot = "../backups"\n'
    )
    monkeypatch.chdir(tmp_path)

    store = load_config(path).stores["b"]

    assert store.root == tmp_path / "etc" / "backups"


def test_a_relative_root_that_climbs_to_slash_is_refused(tmp_path: Path) -> None:
    depth = len(tmp_path.parts)
    path = tmp_path / "retention.toml"
    climb = "/".join([".."] * depth)
    path.write_text(f'[settings]\ntimezone = "UTC"\n[stores.b]\nkind = "files"\nroot = "{climb}"\n')

    with pytest.raises(ConfigError) as raised:
        load_config(path)

    assert "refusing /" in raised.value.issues[0].message
