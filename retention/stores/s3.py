"""S3-compatible buckets through boto3.

A rule's scope is every object version and delete marker under the store's prefix plus the
rule's, listed with ListObjectVersions (which serves unversioned buckets too, with version id
"null"). The versions of one key are always judged together, even when they span list pages. One
judgement serves the plan's counts and the run's batches, so the plan counts what the run
deletes. Deletes name each version by its id (a version never changes, so nothing listed can
have changed under us) and, on unversioned objects, by the ETag that was listed as well (S3's
conditional delete), so that an object overwritten since it was listed survives.

Keys are ``(object key, version id)``: the full key, "null" for an unversioned object.
"""

from __future__ import annotations

import configparser
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

import boto3  # type: ignore[import-untyped]
from botocore import exceptions as boto_errors  # type: ignore[import-untyped]
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

from retention.config import Rule, S3StoreConfig
from retention.errors import (
    ConfigError,
    ConfigIssue,
    RetentionError,
    StoreUnavailable,
    without_values,
)
from retention.holds import object_held
from retention.planner import (
    Batch,
    BeforeWrite,
    KeyFilter,
    KeyValues,
    RecordStore,
    Selection,
    SubjectSource,
    Survey,
)
from retention.rules import (
    DatePattern,
    compile_date_pattern,
    is_expired,
    is_future,
    read_date,
    wall_time_to_utc,
)
from retention.runtime.logging import get_logger
from retention.runtime.secrets import secret_path

NULL_VERSION = "null"
LIST_PAGE_SIZE = 1000
DELETE_CHUNK_SIZE = 1000
SUBJECT_PAGE_SIZE = 500
# Object Lock is checked by HeadObject, this many candidate versions at a time.
LOCK_CHECK_CHUNK = 256
# Per-key errors that S3 asks us to try again, and how many times we do.
RETRYABLE_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable"})
KEY_RETRIES = 4
RETRY_BASE_SECONDS = 0.2
# A run's plan lists a rule's objects to count them; its batches reuse that listing instead of
# listing again, when it holds at most this many versions (about 300 bytes each in memory).
SURVEY_LISTING_ENTRIES = 100_000
# A batch that finds nothing to delete still ends after looking at this many list pages' worth,
# so that a long run of kept objects does not make one batch last for ever.
EXAMINED_PAGES_PER_BATCH = 20
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60
PING_ATTEMPTS = 3
GONE_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound"})
CONNECTION_ERRORS = (
    boto_errors.EndpointConnectionError,
    boto_errors.ConnectionError,
    boto_errors.HTTPClientError,
    boto_errors.NoCredentialsError,
    boto_errors.PartialCredentialsError,
    boto_errors.CredentialRetrievalError,
)


def open_s3_store(
    config: S3StoreConfig, *, read_only: bool, store_for: Callable[[str], RecordStore]
) -> S3Store:
    """Given an S3 store's config, whether it may delete and a way to reach other stores (the
    SQL stores of cross-store rules' subjects), return the store (not yet contacted: ``ping``).
    """
    session = s3_session(config)
    client_config = BotoConfig(
        region_name=config.region,
        s3={"addressing_style": config.addressing_style},
        # total_max_attempts counts the first attempt, as max_attempts does in the config;
        # botocore's own max_attempts would count retries only.
        retries={"mode": "standard", "total_max_attempts": config.max_attempts},
        max_pool_connections=max(10, config.max_concurrency + 2),
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    # A store that cannot be reached at all should say so in seconds, not after a full retry
    # schedule: ping has its own short one.
    ping_config = client_config.merge(
        BotoConfig(
            retries={
                "mode": "standard",
                "total_max_attempts": min(PING_ATTEMPTS, config.max_attempts),
            }
        )
    )
    try:
        client = session.client("s3", endpoint_url=config.endpoint_url, config=client_config)
        ping_client = session.client("s3", endpoint_url=config.endpoint_url, config=ping_config)
    except ValueError as error:
        raise ConfigError(
            [ConfigIssue(f"stores.{config.name}", f"cannot make an S3 client: {error}")]
        ) from error
    return S3Store(config, client, ping_client, read_only=read_only, store_for=store_for)


def s3_session(config: S3StoreConfig) -> Any:
    """A boto3 session: the credentials file when one is configured, else boto3's own chain."""
    key_path = f"stores.{config.name}.credentials_credential"
    path = secret_path(config.credentials_file, config.credentials_credential, key_path)
    if path is None:
        try:
            return boto3.Session(profile_name=config.profile)
        except boto_errors.ProfileNotFound as error:
            raise ConfigError(
                [ConfigIssue(f"stores.{config.name}.profile", f"no such AWS profile: {error}")]
            ) from error
    where = key_path if config.credentials_credential else f"stores.{config.name}.credentials_file"
    section = config.profile or "default"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as error:
        raise ConfigError(
            [ConfigIssue(where, f"cannot read {str(path)!r}: {error.strerror}")]
        ) from error
    except configparser.Error as error:
        # The parser's message can quote a line of the file: never show it (a secret).
        raise ConfigError(
            [ConfigIssue(where, f"{str(path)!r} is not a shared-credentials (INI) file")]
        ) from error
    if not parser.has_section(section):
        raise ConfigError([ConfigIssue(where, f"{str(path)!r} has no [{section}] section")])
    values = parser[section]
    missing = [
        name for name in ("aws_access_key_id", "aws_secret_access_key") if not values.get(name)
    ]
    if missing:
        raise ConfigError(
            [ConfigIssue(where, f"[{section}] in {str(path)!r} lacks {', '.join(missing)}")]
        )
    return boto3.Session(
        aws_access_key_id=values["aws_access_key_id"].strip(),
        aws_secret_access_key=values["aws_secret_access_key"].strip(),
        aws_session_token=(values.get("aws_session_token") or "").strip() or None,
    )


@dataclass(frozen=True)
class _Entry:
    """One listed object version or delete marker."""

    key: str
    version_id: str
    last_modified: datetime
    marker: bool
    latest: bool
    size: int = 0
    etag: str | None = None

    @property
    def record(self) -> KeyValues:
        return (self.key, self.version_id)


@dataclass(frozen=True)
class _Group:
    """Every listed version and delete marker of one key."""

    key: str
    entries: tuple[_Entry, ...]


ItemKind = Literal["group", "subject_done", "subject_failed"]


@dataclass(frozen=True)
class _Item:
    """One step of a rule's listing: a key's versions, or (cross-store rules) a subject finished
    or refused; ``position`` is where the listing goes on after it (a batch's resume_after)."""

    kind: ItemKind
    position: KeyValues
    group: _Group | None = None
    locked: frozenset[str] = frozenset()
    subject: KeyValues | None = None


@dataclass(frozen=True)
class _Scope:
    """How a rule reads the objects it lists."""

    prefix: str
    relative_from: int
    pattern: DatePattern | None
    cross: bool


@dataclass
class _Verdict:
    """What one key's versions come to under a selection."""

    due: list[_Entry] = field(default_factory=list)
    held: int = 0
    locked: int = 0
    future: int = 0
    unmatched: int = 0
    in_scope: int = 0
    oldest: datetime | date | None = None


@dataclass
class _Tally:
    """Running totals of a survey (counts only: the bucket can be any size)."""

    due: int = 0
    held: int = 0
    in_scope: int = 0
    future: int = 0
    current: int = 0
    noncurrent: int = 0
    markers: int = 0
    bytes: int = 0
    locked: int = 0
    unmatched: int = 0
    subjects: int = 0
    oldest: Any = None
    samples: list[KeyValues] = field(default_factory=list)


@dataclass(frozen=True)
class _Deleted:
    """What the DeleteObjects requests of a batch came to."""

    done: int = 0
    locked: int = 0
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    stayed: tuple[KeyValues, ...] = ()


class _Prefetched:
    """List pages fetched one ahead in the background: the next page is on its way while this
    one is judged and deleted (at most one page in flight)."""

    def __init__(self, pages: Iterator[list[_Entry]], pool: ThreadPoolExecutor) -> None:
        self._pages = pages
        self._pool = pool
        self._next: Future[list[_Entry] | None] | None = pool.submit(next, pages, None)

    def __iter__(self) -> Iterator[list[_Entry]]:
        return self

    def __next__(self) -> list[_Entry]:
        if self._next is None:
            raise StopIteration
        page = self._next.result()
        if page is None:
            self._next = None
            raise StopIteration
        self._next = self._pool.submit(next, self._pages, None)
        return page


class S3Store:
    """An S3-compatible bucket (or a prefix of one) holding the objects of some rules."""

    def __init__(
        self,
        config: S3StoreConfig,
        client: Any,
        ping_client: Any,
        *,
        read_only: bool,
        store_for: Callable[[str], RecordStore],
    ) -> None:
        self.config = config
        self.client = client
        self._ping_client = ping_client
        self.read_only = read_only
        self._store_for = store_for
        self._workers = ThreadPoolExecutor(
            max_workers=config.max_concurrency, thread_name_prefix=f"s3-{config.name}"
        )
        self._lister = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"s3-{config.name}-list"
        )
        self._object_lock: bool | None = None
        # Per (rule, as_of): the listings this run's plan read, for its batches (bounded).
        self._survey_listings: dict[tuple[object, ...], _Recorder] = {}
        self._never_versioned_bucket: bool | None = None
        # The listing a batch stopped in, kept for the next batch (which starts where it ended):
        # its next page is already on its way.
        self._resume: tuple[tuple[object, ...], Iterator[_Item]] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def _where(self) -> str:
        return f"S3 store {self.name!r} (bucket {self.config.bucket!r})"

    def close(self) -> None:
        self._resume = None
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._lister.shutdown(wait=True, cancel_futures=True)
        self.client.close()
        self._ping_client.close()

    @contextmanager
    def _reachable(self, doing: str) -> Iterator[None]:
        """Turn network and credential failures into StoreUnavailable and S3's refusals into
        RetentionError: one line each, the S3 error code first."""
        try:
            yield
        except CONNECTION_ERRORS as error:
            raise StoreUnavailable(f"{self._where} is unreachable: {_first_line(error)}") from error
        except boto_errors.ClientError as error:
            code, message = _error_of(error)
            raise RetentionError(f"{self._where}: {doing}: S3 refused: {code} ({message})") from (
                error
            )
        except boto_errors.BotoCoreError as error:
            raise RetentionError(f"{self._where}: {doing}: {_first_line(error)}") from error

    def ping(self) -> None:
        """Raise StoreUnavailable, saying why in one line, unless the bucket answers HeadBucket
        with these credentials."""
        try:
            self._ping_client.head_bucket(Bucket=self.config.bucket)
        except boto_errors.NoCredentialsError as error:
            raise StoreUnavailable(
                f"{self._where}: no credentials found (environment, shared files, instance "
                "role, or credentials_file / credentials_credential)"
            ) from error
        except CONNECTION_ERRORS as error:
            raise StoreUnavailable(f"{self._where} is unreachable: {_first_line(error)}") from error
        except boto_errors.ClientError as error:
            code, message = _error_of(error)
            reason = {
                "404": "no such bucket",
                "NoSuchBucket": "no such bucket",
                "403": "access denied (check the credentials and the bucket policy)",
                "AccessDenied": "access denied (check the credentials and the bucket policy)",
                "301": "the bucket is in another region (set region)",
                "PermanentRedirect": "the bucket is in another region (set region)",
            }.get(code, f"S3 refused: {code} ({message})")
            raise StoreUnavailable(f"{self._where}: {reason}") from error
        except boto_errors.BotoCoreError as error:
            raise StoreUnavailable(f"{self._where}: {_first_line(error)}") from error

    def check_rule(self, rule: Rule) -> list[ConfigIssue]:
        """Given a rule, return the ways it does not fit this store (empty: it fits)."""
        issues = []
        if rule.objects is None:
            issues.append(ConfigIssue(rule.path, f"store {self.name!r} holds objects, not rows"))
        elif rule.table != self.config.bucket:
            issues.append(
                ConfigIssue(rule.path, f"store {self.name!r} is bucket {self.config.bucket!r}")
            )
        return issues

    def period_values(self, rule: Rule) -> tuple[object, ...]:
        """Objects have no period column: return ()."""
        return ()

    # --- listing ----------------------------------------------------------------------------

    def _scope(self, selection: Selection) -> _Scope:
        objects = selection.rule.objects
        if objects is None:
            raise RetentionError(f"rule {selection.rule.name!r} does not select objects")
        pattern = compile_date_pattern(objects.date_pattern) if objects.date_pattern else None
        return _Scope(
            prefix=self.config.prefix + objects.prefix,
            relative_from=len(self.config.prefix),
            pattern=pattern if objects.clock == "key_date" else None,
            cross=selection.subjects is not None,
        )

    def _never_versioned(self) -> bool:
        """Whether versioning was never turned on for the bucket (then every object is its only,
        "null", version), asked once per store. Unknown counts as versioned: listing versions is
        always right, only slower."""
        if self._never_versioned_bucket is None:
            try:
                status = self.client.get_bucket_versioning(Bucket=self.config.bucket).get("Status")
            except boto_errors.ClientError:
                status = "unknown"
            self._never_versioned_bucket = status is None
        return self._never_versioned_bucket

    def _pages(self, prefix: str, key_marker: str | None) -> Iterator[list[_Entry]]:
        """Every version and delete marker under ``prefix`` after the key ``key_marker``, one list
        page at a time."""
        if self._never_versioned():
            yield from self._object_pages(prefix, key_marker)
            return
        arguments: dict[str, Any] = {
            "Bucket": self.config.bucket,
            "Prefix": prefix,
            "MaxKeys": LIST_PAGE_SIZE,
        }
        if key_marker is not None:
            arguments["KeyMarker"] = key_marker
        while True:
            response = self.client.list_object_versions(**arguments)
            page = [_version_entry(raw) for raw in response.get("Versions", [])]
            page += [_marker_entry(raw) for raw in response.get("DeleteMarkers", [])]
            yield page
            if not response.get("IsTruncated"):
                return
            arguments["KeyMarker"] = response.get("NextKeyMarker")
            arguments.pop("VersionIdMarker", None)
            if response.get("NextVersionIdMarker"):
                arguments["VersionIdMarker"] = response["NextVersionIdMarker"]

    def _object_pages(self, prefix: str, key_marker: str | None) -> Iterator[list[_Entry]]:
        """ListObjectsV2 pages, for a bucket that was never versioned: the same entries as
        ListObjectVersions would give, at a fraction of its cost on some servers."""
        arguments: dict[str, Any] = {
            "Bucket": self.config.bucket,
            "Prefix": prefix,
            "MaxKeys": LIST_PAGE_SIZE,
        }
        if key_marker is not None:
            arguments["StartAfter"] = key_marker
        while True:
            response = self.client.list_objects_v2(**arguments)
            yield [
                _version_entry({**raw, "IsLatest": True}) for raw in response.get("Contents", [])
            ]
            if not response.get("IsTruncated"):
                return
            arguments["ContinuationToken"] = response["NextContinuationToken"]

    def _groups(self, prefix: str, key_marker: str | None) -> Iterator[_Group]:
        """The keys under ``prefix`` after ``key_marker`` in key order, each with all of its
        versions (pages fetched one ahead)."""
        return _grouped(_Prefetched(self._pages(prefix, key_marker), self._lister))

    def _items(
        self, selection: Selection, scope: _Scope, after: KeyValues | None
    ) -> Iterator[_Item]:
        if scope.cross:
            return self._subject_items(selection, after)
        key_marker: str | None = None
        if after is not None:
            if len(after) != 2 or after[0] != "key" or not isinstance(after[1], str):
                raise RetentionError(f"{self._where}: cannot resume a listing after {after!r}")
            key_marker = after[1]
        return (
            _Item("group", ("key", group.key), group)
            for group in self._groups(scope.prefix, key_marker)
        )

    def _subject_items(self, selection: Selection, after: KeyValues | None) -> Iterator[_Item]:
        """A cross-store rule's listing: its subjects in key order (bounded pages from their SQL
        store), and for each one everything under its prefix. Positions are
        ``("subject", previous subject, current subject or None, last key or None)``."""
        subjects = selection.subjects
        objects = selection.rule.objects
        assert subjects is not None
        assert objects is not None
        assert objects.subjects is not None
        owner = objects.subjects
        source = self._store_for(subjects.rule.store)
        if not hasattr(source, "due_keys"):
            raise RetentionError(f"store {subjects.rule.store!r} cannot list subjects")
        subject_source = cast(SubjectSource, source)
        previous: KeyValues | None = None
        resume_subject: KeyValues | None = None
        resume_key: str | None = None
        if after is not None:
            if len(after) != 4 or after[0] != "subject":
                raise RetentionError(f"{self._where}: cannot resume a listing after {after!r}")
            previous = cast("KeyValues | None", after[1])
            resume_subject = cast("KeyValues | None", after[2])
            resume_key = cast("str | None", after[3])
        while True:
            page = subject_source.due_keys(subjects, after=previous, limit=SUBJECT_PAGE_SIZE)
            for subject in page:
                done: KeyValues = ("subject", subject, None, None)
                relative = owner.prefix_for(subject)
                if relative is None:
                    yield _Item("subject_failed", done, subject=subject)
                else:
                    key_marker = resume_key if subject == resume_subject else None
                    for group in self._groups(self.config.prefix + relative, key_marker):
                        position = ("subject", previous, subject, group.key)
                        yield _Item("group", position, group, subject=subject)
                    yield _Item("subject_done", done, subject=subject)
                resume_subject = None
                previous = subject
            if len(page) < SUBJECT_PAGE_SIZE:
                return

    def _locked_items(
        self, selection: Selection, scope: _Scope, items: Iterator[_Item], now: datetime
    ) -> Iterator[_Item]:
        """The items, each with the versions that Object Lock protects among those whose clock
        has expired (checked by HeadObject, a chunk at a time, concurrently), when the bucket
        has Object Lock."""
        if not self._has_object_lock():
            yield from items
            return
        chunk: list[_Item] = []
        candidates: list[_Entry] = []
        for item in items:
            chunk.append(item)
            if item.group is not None:
                candidates += self._expired_versions(selection, scope, item.group)
            if len(candidates) >= LOCK_CHECK_CHUNK:
                yield from self._with_locks(chunk, candidates, now)
                chunk, candidates = [], []
        yield from self._with_locks(chunk, candidates, now)

    def _with_locks(
        self, chunk: list[_Item], candidates: list[_Entry], now: datetime
    ) -> Iterator[_Item]:
        with self._reachable("HeadObject (Object Lock)"):
            locked_flags = list(
                self._workers.map(lambda entry: self._is_locked(entry, now), candidates)
            )
        locked = {
            entry.record for entry, flag in zip(candidates, locked_flags, strict=True) if flag
        }
        for item in chunk:
            if item.group is None or not locked:
                yield item
                continue
            versions = frozenset(
                entry.version_id for entry in item.group.entries if entry.record in locked
            )
            yield replace(item, locked=versions)

    def _has_object_lock(self) -> bool:
        if self._object_lock is None:
            try:
                response = self.client.get_object_lock_configuration(Bucket=self.config.bucket)
                configuration = response.get("ObjectLockConfiguration", {})
                self._object_lock = configuration.get("ObjectLockEnabled") == "Enabled"
            except boto_errors.ClientError as error:
                code, _message = _error_of(error)
                # Cannot tell (no permission, not implemented): check every candidate.
                self._object_lock = code != "ObjectLockConfigurationNotFoundError"
                if self._object_lock:
                    get_logger().warning(
                        "s3.object_lock_unknown",
                        store=self.config.name,
                        code=code,
                        consequence="every expired version is checked with HeadObject (slower); "
                        "allow s3:GetBucketObjectLockConfiguration to avoid it",
                    )
            except CONNECTION_ERRORS as error:
                raise StoreUnavailable(
                    f"{self._where} is unreachable: {_first_line(error)}"
                ) from error
        return self._object_lock

    def _is_locked(self, entry: _Entry, now: datetime) -> bool:
        """Whether Object Lock forbids deleting this version now: a legal hold, or a GOVERNANCE
        or COMPLIANCE retention until later (governance is never bypassed)."""
        try:
            head = self.client.head_object(**self._version_arguments(entry.key, entry.version_id))
        except boto_errors.ClientError as error:
            code, _message = _error_of(error)
            if code in GONE_CODES or code in ("403", "AccessDenied"):
                # Gone: deleting it does nothing. Forbidden to look: the delete will say.
                return False
            raise
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return True
        until = head.get("ObjectLockRetainUntilDate")
        return (
            head.get("ObjectLockMode") in ("GOVERNANCE", "COMPLIANCE")
            and isinstance(until, datetime)
            and until.astimezone(UTC) > now
        )

    def _version_arguments(self, key: str, version_id: str) -> dict[str, str]:
        arguments = {"Bucket": self.config.bucket, "Key": key}
        # Some servers (moto among them) refuse versionId=null on HEAD of unversioned objects.
        if version_id != NULL_VERSION:
            arguments["VersionId"] = version_id
        return arguments

    # --- judgement --------------------------------------------------------------------------

    def _clock(self, scope: _Scope, group: _Group, entry: _Entry) -> datetime | date | None:
        if scope.pattern is None:
            return entry.last_modified
        return read_date(scope.pattern, group.key[scope.relative_from :])

    def _expired_versions(self, selection: Selection, scope: _Scope, group: _Group) -> list[_Entry]:
        """The versions (not delete markers) of a key whose clock has expired."""
        versions = [entry for entry in group.entries if not entry.marker]
        if scope.cross:
            return versions
        expired = []
        for entry in versions:
            clock = self._clock(scope, group, entry)
            if clock is not None and is_expired(clock, selection.default, self.config.timezone):
                expired.append(entry)
        return expired

    def _verdict(self, selection: Selection, scope: _Scope, item: _Item) -> _Verdict:
        """Given a key's versions, return what is due: every version whose clock has expired and
        that Object Lock does not protect, and every delete marker whose own clock has expired or
        that goes with the last versions of its key, except a current marker over versions that
        stay. A marker with no version under it goes by its own clock only (the key's date, or
        its own LastModified). A held key keeps everything."""
        group = item.group
        assert group is not None
        zone = self.config.timezone
        verdict = _Verdict()
        expired: set[str] = set()
        for entry in group.entries:
            if scope.cross:
                expired.add(entry.version_id)
                continue
            clock = self._clock(scope, group, entry)
            if clock is None:
                verdict.unmatched += 1
                continue
            if is_expired(clock, selection.default, zone):
                expired.add(entry.version_id)
            elif is_future(clock, selection.as_of, zone):
                verdict.future += 1
        verdict.in_scope = len(group.entries) - verdict.unmatched
        versions = [entry for entry in group.entries if not entry.marker]
        due_versions = [
            entry
            for entry in versions
            if entry.version_id in expired and entry.version_id not in item.locked
        ]
        locked = sum(
            entry.version_id in expired and entry.version_id in item.locked for entry in versions
        )
        left_behind = len(versions) - len(due_versions)
        due_ids = {entry.version_id for entry in due_versions}
        # A current delete marker over versions that stay (Object Lock) stays too: removing it
        # would make the object visible again. Markers follow the last versions of their key
        # out, so that none is left over nothing; but a key that has no version at all has no
        # versions going, and its markers wait for their own clock.
        goes_with_versions = bool(due_versions) and left_behind == 0 and not verdict.unmatched
        due_ids |= {
            entry.version_id
            for entry in group.entries
            if entry.marker
            and (
                (entry.version_id in expired and not (entry.latest and left_behind))
                or goes_with_versions
            )
        }
        due = [entry for entry in group.entries if entry.version_id in due_ids]
        if object_held(selection.holds, group.key):
            verdict.held = len(due) + locked
            return verdict
        verdict.due = due
        verdict.held = verdict.locked = locked
        if not scope.cross:
            for entry in due:
                clock = self._clock(scope, group, entry)
                assert clock is not None
                oldest = _instant(clock, zone)
                if verdict.oldest is None or _before(oldest, verdict.oldest):
                    verdict.oldest = oldest
        return verdict

    # --- survey -----------------------------------------------------------------------------

    def survey(self, selection: Selection, sample_size: int) -> Survey:
        """Given a Selection, return in one streaming pass over the rule's listing: versions and
        delete markers due (not held), held (legal holds, Object Lock) and with a future clock,
        how many are in scope, the oldest due clock and the first due keys in listing order;
        details count current and noncurrent versions, delete markers and bytes due, versions
        locked, keys whose date pattern does not match and (cross-store) subjects."""
        scope = self._scope(selection)
        tally = _Tally()
        listing = self._items(selection, scope, None)
        # Only a store that may delete keeps the listing: it is for this run's batches.
        budget = SURVEY_LISTING_ENTRIES - sum(
            recorded.entries for recorded in self._survey_listings.values()
        )
        recorder = None if self.read_only or scope.cross else _Recorder(budget)
        if recorder is not None:
            listing = recorder.record(listing)
        with self._reachable("listing object versions"):
            items = self._locked_items(selection, scope, listing, datetime.now(UTC))
            for item in items:
                if item.kind != "group":
                    tally.subjects += 1
                    continue
                verdict = self._verdict(selection, scope, item)
                _add(tally, verdict, sample_size)
        details = [
            ("current_versions", tally.current),
            ("noncurrent_versions", tally.noncurrent),
            ("delete_markers", tally.markers),
            ("bytes", tally.bytes),
            ("locked", tally.locked),
        ]
        if scope.pattern is not None:
            details.append(("unmatched", tally.unmatched))
        if scope.cross:
            details.append(("subjects", tally.subjects))
        if recorder is not None and recorder.items is not None:
            self._survey_listings[(selection.rule.name, selection.as_of)] = recorder
        return Survey(
            due=tally.due,
            oldest=None if scope.cross else tally.oldest,
            sample_keys=tuple(tally.samples),
            in_scope=0 if scope.cross else tally.in_scope,
            held=tally.held,
            future=tally.future,
            details=tuple(details),
        )

    # --- purge ------------------------------------------------------------------------------

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
    ) -> Batch:
        """Given a Selection and where the last batch stopped, delete the next batch.

        Go on listing after ``after`` and gather whole keys' due versions and delete markers
        until there are ``limit`` or more (or many pages were looked at); call ``before_write``
        with their keys (the audit intent: if it raises, nothing is deleted); then send them in
        DeleteObjects requests of at most 1,000, concurrently, while the next list page is
        fetched. Versions are named by id, unversioned objects also by the ETag listed. Return
        the keys, how many went, where the next batch starts and whether there may be more;
        versions Object Lock protects are counted held, refusals counted failed (errors grouped
        by S3 error code, never naming keys). A cross-store rule's batch also says which
        subjects it finished listing (``visited_subjects``). ``dry_run`` lists the same batch and
        deletes nothing. ``only`` is for SQL stores (subjects' rules) and must be None here.
        """
        assert only is None, "object stores purge every due object of their scope"
        if self.read_only and not dry_run:
            raise RetentionError(f"{self._where} was opened read-only: it does not delete")
        scope = self._scope(selection)
        identity = (selection.rule.name, selection.as_of, after)
        surveyed = self._survey_listings.pop(identity[:2], None)
        if self._resume is not None and self._resume[0] == identity:
            items = self._resume[1]
        elif after is None and surveyed is not None and surveyed.items is not None:
            # The plan's own listing, judged again (holds and Object Lock may have changed).
            items = self._locked_items(selection, scope, iter(surveyed.items), now)
        else:
            items = self._locked_items(selection, scope, self._items(selection, scope, after), now)
        self._resume = None
        chosen: list[_Entry] = []
        locked = examined = failed_subjects = 0
        # Cross-store rules: the subjects some of whose objects stay (their rows must stay too),
        # and whose subject each chosen version is.
        kept: dict[KeyValues, None] = {}
        subject_of: dict[KeyValues, KeyValues] = {}
        visited: list[KeyValues] = []
        position = after
        exhausted = True
        with self._reachable("listing object versions"):
            for item in items:
                position = item.position
                if item.kind == "subject_failed":
                    failed_subjects += 1
                    if item.subject is not None:
                        kept[item.subject] = None
                    continue
                if item.kind == "subject_done" and item.subject is not None:
                    visited.append(item.subject)
                    continue
                if item.group is None:
                    continue
                verdict = self._verdict(selection, scope, item)
                chosen += verdict.due
                locked += verdict.locked
                if item.subject is not None:
                    if verdict.held:
                        kept[item.subject] = None
                    subject_of.update((entry.record, item.subject) for entry in verdict.due)
                examined += len(item.group.entries)
                if len(chosen) >= limit or examined >= EXAMINED_PAGES_PER_BATCH * max(
                    limit, LIST_PAGE_SIZE
                ):
                    exhausted = False
                    break
        if not exhausted:
            assert position is not None
            self._resume = ((selection.rule.name, selection.as_of, position), items)
        keys = tuple(entry.record for entry in chosen)
        errors: list[str] = []
        if failed_subjects:
            errors.append(
                f"NoPrefix: {failed_subjects} (a subject key is empty or holds '/': its objects "
                "cannot be found)"
            )
        batch = Batch(
            keys=keys,
            done=0,
            resume_after=position,
            more=not exhausted,
            failed=failed_subjects,
            held=locked,
            errors=tuple(errors),
            kept_subjects=tuple(kept),
            visited_subjects=tuple(visited),
        )
        if dry_run or not keys:
            return batch
        if before_write is not None:
            before_write(keys)
        started = time.monotonic()
        deleted = self._delete(chosen)
        failures = deleted.failures
        kept.update((subject_of[record], None) for record in deleted.stayed if record in subject_of)
        errors += [
            f"{code}: {count} ({message})"
            for (code, message), count in sorted(failures.items(), key=lambda pair: -pair[1])
        ]
        return Batch(
            keys=keys,
            done=deleted.done,
            transaction_seconds=time.monotonic() - started,
            resume_after=position,
            more=not exhausted,
            failed=failed_subjects + sum(failures.values()),
            held=locked + deleted.locked,
            errors=tuple(errors),
            kept_subjects=tuple(kept),
            not_done_keys=deleted.stayed,
            visited_subjects=tuple(visited),
        )

    def _delete(self, entries: Sequence[_Entry]) -> _Deleted:
        chunks = [
            entries[start : start + DELETE_CHUNK_SIZE]
            for start in range(0, len(entries), DELETE_CHUNK_SIZE)
        ]
        with self._reachable("DeleteObjects"):
            results = list(self._workers.map(self._delete_chunk, chunks))
        failures: Counter[tuple[str, str]] = Counter()
        for result in results:
            failures.update(result.failures)
        return _Deleted(
            done=sum(result.done for result in results),
            locked=sum(result.locked for result in results),
            failures=failures,
            stayed=tuple(record for result in results for record in result.stayed),
        )

    def _delete_chunk(self, entries: Sequence[_Entry]) -> _Deleted:
        """One DeleteObjects request (Quiet: only errors come back), its keys that S3 asks to
        retry sent again with exponential backoff."""
        done = locked = 0
        failures: Counter[tuple[str, str]] = Counter()
        stayed: list[KeyValues] = []
        pending = list(entries)
        for attempt in range(KEY_RETRIES + 1):
            by_record = {entry.record: entry for entry in pending}
            response = self.client.delete_objects(
                Bucket=self.config.bucket,
                Delete={"Objects": [_identifier(entry) for entry in pending], "Quiet": True},
            )
            retry: list[_Entry] = []
            refused = 0
            for error in response.get("Errors", []):
                record = (error.get("Key", ""), error.get("VersionId") or NULL_VERSION)
                entry = by_record.get(record) or next(
                    (e for e in pending if e.key == record[0]), None
                )
                code = error.get("Code", "?")
                message = _short(error.get("Message", ""))
                refused += 1
                if code in RETRYABLE_CODES and attempt < KEY_RETRIES and entry is not None:
                    retry.append(entry)
                    continue
                stayed.append(entry.record if entry is not None else record)
                if code == "AccessDenied" and "lock" in message.lower():
                    locked += 1
                elif code == "PreconditionFailed":
                    pass  # overwritten since it was listed: it is not the object judged due
                else:
                    failures[(code, message)] += 1
            done += len(pending) - refused
            if not retry:
                break
            pending = retry
            time.sleep(RETRY_BASE_SECONDS * 2**attempt * (1 + random.random()))
        return _Deleted(done=done, locked=locked, failures=failures, stayed=tuple(stayed))

    # --- reconciliation -----------------------------------------------------------------------

    def existing_keys(
        self,
        table_name: str,
        key_columns: Sequence[str],
        keys: Sequence[KeyValues],
        marker_column: str | None = None,
    ) -> set[KeyValues]:
        """Given the bucket and ``(key, version id)`` pairs, return those still there (a delete
        marker still there counts), by HeadObject on each version, concurrently."""

        def exists(record: KeyValues) -> bool:
            key, version_id = str(record[0]), str(record[1])
            try:
                head = self.client.head_object(**self._version_arguments(key, version_id))
            except boto_errors.ClientError as error:
                code, _message = _error_of(error)
                if code in GONE_CODES:
                    return False
                if code in ("405", "MethodNotAllowed"):
                    return True  # a delete marker: HEAD is not allowed on it, but it is there
                raise
            return version_id != NULL_VERSION or head.get("VersionId") in (None, NULL_VERSION)

        records = [tuple(record) for record in keys]
        with self._reachable("HeadObject"):
            flags = list(self._workers.map(exists, records))
        return {record for record, flag in zip(records, flags, strict=True) if flag}


class _Recorder:
    """Keeps the items of a listing while it is read, up to ``limit`` versions; past that it
    keeps nothing (``items`` None), so that memory stays bounded whatever the bucket holds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[_Item] | None = []
        self.entries = 0

    def record(self, items: Iterator[_Item]) -> Iterator[_Item]:
        for item in items:
            if self.items is not None:
                self.entries += len(item.group.entries) if item.group is not None else 1
                if self.entries > self.limit:
                    self.items = None
                else:
                    self.items.append(item)
            yield item


def _grouped(pages: Iterator[list[_Entry]]) -> Iterator[_Group]:
    """Given list pages in key order, return each key with all its versions: the last key of a
    page is held back until the next page shows whether its versions go on there."""
    pending: tuple[str, list[_Entry]] | None = None
    for page in pages:
        by_key: dict[str, list[_Entry]] = {}
        for entry in page:
            by_key.setdefault(entry.key, []).append(entry)
        # UTF-8 byte order, S3's, is code point order: sorting the text agrees with the listing.
        for key in sorted(by_key):
            if pending is not None and pending[0] == key:
                pending[1].extend(by_key[key])
                continue
            if pending is not None:
                yield _Group(pending[0], tuple(pending[1]))
            pending = (key, by_key[key])
    if pending is not None:
        yield _Group(pending[0], tuple(pending[1]))


def _version_entry(raw: dict[str, Any]) -> _Entry:
    return _Entry(
        key=raw["Key"],
        version_id=raw.get("VersionId") or NULL_VERSION,
        last_modified=raw["LastModified"].astimezone(UTC),
        marker=False,
        latest=bool(raw.get("IsLatest")),
        size=int(raw.get("Size") or 0),
        etag=raw.get("ETag"),
    )


def _marker_entry(raw: dict[str, Any]) -> _Entry:
    return _Entry(
        key=raw["Key"],
        version_id=raw.get("VersionId") or NULL_VERSION,
        last_modified=raw["LastModified"].astimezone(UTC),
        marker=True,
        latest=bool(raw.get("IsLatest")),
    )


def _identifier(entry: _Entry) -> dict[str, str]:
    """A DeleteObjects ObjectIdentifier: the version by id; an unversioned object (whose content
    can be replaced under the same id "null") also by the ETag it was listed with."""
    identifier = {"Key": entry.key, "VersionId": entry.version_id}
    if entry.version_id == NULL_VERSION and entry.etag and not entry.marker:
        identifier["ETag"] = entry.etag
    return identifier


def _add(tally: _Tally, verdict: _Verdict, sample_size: int) -> None:
    tally.in_scope += verdict.in_scope
    tally.held += verdict.held
    tally.locked += verdict.locked
    tally.future += verdict.future
    tally.unmatched += verdict.unmatched
    tally.due += len(verdict.due)
    for entry in verdict.due:
        if entry.marker:
            tally.markers += 1
        elif entry.latest:
            tally.current += 1
        else:
            tally.noncurrent += 1
        tally.bytes += entry.size
        if len(tally.samples) < sample_size:
            tally.samples.append(entry.record)
    if verdict.oldest is not None and (
        tally.oldest is None or _before(verdict.oldest, tally.oldest)
    ):
        tally.oldest = verdict.oldest


def _instant(clock: datetime | date, zone: Any) -> datetime | date:
    """A clock value as the plan shows it: an aware UTC instant, or a date."""
    if isinstance(clock, datetime) and clock.tzinfo is None:
        return wall_time_to_utc(clock, zone, upper=False)
    return clock


def _before(first: datetime | date, second: datetime | date) -> bool:
    # One rule's clocks are all of one kind: instants, or dates.
    return first < second


def _error_of(error: Any) -> tuple[str, str]:
    details = error.response.get("Error", {}) if hasattr(error, "response") else {}
    code = str(details.get("Code") or "?")
    return code, _short(str(details.get("Message") or ""))


def _short(message: str) -> str:
    # S3's messages and botocore's can quote a key or a parameter's value.
    return without_values(message)[:200]


def _first_line(error: Exception) -> str:
    return _short(str(error)) or type(error).__name__


__all__ = ["S3Store", "open_s3_store"]
