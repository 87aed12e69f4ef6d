"""The demo's objects and files: dated dumps in backup folders and buckets, and the customers'
files under the prefixes that a cross-store rule reaches."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit

from dateutil.relativedelta import relativedelta
from sqlalchemy import (
    MetaData,
    Table,
    create_engine,
    select,
)

from retention.config import Config, FilesStoreConfig, Rule, S3StoreConfig, SqlStoreConfig
from retention.demo.fake import (
    PARIS,
    _boundaries,
)
from retention.runtime.secrets import store_url
from retention.wording import counted

# A backup folder holding this file was made by the demo, which may empty and refill it.
DEMO_FOLDER_MARKER = ".retention-demo"
# A bucket with this tag was made by the demo, which may empty and refill it.
DEMO_BUCKET_TAG = "retention-demo"
# The databases whose nightly dumps the demo's backups hold, and when they are taken (Paris).
_DUMPED_DATABASES = ("app", "crm")
_NIGHTLY = time(3, 0)
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PUT_THREADS = 8
_DELETE_CHUNK = 1000
_OUTSIDE_EVERY_RULE = "demo/README.txt"


def create_demo_objects(
    config: Config, *, as_of: datetime, seed: int = 2026, database_url: str | None = None
) -> list[str]:
    """Given the config and the demo's "now", fill the backup folders and buckets its object rules
    name, and return one line per store (one per unreachable S3 endpoint) saying what was done.

    Backup folders get nightly dumps over three periods and a week, named with their date and
    with that moment as their mtime, plus a pair taken a day either side of the cutoff; a folder
    is only filled when it is missing, empty, or made by an earlier demo (it holds
    DEMO_FOLDER_MARKER). Buckets are only filled on a local S3 server (``endpoint_url`` on
    127.0.0.1 or localhost) that answers, and only a new or empty bucket or one the demo made
    (tagged DEMO_BUCKET_TAG): each is emptied, then gets nightly dumps keyed by date
    (versioned, with re-runs and delete markers) or, for a cross-store rule, files under the
    prefix of every record of its subjects' table, read from ``database_url`` (default: the
    subjects' store). Dummy keys are written to a store's ``credentials_file`` when it does not
    exist (mode 0600).

    Example: with the shipped config, as of 2026-04-02, the folder gets
    ``app/2026-W13/db-2026-03-25-app.sql.gz`` (mtime 2026-03-25 03:00 Paris) and the bucket
    ``acme-backups`` gets ``nightly/2026-03-25/app.sql.gz``.
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware (e.g. datetime.now(UTC))")
    rules_of: dict[str, list[Rule]] = {}
    for rule in config.rules:
        if rule.objects is not None:
            rules_of.setdefault(rule.store, []).append(rule)
    lines: list[str] = []
    buckets: list[tuple[S3StoreConfig, list[Rule]]] = []
    for name, rules in rules_of.items():
        store = config.stores[name]
        if isinstance(store, FilesStoreConfig):
            lines.append(_fill_backup_folder(store, rules, as_of))
        elif isinstance(store, S3StoreConfig):
            buckets.append((store, rules))
    lines += _fill_buckets(config, buckets, as_of, random.Random(seed), database_url)
    return lines


@dataclass(frozen=True)
class _Dump:
    """One dump: of which database (``manual-HHMM`` for one taken by hand), taken when (aware)."""

    database: str
    taken: datetime

    @property
    def manual(self) -> bool:
        return self.database.startswith("manual")

    def name(self, pattern: str) -> str:
        """The pattern written for the dump's moment, then the database: ``nightly/2026-03-25/``
        gives ``nightly/2026-03-25/app.sql.gz``, ``db-%Y-%m-%d`` ``db-2026-03-25-app.sql.gz``."""
        dated = self.taken.strftime(pattern)
        return f"{dated}{'' if dated.endswith('/') else '-'}{self.database}.sql.gz"

    def body(self) -> bytes:
        text = f"-- fake dump ({self.database}), taken {self.taken.isoformat()}\n"
        return gzip.compress(text.encode(), mtime=0)


def _dumps(rule: Rule, as_of: datetime, span: relativedelta) -> list[_Dump]:
    """Nightly dumps of every demo database over ``span`` until ``as_of``, then a pair taken one
    day before and one day after the moment whose dumps are exactly due as of then."""
    today = as_of.astimezone(PARIS).date()
    day = today - span
    dumps = []
    while day <= today:
        taken = datetime.combine(day, _NIGHTLY, tzinfo=PARIS)
        if taken <= as_of:
            dumps += [_Dump(database, taken) for database in _DUMPED_DATABASES]
        day += timedelta(days=1)
    for clock in _boundaries(as_of, rule.period.as_relativedelta()):
        taken = clock.replace(tzinfo=UTC).astimezone(PARIS)
        dumps.append(_Dump(f"manual-{taken:%H%M}", taken))
    return dumps


def _span(rule: Rule, extra_days: int) -> relativedelta:
    """How far back the demo's dumps go: three periods and ``extra_days``."""
    period = rule.period.as_relativedelta()
    return period + period + period + relativedelta(days=extra_days)


def _fill_backup_folder(store: FilesStoreConfig, rules: list[Rule], as_of: datetime) -> str:
    root = store.root
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        return f"backup folder {root}: not a directory; the demo leaves it alone"
    if root.exists() and any(root.iterdir()) and not (root / DEMO_FOLDER_MARKER).is_file():
        return f"backup folder {root}: holds files the demo did not make; left alone"
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (root / DEMO_FOLDER_MARKER).write_text(
        "Made by `retention demo`, which empties and refills this folder each time.\n"
    )
    # Old, but no rule's glob matches it: it stays.
    readme = root / "README.txt"
    readme.write_text("Nightly database dumps, one folder per database and ISO week.\n")
    old = (as_of - timedelta(days=400)).timestamp()
    os.utime(readme, (old, old))
    files: dict[str, _Dump] = {}
    for rule in rules:
        assert rule.objects is not None
        pattern = rule.objects.date_pattern or "db-%Y-%m-%d"
        for dump in _dumps(rule, as_of, _span(rule, 7)):
            folder = "manual" if dump.manual else f"{dump.database}/{dump.taken:%G-W%V}"
            files[f"{folder}/{dump.name(pattern)}"] = dump
    for relative, dump in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dump.body())
        stamp = dump.taken.timestamp()
        os.utime(path, (stamp, stamp))
    taken = sorted(dump.taken for dump in files.values())
    periods = ", ".join(sorted({rule.period.text for rule in rules}))
    return (
        f"backup folder {root}: {len(files)} dated dumps from {taken[0]:%Y-%m-%d} to "
        f"{taken[-1]:%Y-%m-%d}, two of them a day either side of the {periods} cutoff"
    )


def _fill_buckets(
    config: Config,
    buckets: Sequence[tuple[S3StoreConfig, list[Rule]]],
    as_of: datetime,
    rng: random.Random,
    database_url: str | None,
) -> list[str]:
    if not buckets:
        return []
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    lines: list[str] = []
    unreachable: dict[str, str | None] = {}
    skipped: dict[str, list[str]] = {}
    for store, rules in buckets:
        endpoint = store.endpoint_url
        if endpoint is None or urlsplit(endpoint).hostname not in _LOCAL_HOSTS:
            lines.append(
                f"bucket {store.bucket}: not on a local S3 server (endpoint_url on 127.0.0.1); "
                "the demo leaves it alone"
            )
            continue
        _write_demo_credentials(store)
        if endpoint not in unreachable:
            unreachable[endpoint] = _unreachable(endpoint)
        if unreachable[endpoint] is not None:
            skipped.setdefault(endpoint, []).append(store.bucket)
            continue
        try:
            lines.append(_fill_bucket(config, store, rules, as_of, rng, database_url))
        except (BotoCoreError, ClientError) as error:
            lines.append(f"bucket {store.bucket} on {endpoint}: not filled: {error}")
    lines += [
        f"no S3 server answers at {endpoint} ({unreachable[endpoint]}): demo buckets "
        f"{', '.join(names)} skipped (`make demo` starts one)"
        for endpoint, names in skipped.items()
    ]
    return lines


def _unreachable(endpoint: str) -> str | None:
    """Why nothing listens at an http(s) endpoint, or None when something does."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=2):
            return None
    except OSError as error:
        return (error.strerror or str(error)).lower()


def _write_demo_credentials(store: S3StoreConfig) -> None:
    """Dummy keys for a local server, in the store's shared-credentials file, unless it exists."""
    path = store.credentials_file
    if path is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(
            "# Dummy keys for the demo's local S3 server (written by `retention demo`).\n"
            f"[{store.profile or 'default'}]\n"
            "aws_access_key_id = demo\n"
            "aws_secret_access_key = demo-secret-key\n"
        )


def _s3_client(store: S3StoreConfig) -> Any:
    from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

    from retention.stores.s3 import s3_session

    # The store's own credentials, read the way `run` reads them.
    return s3_session(store).create_client(
        "s3",
        endpoint_url=store.endpoint_url,
        region_name=store.region or "us-east-1",
        config=BotoConfig(
            s3={"addressing_style": store.addressing_style},
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=_PUT_THREADS,
        ),
    )


def _fill_bucket(
    config: Config,
    store: S3StoreConfig,
    rules: list[Rule],
    as_of: datetime,
    rng: random.Random,
    database_url: str | None,
) -> str:
    client = _s3_client(store)
    # Backups keep every version (what a bucket with versioning looks like in production).
    versioned = any(rule.objects and rule.objects.clock == "key_date" for rule in rules)
    if not _empty_bucket(client, store):
        return (
            f"bucket {store.bucket} on {store.endpoint_url}: holds objects the demo did not make "
            f"(no {DEMO_BUCKET_TAG} tag); left alone"
        )
    if versioned:
        client.put_bucket_versioning(
            Bucket=store.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    objects = {store.prefix + _OUTSIDE_EVERY_RULE: b"Under no rule's prefix: no rule touches it.\n"}
    rewritten: list[str] = []
    removed: list[str] = []
    what: list[str] = []
    for rule in rules:
        assert rule.objects is not None
        subjects = rule.objects.subjects
        if subjects is not None:
            url = database_url or _subject_store_url(config, subjects.rule)
            files = _subject_files(subjects.rule, url, rng)
            for record, name in files:
                owned = subjects.prefix_for(record)
                if owned is not None:
                    objects[store.prefix + owned + name] = f"{name} ({record})\n".encode()
            what.append(
                f"{counted(len(files), 'file')} under {subjects.prefix} "
                f"for the {subjects.rule.table} rows"
            )
        elif rule.objects.clock == "key_date" and rule.objects.date_pattern is not None:
            prefix = store.prefix + rule.objects.prefix
            dumps = _dumps(rule, as_of, _span(rule, 0))
            today = as_of.astimezone(PARIS).date()
            oldest = min(dump.taken for dump in dumps).date()
            for dump in dumps:
                name = dump.name(rule.objects.date_pattern)
                key = store.prefix + (
                    name if name.startswith(rule.objects.prefix) else rule.objects.prefix + name
                )
                objects[key] = dump.body()
                day = dump.taken.date()
                # Every fourth night's app dump was taken twice (a re-run): an older version
                # stays behind. Two crm dumps were deleted by hand, which left a delete marker
                # on top of them: the oldest one (expired) and the day before yesterday's.
                if dump.database == "app" and (today - day).days % 4 == 0:
                    rewritten.append(key)
                if dump.database == "crm" and day in (oldest, today - timedelta(days=2)):
                    removed.append(key)
            what.append(f"nightly dumps from {dumps[0].taken:%Y-%m-%d} under {prefix}")
    _put_all(client, store.bucket, objects)
    for key in rewritten:
        client.put_object(Bucket=store.bucket, Key=key, Body=objects[key] + b"-- re-run\n")
    for key in removed:
        client.delete_object(Bucket=store.bucket, Key=key)
    versions = (
        f"; {counted(len(rewritten), 'older version')} and "
        f"{counted(len(removed), 'delete marker')} (versioned)"
        if versioned
        else ""
    )
    return (
        f"bucket {store.bucket} on {store.endpoint_url}: {counted(len(objects), 'object')}, "
        + "; ".join(what)
        + versions
    )


def _subject_store_url(config: Config, rule: Rule) -> str:
    store = config.stores[rule.store]
    assert isinstance(store, SqlStoreConfig), "a cross-store rule's subjects are SQL rows"
    return store_url(store)


def _subject_files(
    rule: Rule, url: str, rng: random.Random
) -> list[tuple[tuple[object, ...], str]]:
    """Every record of the subjects' table, with the name of a file it owns (its ``filename``
    column when it has one); one record in three also owns a preview."""
    engine = create_engine(url)
    try:
        table = Table(rule.table, MetaData(), autoload_with=engine)
        name_column = table.c.get("filename")
        columns = [table.c[column] for column in rule.key]
        chosen = [*columns, name_column] if name_column is not None else columns
        with engine.connect() as conn:
            rows = conn.execute(select(*chosen).order_by(*columns)).all()
    finally:
        engine.dispose()
    files: list[tuple[tuple[object, ...], str]] = []
    for row in rows:
        key = tuple(row[: len(columns)])
        name = str(row[-1]) if name_column is not None and row[-1] else "file.bin"
        files.append((key, name))
        if rng.random() < 1 / 3:
            files.append((key, "preview.png"))
    return files


def _put_all(client: Any, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(_PUT_THREADS) as pool:
        for _ in pool.map(
            lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
            objects.items(),
        ):
            pass


def _empty_bucket(client: Any, store: S3StoreConfig) -> bool:
    """Create the bucket (tagged as the demo's), or delete every version and delete marker of a
    bucket the demo made (its tag) or that is empty; return False, touching nothing, for a
    bucket that holds objects the demo did not make (a local server can hold real data)."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=store.bucket)
    except ClientError:
        region = store.region or "us-east-1"
        location = {} if region == "us-east-1" else {"LocationConstraint": region}
        client.create_bucket(
            Bucket=store.bucket, **({"CreateBucketConfiguration": location} if location else {})
        )
        _tag_as_demo(client, store.bucket)
        return True
    doomed = [
        {"Key": entry["Key"], "VersionId": entry["VersionId"]}
        for page in client.get_paginator("list_object_versions").paginate(Bucket=store.bucket)
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
    ]
    if doomed and not _tagged_as_demo(client, store.bucket):
        return False
    _tag_as_demo(client, store.bucket)
    for start in range(0, len(doomed), _DELETE_CHUNK):
        client.delete_objects(
            Bucket=store.bucket,
            Delete={"Objects": doomed[start : start + _DELETE_CHUNK], "Quiet": True},
        )
    return True


def _tag_as_demo(client: Any, bucket: str) -> None:
    client.put_bucket_tagging(
        Bucket=bucket, Tagging={"TagSet": [{"Key": DEMO_BUCKET_TAG, "Value": "true"}]}
    )


def _tagged_as_demo(client: Any, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        tags = client.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
    except ClientError:
        return False  # no tags at all (NoSuchTagSet), or not allowed to look: not the demo's
    return any(tag.get("Key") == DEMO_BUCKET_TAG for tag in tags)
