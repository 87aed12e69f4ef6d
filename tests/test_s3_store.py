"""The S3 store against a real S3 API (moto's server, over HTTP): what plan counts and run
deletes on plain, versioned and Object Lock buckets, holds, big purges, the CLI, the audit."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner, Result

from retention.audit.entries import read_entries
from retention.cli import main
from retention.config import Config, S3StoreConfig, parse_config
from retention.errors import ConfigError, ExitCode, RetentionError
from retention.planner import Plan, RulePlan
from retention.rules import expired_as_of, parse_period
from retention.run_report import RuleOutcome
from retention.selection import make_selection
from retention.stores import s3 as s3_module
from retention.stores import s3_delete, s3_listing
from retention.stores.s3 import S3Store, open_s3_store
from tests.s3_proxy import put_many_in_process
from tests.support import audit_table, plan, plan_and_run

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
UTC_ZONE = ZoneInfo("UTC")


@dataclass
class Bucket:
    """A fresh bucket on the test server, and a client on it."""

    name: str
    endpoint: str
    client: Any

    def put(self, *keys: str, body: bytes = b"data") -> None:
        for key in keys:
            self.client.put_object(Bucket=self.name, Key=key, Body=body)

    def put_many(self, keys: list[str]) -> None:
        # Straight into the server's backend: thousands of PUTs over HTTP take half a minute.
        put_many_in_process(self.name, keys, body=b"data")

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in paginator.paginate(Bucket=self.name, Prefix=prefix)
            for item in page.get("Contents", [])
        )

    def versions(self, prefix: str = "") -> list[tuple[str, str, bool]]:
        """Every (key, version id, is a delete marker) under prefix."""
        found = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
            found += [(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])]
            found += [(m["Key"], m["VersionId"], True) for m in page.get("DeleteMarkers", [])]
        return sorted(found)

    def last_modified(self, key: str) -> datetime:
        stamp: datetime = self.client.head_object(Bucket=self.name, Key=key)["LastModified"]
        return stamp.astimezone(UTC)


def new_bucket(endpoint: str, *, versioned: bool = False, locked: bool = False) -> Bucket:
    client = boto3.client("s3", endpoint_url=endpoint)
    name = f"test-{secrets.token_hex(6)}"
    if locked:
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return Bucket(name, endpoint, client)


@pytest.fixture
def bucket(s3_server: str) -> Bucket:
    return new_bucket(s3_server)


@pytest.fixture
def versioned(s3_server: str) -> Bucket:
    return new_bucket(s3_server, versioned=True)


def s3_rule(
    name: str = "exports",
    *,
    prefix: str = "exports/",
    period: str = "1d",
    clock: str = "",
    extra: str = "",
) -> str:
    return f"""
[[rules]]
name = "{name}"
policy = "P-9: exports go after {period}"
category = "exports"
store = "content"
prefix = "{prefix}"
period = "{period}"
{clock}
{extra}
"""


def config_text(
    bucket: Bucket,
    rules: str,
    tmp_path: Path,
    *,
    store_prefix: str = "",
    endpoint: str | None = None,
    audit: bool = False,
    hash_key_file: Path | None = None,
) -> str:
    """A whole config: one S3 store "content" on the bucket, its own state database, audited
    in tmp_path/audit when ``audit``."""
    audit_text = audit_table(tmp_path / "audit") if audit else "[audit]\nenabled = false\n"
    key_line = f'hash_key_file = "{hash_key_file}"' if hash_key_file else ""
    return f"""
[settings]
timezone = "UTC"
max_fraction = 1.0
{key_line}

[stores.content]
kind = "s3"
bucket = "{bucket.name}"
prefix = "{store_prefix}"
endpoint_url = "{endpoint or bucket.endpoint}"
addressing_style = "path"
region = "us-east-1"
max_attempts = 3

{audit_text}
[state]
url = "sqlite:///{tmp_path / "state.sqlite"}"
{rules}
"""


def make_s3_config(bucket: Bucket, rules: str, tmp_path: Path, **options: Any) -> Config:
    return parse_config(config_text(bucket, rules, tmp_path, **options).encode())


def write_config(bucket: Bucket, rules: str, tmp_path: Path, **options: Any) -> Path:
    path = tmp_path / "retention.toml"
    path.write_text(config_text(bucket, rules, tmp_path, **options))
    return path


def cli(config_path: Path, *arguments: str) -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", "--config", str(config_path), *arguments]
    )


def only(the_plan: Plan) -> RulePlan:
    assert len(the_plan.rules) == 1
    return the_plan.rules[0]


def outcome_of(report_outcomes: tuple[RuleOutcome, ...], name: str) -> RuleOutcome:
    return next(outcome for outcome in report_outcomes if outcome.rule == name)


def finished(result: Result) -> dict[str, Any]:
    """The rule.finished log line of a CLI run (one rule)."""
    lines: list[dict[str, Any]] = [
        json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")
    ]
    found = [line for line in lines if line.get("event") == "rule.finished"]
    assert len(found) == 1, result.stderr
    return found[0]


def store_config(bucket: Bucket, **options: Any) -> S3StoreConfig:
    config = make_s3_config(bucket, s3_rule(), Path("/nonexistent"), **options)
    store = config.stores["content"]
    assert isinstance(store, S3StoreConfig)
    return store


def refuse_other_stores(name: str) -> Any:
    raise AssertionError(f"no other store expected, asked for {name!r}")


@pytest.fixture
def s3_store_of() -> Iterator[Any]:
    opened: list[S3Store] = []

    def open_one(bucket: Bucket, *, read_only: bool = False) -> S3Store:
        store = open_s3_store(
            store_config(bucket), read_only=read_only, store_for=refuse_other_stores
        )
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


# --- plain buckets ----------------------------------------------------------------------------


def test_last_modified_clock_purges_what_expired_around_the_cutoff(
    bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("exports/a.csv", "exports/b.csv", body=b"12345")
    bucket.put("exports/2/c.csv", "other/d.csv")
    config = make_s3_config(bucket, s3_rule(), tmp_path)
    stamp = bucket.last_modified("exports/a.csv")

    not_yet = only(plan(config, stamp + DAY - HOUR))
    assert (not_yet.due, not_yet.in_scope, not_yet.future, not_yet.error) == (0, 3, 0, None)

    in_the_past = only(plan(config, stamp - HOUR))
    assert (in_the_past.due, in_the_past.future) == (0, 3)

    the_plan, report = plan_and_run(config, stamp + DAY + HOUR)
    rule_plan = only(the_plan)
    assert (rule_plan.due, rule_plan.in_scope, rule_plan.held) == (3, 3, 0)
    assert dict(rule_plan.details) == {
        "current_versions": 3,
        "noncurrent_versions": 0,
        "delete_markers": 0,
        "bytes": 5 + 5 + 4,
        "locked": 0,
    }
    assert isinstance(rule_plan.oldest, datetime)
    assert abs(rule_plan.oldest - stamp) < timedelta(seconds=5)
    outcome = outcome_of(report.outcomes, "exports")
    assert (outcome.status, outcome.deleted, outcome.failed, outcome.batches) == ("ok", 3, 0, 1)
    assert bucket.keys() == ["other/d.csv"]


def test_key_date_clock_reads_dates_in_keys_and_keeps_keys_without_one(
    bucket: Bucket, tmp_path: Path
) -> None:
    as_of = datetime(2026, 11, 23, 12, tzinfo=UTC)
    last_expired = expired_as_of(parse_period("30d"), as_of, UTC_ZONE).last_date
    assert last_expired is not None
    before, on, after = (last_expired + timedelta(days=offset) for offset in (-1, 0, 1))
    keys = {
        "before": f"prod/nightly/{before:%Y-%m-%d}/db.gz",
        "on": f"prod/nightly/{on:%Y-%m-%d}/db.gz",
        "after": f"prod/nightly/{after:%Y-%m-%d}/db.gz",
        "future": "prod/nightly/2027-01-05/db.gz",
        "latest": "prod/nightly/latest/db.gz",
        "not a date": "prod/nightly/2026-02-30/db.gz",
    }
    bucket.put(*keys.values(), "nightly/2001-01-01/outside-the-store-prefix.gz")
    rules = s3_rule(
        "nightly",
        prefix="nightly/",
        period="30d",
        clock='clock = "key_date"\ndate_pattern = "%Y-%m-%d/"',
    )
    config = make_s3_config(bucket, rules, tmp_path, store_prefix="prod/")

    the_plan, report = plan_and_run(config, as_of)
    rule_plan = only(the_plan)
    assert (rule_plan.due, rule_plan.in_scope, rule_plan.future) == (2, 4, 1)
    assert dict(rule_plan.details)["unmatched"] == 2
    assert rule_plan.oldest == before
    assert outcome_of(report.outcomes, "nightly").deleted == 2
    assert bucket.keys() == sorted(
        [
            keys["after"],
            keys["future"],
            keys["latest"],
            keys["not a date"],
            "nightly/2001-01-01/outside-the-store-prefix.gz",
        ]
    )


def test_a_store_opened_read_only_refuses_to_delete_and_a_dry_run_deletes_nothing(
    bucket: Bucket, tmp_path: Path, s3_store_of: Any
) -> None:
    bucket.put("exports/a.csv", "exports/b.csv")
    config = make_s3_config(bucket, s3_rule(), tmp_path)
    as_of = bucket.last_modified("exports/a.csv") + 2 * DAY
    selection = make_selection(config.rules[0], as_of, UTC_ZONE)
    store = s3_store_of(bucket, read_only=True)
    with pytest.raises(RetentionError, match="read-only"):
        store.purge_batch(selection, after=None, limit=10, dry_run=False, now=as_of, hash_key=None)
    dry = store.purge_batch(selection, after=None, limit=10, dry_run=True, now=as_of, hash_key=None)
    assert (dry.keys, dry.done, dry.more) == (
        (("exports/a.csv", "null"), ("exports/b.csv", "null")),
        0,
        False,
    )
    _plan, report = plan_and_run(config, as_of, dry_run=True)
    assert outcome_of(report.outcomes, "exports").deleted == 2  # what a run would delete
    assert bucket.keys() == ["exports/a.csv", "exports/b.csv"]


def test_unversioned_deletes_carry_the_listed_etag(
    bucket: Bucket, tmp_path: Path, s3_store_of: Any
) -> None:
    bucket.put("exports/a.csv", body=b"first")
    etag = bucket.client.head_object(Bucket=bucket.name, Key="exports/a.csv")["ETag"]
    config = make_s3_config(bucket, s3_rule(), tmp_path)
    as_of = bucket.last_modified("exports/a.csv") + 2 * DAY
    store = s3_store_of(bucket)
    sent: list[dict[str, Any]] = []
    store.client.meta.events.register(
        "provide-client-params.s3.DeleteObjects",
        lambda params, **_: sent.append(params),
    )
    batch = store.purge_batch(
        make_selection(config.rules[0], as_of, UTC_ZONE),
        after=None,
        limit=10,
        dry_run=False,
        now=as_of,
        hash_key=None,
    )
    assert batch.done == 1
    assert sent[0]["Delete"] == {
        "Objects": [{"Key": "exports/a.csv", "VersionId": "null", "ETag": etag}],
        "Quiet": True,
    }


# --- versioned buckets ------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1000, 2], ids=["one-page", "versions-across-pages"])
def test_versioned_bucket_purges_every_version_and_marker_of_expired_keys(
    versioned: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    monkeypatch.setattr(s3_listing, "LIST_PAGE_SIZE", page_size)
    client, name = versioned.client, versioned.name
    today = datetime.now(UTC).date()
    old = "v/2020-01-01/"
    recent = f"v/{today:%Y-%m-%d}/"
    for body in (b"1", b"2", b"3"):
        versioned.put(f"{old}a", body=body)  # one current and two noncurrent versions
    versioned.put(f"{old}b")
    client.delete_object(Bucket=name, Key=f"{old}b")  # a marker over a noncurrent version
    gone = client.put_object(Bucket=name, Key=f"{old}c", Body=b"x")["VersionId"]
    client.delete_object(Bucket=name, Key=f"{old}c")
    client.delete_object(Bucket=name, Key=f"{old}c", VersionId=gone)  # a marker alone
    for body in (b"1", b"2"):
        versioned.put(f"{recent}d", body=body)
    client.delete_object(Bucket=name, Key=f"{recent}d")
    versioned.put("keep/2020-01-01/e")
    kept = versioned.versions(recent) + versioned.versions("keep/")
    rules = s3_rule(
        "versions",
        prefix="v/",
        period="30d",
        clock='clock = "key_date"\ndate_pattern = "%Y-%m-%d/"',
        extra="batch_size = 2",
    )
    config = make_s3_config(versioned, rules, tmp_path)

    the_plan, report = plan_and_run(config, datetime.now(UTC))
    rule_plan = only(the_plan)
    assert rule_plan.due == 6
    assert rule_plan.in_scope == 9
    details = dict(rule_plan.details)
    assert (details["current_versions"], details["noncurrent_versions"]) == (1, 3)
    assert (details["delete_markers"], details["unmatched"]) == (2, 0)
    outcome = outcome_of(report.outcomes, "versions")
    assert (outcome.status, outcome.deleted, outcome.failed) == ("ok", 6, 0)
    # batch_size 2 ends batches on key boundaries only: a (3 versions), b (2), c (1).
    assert outcome.batches == 3
    assert versioned.versions(old) == []
    assert versioned.versions(recent) + versioned.versions("keep/") == kept


def test_a_bucket_whose_versioning_was_suspended_still_loses_its_old_versions(
    versioned: Bucket, tmp_path: Path
) -> None:
    """Only a bucket that was never versioned is listed with ListObjectsV2 (faster on some
    servers); a suspended one still holds versions that only ListObjectVersions shows."""
    client, name = versioned.client, versioned.name
    for body in (b"1", b"2"):
        versioned.put("v/2020-01-01/a", body=body)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    rules = s3_rule(
        "versions",
        prefix="v/",
        period="30d",
        clock='clock = "key_date"\ndate_pattern = "%Y-%m-%d/"',
    )

    the_plan, report = plan_and_run(make_s3_config(versioned, rules, tmp_path), datetime.now(UTC))

    assert dict(only(the_plan).details)["noncurrent_versions"] == 1
    assert outcome_of(report.outcomes, "versions").deleted == 2
    assert versioned.versions("v/") == []


def test_delete_markers_go_by_their_own_clock_or_when_no_version_is_left(
    versioned: Bucket, tmp_path: Path
) -> None:
    client, name = versioned.client, versioned.name
    versioned.put("v/alone")
    versioned.put("v/stays")
    client.delete_object(Bucket=name, Key="v/stays")  # an old marker, below a new version
    first = versioned.versions("v/")
    time.sleep(2.2)
    client.delete_object(Bucket=name, Key="v/alone")  # a new marker over an old version
    versioned.put("v/stays", body=b"new")
    config = make_s3_config(versioned, s3_rule(prefix="v/"), tmp_path)
    stamp = max(
        version["LastModified"]
        for version in client.list_object_versions(Bucket=name, Prefix="v/")["Versions"]
        if version["Key"] == "v/alone"
    ).astimezone(UTC)
    # The cutoff falls between the first writes and the later ones.
    the_plan, report = plan_and_run(config, stamp + DAY + timedelta(seconds=1))
    rule_plan = only(the_plan)
    details = dict(rule_plan.details)
    assert (details["current_versions"], details["noncurrent_versions"]) == (0, 2)
    assert details["delete_markers"] == 2  # the old one, and the new one left alone
    assert outcome_of(report.outcomes, "exports").deleted == 4
    remaining = versioned.versions("v/")
    assert [(key, marker) for key, _version, marker in remaining] == [("v/stays", False)]
    assert remaining[0][1] not in {version for _key, version, _marker in first}


def lone_marker(bucket: Bucket, key: str) -> None:
    """Leave a delete marker with no version under it at ``key``."""
    version = bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"x")["VersionId"]
    bucket.client.delete_object(Bucket=bucket.name, Key=key)
    bucket.client.delete_object(Bucket=bucket.name, Key=key, VersionId=version)


def test_a_lone_delete_marker_goes_by_its_keys_date_not_before(
    versioned: Bucket, tmp_path: Path
) -> None:
    """A marker with no version under it has nothing to follow out: its clock is its key's
    date. As of 2026-11-23 a 7-day rule reaches dumps of 2026-11-15 and before."""
    client, name = versioned.client, versioned.name
    not_yet = "nightly/2026-11-20/orphan.sql.gz"
    future = "nightly/2027-01-05/orphan.sql.gz"
    for key in (not_yet, future, "nightly/2026-11-01/orphan.sql.gz"):
        lone_marker(versioned, key)
    versioned.put("nightly/2026-11-02/app.sql.gz")
    client.delete_object(Bucket=name, Key="nightly/2026-11-02/app.sql.gz")
    rules = s3_rule(
        "backups",
        prefix="nightly/",
        period="7d",
        clock='clock = "key_date"\ndate_pattern = "nightly/%Y-%m-%d/"',
    )
    config = make_s3_config(versioned, rules, tmp_path)
    as_of = datetime(2026, 11, 23, 12, tzinfo=UTC)

    planned = only(plan(config, as_of))
    the_plan, report = plan_and_run(config, as_of)

    for rule_plan in (planned, only(the_plan)):
        assert (rule_plan.due, rule_plan.future, rule_plan.in_scope) == (3, 1, 5)
        assert dict(rule_plan.details)["delete_markers"] == 2
    assert outcome_of(report.outcomes, "backups").deleted == 3
    assert [(key, marker) for key, _version, marker in versioned.versions()] == [
        (not_yet, True),
        (future, True),
    ]


def test_a_lone_delete_marker_goes_by_its_own_last_modified_not_before(
    versioned: Bucket, tmp_path: Path
) -> None:
    client, name = versioned.client, versioned.name
    lone_marker(versioned, "exports/gone.csv")
    [marker] = client.list_object_versions(Bucket=name, Prefix="exports/")["DeleteMarkers"]
    stamp = marker["LastModified"].astimezone(UTC)
    config = make_s3_config(versioned, s3_rule(), tmp_path)

    planned = only(plan(config, stamp + HOUR))
    the_plan, report = plan_and_run(config, stamp + HOUR)

    assert (planned.due, only(the_plan).due, planned.in_scope) == (0, 0, 1)
    assert outcome_of(report.outcomes, "exports").deleted == 0
    assert versioned.versions() == [("exports/gone.csv", marker["VersionId"], True)]

    the_plan, report = plan_and_run(config, stamp + DAY + HOUR)

    assert only(the_plan).due == 1
    assert outcome_of(report.outcomes, "exports").deleted == 1
    assert versioned.versions() == []


# --- Object Lock --------------------------------------------------------------------------------


def test_object_lock_protects_versions_without_failing_the_run(
    s3_server: str, tmp_path: Path
) -> None:
    locked = new_bucket(s3_server, locked=True)
    client, name = locked.client, locked.name
    client.put_object(Bucket=name, Key="l/legal", Body=b"1", ObjectLockLegalHoldStatus="ON")
    client.put_object(
        Bucket=name,
        Key="l/governance",
        Body=b"1",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + 30 * DAY,
    )
    locked.put("l/free-1", "l/free-2")
    config_path = write_config(locked, s3_rule(prefix="l/"), tmp_path, audit=True)
    as_of = (locked.last_modified("l/free-1") + 2 * DAY).isoformat()

    planned = cli(config_path, "plan", "--as-of", as_of, "--output", "json")
    assert planned.exit_code == 0, planned.output
    document = json.loads(planned.stdout)["rules"][0]
    assert (document["due"], document["held"], document["objects"]["locked"]) == (2, 2, 2)

    run = cli(config_path, "run", "--yes", "--allow-future-as-of", "--as-of", as_of)
    assert run.exit_code == 0, run.output
    line = finished(run)
    assert (line["status"], line["deleted"], line["held"], line["failed"]) == ("ok", 2, 2, 0)
    assert locked.keys() == ["l/governance", "l/legal"]


def test_a_delete_marker_over_a_locked_version_stays_so_the_object_stays_deleted(
    s3_server: str, tmp_path: Path
) -> None:
    locked = new_bucket(s3_server, locked=True)
    client, name = locked.client, locked.name
    client.put_object(Bucket=name, Key="l/hidden", Body=b"1", ObjectLockLegalHoldStatus="ON")
    client.delete_object(Bucket=name, Key="l/hidden")  # a marker on top of the locked version
    config_path = write_config(locked, s3_rule(prefix="l/"), tmp_path)
    as_of = (datetime.now(UTC) + 2 * DAY).isoformat()

    run = cli(config_path, "run", "--yes", "--allow-future-as-of", "--as-of", as_of)

    assert run.exit_code == 0, run.output
    assert sorted((key, marker) for key, _version, marker in locked.versions("l/")) == [
        ("l/hidden", False),
        ("l/hidden", True),
    ]
    assert locked.keys("l/") == []  # still deleted for every reader


def test_a_delete_refused_by_object_lock_counts_as_held_not_failed(
    s3_server: str, tmp_path: Path, s3_store_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = new_bucket(s3_server, locked=True)
    locked.client.put_object(
        Bucket=locked.name, Key="l/legal", Body=b"1", ObjectLockLegalHoldStatus="ON"
    )
    locked.put("l/free")
    config = make_s3_config(locked, s3_rule(prefix="l/"), tmp_path)
    as_of = locked.last_modified("l/free") + 2 * DAY
    store = s3_store_of(locked)
    # As if GetObjectLockConfiguration had said nothing: the delete itself is refused.
    monkeypatch.setattr(store, "_has_object_lock", lambda: False)
    batch = store.purge_batch(
        make_selection(config.rules[0], as_of, UTC_ZONE),
        after=None,
        limit=10,
        dry_run=False,
        now=as_of,
        hash_key=None,
    )
    assert (len(batch.keys), batch.done, batch.held, batch.failed, batch.errors) == (2, 1, 1, 0, ())
    assert locked.keys() == ["l/legal"]


# --- many objects -----------------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "batches"), [(10_000, 1), (1000, 3)])
def test_thousands_of_expired_objects_go_in_requests_of_at_most_a_thousand(
    bucket: Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int,
    batches: int,
) -> None:
    keys = [f"exports/{index:05d}.csv" for index in range(2500)]
    bucket.put_many(keys)
    bucket.put("other/kept.csv")
    requests: list[int] = []
    real_delete_chunk = s3_delete.delete_chunk

    def counting(client: Any, bucket_name: str, entries: Any) -> Any:
        requests.append(len(entries))
        return real_delete_chunk(client, bucket_name, entries)

    monkeypatch.setattr(s3_delete, "delete_chunk", counting)
    config = make_s3_config(bucket, s3_rule(extra=f"batch_size = {batch_size}"), tmp_path)
    as_of = bucket.last_modified(keys[-1]) + 2 * DAY
    the_plan, report = plan_and_run(config, as_of)
    assert only(the_plan).due == 2500
    outcome = outcome_of(report.outcomes, "exports")
    assert (outcome.status, outcome.deleted, outcome.failed, outcome.batches) == (
        "ok",
        2500,
        0,
        batches,
    )
    assert sorted(requests, reverse=True) == (
        [1000, 1000, 500] if batches == 1 else [1000] * 2 + [500]
    )
    assert bucket.keys() == ["other/kept.csv"]


def test_a_batch_resumes_after_the_last_key_it_examined_in_a_fresh_store(
    bucket: Bucket, tmp_path: Path, s3_store_of: Any
) -> None:
    keys = [f"exports/{index}.csv" for index in range(5)]
    bucket.put(*keys)
    config = make_s3_config(bucket, s3_rule(), tmp_path)
    as_of = bucket.last_modified(keys[-1]) + 2 * DAY
    selection = make_selection(config.rules[0], as_of, UTC_ZONE)
    seen: list[tuple[object, ...]] = []
    after = None
    for _batch in range(5):
        # A new store each time: nothing carried over but resume_after.
        batch = s3_store_of(bucket).purge_batch(
            selection, after=after, limit=2, dry_run=True, now=as_of, hash_key=None
        )
        seen += batch.keys
        after = batch.resume_after
        if not batch.more:
            break
    assert seen == [(key, "null") for key in keys]


def test_a_long_run_of_kept_objects_ends_a_batch_with_no_keys_but_more_to_list(
    bucket: Bucket, tmp_path: Path, s3_store_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_listing, "LIST_PAGE_SIZE", 1)
    monkeypatch.setattr(s3_module, "EXAMINED_PAGES_PER_BATCH", 2)
    bucket.put(*(f"exports/a-2099-01-0{day}.csv" for day in range(1, 6)))
    bucket.put("exports/z-2001-01-01.csv")
    rules = s3_rule(clock='clock = "key_date"\ndate_pattern = "%Y-%m-%d"')
    config = make_s3_config(bucket, rules, tmp_path)
    selection = make_selection(config.rules[0], datetime.now(UTC), UTC_ZONE)
    store = s3_store_of(bucket)
    batches = []
    after = None
    while True:
        batch = store.purge_batch(
            selection, after=after, limit=1, dry_run=False, now=datetime.now(UTC), hash_key=None
        )
        batches.append((batch.keys, batch.more))
        after = batch.next_after
        if not batch.more:
            break
    assert batches[0] == ((), True)
    assert [keys for keys, _more in batches if keys] == [(("exports/z-2001-01-01.csv", "null"),)]
    assert len(bucket.keys()) == 5


# --- holds, samples, audit ----------------------------------------------------------------------


def test_holds_by_prefix_and_by_key_keep_objects(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("exports/42/a.csv", "exports/42/b.csv", "exports/420/c.csv", "exports/7.csv")
    bucket.put("exports/8.csv")
    config_path = write_config(bucket, s3_rule(), tmp_path, audit=True)
    by_prefix = cli(
        config_path,
        "hold",
        "add",
        "--rule",
        "exports",
        "--prefix",
        "exports/42/",
        "--reason",
        "case 12",
    )
    assert by_prefix.exit_code == 0, by_prefix.output
    by_key = cli(
        config_path, "hold", "add", "--rule", "exports", "--key", "exports/7.csv", "--reason", "c"
    )
    assert by_key.exit_code == 0, by_key.output
    as_of = (bucket.last_modified("exports/8.csv") + 2 * DAY).isoformat()

    planned = cli(config_path, "plan", "--as-of", as_of, "--output", "json")
    assert planned.exit_code == 0, planned.output
    document = json.loads(planned.stdout)["rules"][0]
    assert (document["due"], document["held"], document["in_scope"]) == (2, 3, 5)

    run = cli(config_path, "run", "--yes", "--allow-future-as-of", "--as-of", as_of)
    assert run.exit_code == 0, run.output
    assert bucket.keys() == ["exports/42/a.csv", "exports/42/b.csv", "exports/7.csv"]


def test_plan_shows_object_keys_only_when_asked(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("exports/alice.smith@example.com.csv")
    config_path = write_config(bucket, s3_rule(), tmp_path)
    as_of = (bucket.last_modified("exports/alice.smith@example.com.csv") + 2 * DAY).isoformat()

    hashed = cli(config_path, "plan", "--as-of", as_of)
    assert hashed.exit_code == 0, hashed.output
    assert "alice" not in hashed.output
    assert "current version" in hashed.output  # "1 current version", "2 current versions"
    hashed_json = json.loads(cli(config_path, "plan", "--as-of", as_of, "--output", "json").stdout)
    samples = hashed_json["rules"][0]["sample_keys"]
    assert len(samples) == 1
    assert len(samples[0]) == 16

    shown = cli(config_path, "plan", "--as-of", as_of, "--show-keys")
    assert shown.exit_code == 0, shown.output
    assert "exports/alice.smith@example.com.csv" in shown.stdout


def test_runs_on_objects_are_in_the_audit_trail_and_it_verifies(
    versioned: Bucket, tmp_path: Path
) -> None:
    for body in (b"1", b"2"):
        versioned.put("exports/a.csv", body=body)
    versioned.put("exports/b.csv")
    config_path = write_config(versioned, s3_rule(extra="batch_size = 2"), tmp_path, audit=True)
    as_of = (versioned.last_modified("exports/b.csv") + 2 * DAY).isoformat()
    run = cli(config_path, "run", "--yes", "--allow-future-as-of", "--as-of", as_of)
    assert run.exit_code == 0, run.output
    assert versioned.versions("exports/") == []

    entries = [stored.content for stored in read_entries(tmp_path / "audit")]
    intents = [entry for entry in entries if entry["type"] == "batch.intent"]
    results = [entry for entry in entries if entry["type"] == "batch.result"]
    assert [(entry["dataset"], entry["selected"]) for entry in intents] == [
        (versioned.name, 2),
        (versioned.name, 1),
    ]
    assert [(entry["status"], entry["done"]) for entry in results] == [
        ("committed", 2),
        ("committed", 1),
    ]
    # Entries hold counts and hashes, never an object key (the rule's own prefix is config: its
    # definition, in run.started, says it).
    assert "exports/a.csv" not in json.dumps(entries)
    assert "exports/b.csv" not in json.dumps(entries)

    verified = cli(config_path, "audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_existing_keys_tells_which_versions_are_still_there(
    versioned: Bucket, s3_store_of: Any
) -> None:
    client, name = versioned.client, versioned.name
    first = client.put_object(Bucket=name, Key="x/a", Body=b"1")["VersionId"]
    second = client.put_object(Bucket=name, Key="x/a", Body=b"2")["VersionId"]
    marker = client.delete_object(Bucket=name, Key="x/a")["VersionId"]
    client.delete_object(Bucket=name, Key="x/a", VersionId=first)
    store = s3_store_of(versioned)
    asked = [("x/a", first), ("x/a", second), ("x/a", marker), ("x/missing", second)]
    assert store.existing_keys(name, ("key", "version_id"), asked) == {
        ("x/a", second),
        ("x/a", marker),
    }


# --- unreachable ------------------------------------------------------------------------------


def test_an_unreachable_endpoint_exits_69_with_one_line(bucket: Bucket, tmp_path: Path) -> None:
    config_path = write_config(bucket, s3_rule(), tmp_path, endpoint="http://127.0.0.1:9")
    for command in (["plan"], ["run", "--yes"]):
        result = cli(config_path, *command)
        assert result.exit_code == ExitCode.STORE_UNAVAILABLE, result.output
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if "unreachable" in line]
        assert errors, result.output
        assert "S3 store 'content'" in errors[0]
        assert bucket.name in errors[0]


def test_a_missing_bucket_exits_69_saying_so(s3_server: str, tmp_path: Path) -> None:
    missing = Bucket(f"missing-{secrets.token_hex(4)}", s3_server, None)
    result = cli(write_config(missing, s3_rule(), tmp_path), "plan")
    assert result.exit_code == ExitCode.STORE_UNAVAILABLE, result.output
    assert "no such bucket" in result.output
    assert "Traceback" not in result.output


def test_credentials_come_from_a_credentials_file(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.put("exports/a.csv")
    credentials = tmp_path / "credentials"
    credentials.write_text("[backup]\naws_access_key_id = key\naws_secret_access_key = secret\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = store_config(bucket)
    with_file = S3StoreConfig(
        **{**store.__dict__, "credentials_file": credentials, "profile": "backup"}
    )
    opened = open_s3_store(with_file, read_only=True, store_for=refuse_other_stores)
    try:
        opened.ping()
    finally:
        opened.close()
    without = open_s3_store(store, read_only=True, store_for=refuse_other_stores)
    try:
        with pytest.raises(RetentionError, match="no credentials"):
            without.ping()
    finally:
        without.close()


def test_credentials_come_from_the_service_managers_credentials_directory(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's LoadCredential=s3:...: the file is read in $CREDENTIALS_DIRECTORY."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "s3").write_text("[default]\naws_access_key_id = k\naws_secret_access_key = s\n")
    store = S3StoreConfig(**{**store_config(bucket).__dict__, "credentials_credential": "s3"})

    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    opened = open_s3_store(store, read_only=True, store_for=refuse_other_stores)
    try:
        opened.ping()
    finally:
        opened.close()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError) as refused:
        open_s3_store(store, read_only=True, store_for=refuse_other_stores)
    (issue,) = refused.value.issues
    assert issue.path == f"stores.{store.name}.credentials_credential"
    assert "$CREDENTIALS_DIRECTORY" in issue.message
