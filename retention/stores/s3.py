"""S3-compatible buckets through boto3.

A rule's scope is every object version and delete marker under the store's prefix plus the
rule's, listed with ListObjectVersions (which serves unversioned buckets too, with version id
"null"). The versions of one key are always judged together, even when they span list pages. One
judgement serves the plan's counts and the run's batches, so the plan counts what the run
deletes. Deletes name each version by its id (a version never changes, so nothing listed can
have changed under us) and, on unversioned objects, by the ETag that was listed as well (S3's
conditional delete), so that an object overwritten since it was listed survives.

Keys are ``(object key, version id)``: the full key, "null" for an unversioned object.

The store is this module; its parts live beside it: reaching S3 (s3_client), listing
(s3_listing), Object Lock (s3_locks), judging versions (s3_judgement) and deleting (s3_delete).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

from retention.config import Rule, S3StoreConfig
from retention.errors import ConfigIssue, RetentionError
from retention.rules import compile_date_pattern
from retention.selection import KeyValues, Selection
from retention.store_protocol import (
    Batch,
    BeforeCommit,
    BeforeWrite,
    IntentDetail,
    KeyFilter,
    RecordStore,
    SubjectSource,
    Survey,
)
from retention.stores import s3_listing as listing
from retention.stores import s3_pages
from retention.stores.s3_client import (
    GONE_CODES,
    NULL_VERSION,
    ClientError,
    error_of,
    ping,
    reachable,
    s3_clients,
    s3_session,
    version_arguments,
)
from retention.stores.s3_delete import delete_entries
from retention.stores.s3_judgement import Tally, add, expired_versions, verdict_of
from retention.stores.s3_listing import Entry, Group, Item, Recorder, Scope
from retention.stores.s3_locks import has_object_lock, is_locked, locked_items

# A run's plan lists a rule's objects to count them; its batches reuse that listing instead of
# listing again, when it holds at most this many versions (about 500 bytes each in memory, key
# and ETag included: 50 MB at most).
SURVEY_LISTING_ENTRIES = 100_000
# A batch that finds nothing to delete still ends after looking at this many list pages' worth,
# so that a long run of kept objects does not make one batch last for ever.
EXAMINED_PAGES_PER_BATCH = 20
# While a batch's deletes are in flight, the listing goes on ahead by up to a batch's pages, at
# most this many (about 500 kB each).
LOOKAHEAD_PAGES = 10


def open_s3_store(
    config: S3StoreConfig, *, read_only: bool, store_for: Callable[[str], RecordStore]
) -> S3Store:
    """Given an S3 store's config, whether it may delete and a way to reach other stores (the
    SQL stores of cross-store rules' subjects), return the store (not yet contacted: ``ping``).
    """
    make_client, ping_client = s3_clients(config)
    return S3Store(config, make_client, ping_client, read_only=read_only, store_for=store_for)


class S3Store:
    """An S3-compatible bucket (or a prefix of one) holding the objects of some rules."""

    def __init__(
        self,
        config: S3StoreConfig,
        make_client: Callable[[], Any],
        ping_client: Any,
        *,
        read_only: bool,
        store_for: Callable[[str], RecordStore],
    ) -> None:
        self.config = config
        self._make_client = make_client
        self._client: Any = None
        # The client is made by the first thread that uses it (a lock check's worker may be).
        self._client_lock = threading.Lock()
        self._ping_client = ping_client
        self.read_only = read_only
        self._store_for = store_for
        self._workers = ThreadPoolExecutor(
            max_workers=config.max_concurrency, thread_name_prefix=f"s3-{config.name}"
        )
        self._lister = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"s3-{config.name}-list"
        )
        # A listing's requests: one page parsed while the next is on its way (s3_pages).
        self._pages = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"s3-{config.name}-page")
        self._object_lock: bool | None = None
        # Per (rule, as_of): the listings this run's plan read, for its batches (bounded).
        self._survey_listings: dict[tuple[object, ...], Recorder] = {}
        self._never_versioned_bucket: bool | None = None
        # The listing a batch stopped in, kept for the next batch (which starts where it ended):
        # its next pages are already on their way.
        self._resume: tuple[tuple[object, ...], Iterator[Item]] | None = None
        # The list pages being read (the last listing begun), to fetch further ahead.
        self._reading: listing.Prefetched | None = None

    @property
    def client(self) -> Any:
        """The store's botocore client, made when first used (``config validate`` never does)."""
        with self._client_lock:
            if self._client is None:
                client = self._make_client()
                s3_pages.register(client)
                self._client = client
            return self._client

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
        self._pages.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()
        self._ping_client.close()

    def ping(self) -> None:
        """Raise StoreUnavailable, saying why in one line, unless the bucket answers HeadBucket
        with these credentials."""
        ping(self._ping_client, self.config.bucket, self._where)

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

    def _scope(self, selection: Selection) -> Scope:
        objects = selection.rule.objects
        if objects is None:
            raise RetentionError(f"rule {selection.rule.name!r} does not select objects")
        pattern = compile_date_pattern(objects.date_pattern) if objects.date_pattern else None
        return Scope(
            prefix=self.config.prefix + objects.prefix,
            relative_from=len(self.config.prefix),
            pattern=pattern if objects.clock == "key_date" else None,
            cross=selection.subjects is not None,
        )

    def _groups(self, prefix: str, key_marker: str | None) -> Iterator[Group]:
        """The keys under ``prefix`` after ``key_marker`` in key order, each with all of its
        versions (pages fetched one ahead). A bucket never versioned is listed with
        ListObjectsV2 (its versioning asked once per store)."""
        if self._never_versioned_bucket is None:
            self._never_versioned_bucket = listing.never_versioned(self.client, self.config.bucket)
        pages = listing.object_pages if self._never_versioned_bucket else listing.version_pages
        self._reading = listing.Prefetched(
            pages(self.client, self.config.bucket, prefix, key_marker, self._pages), self._lister
        )
        return listing.grouped(self._reading)

    def _items(self, selection: Selection, scope: Scope, after: KeyValues | None) -> Iterator[Item]:
        if not scope.cross:
            return listing.key_items(self._groups, scope.prefix, after, self._where)
        assert selection.subjects is not None
        source = self._store_for(selection.subjects.rule.store)
        if not hasattr(source, "due_keys"):
            raise RetentionError(f"store {selection.subjects.rule.store!r} cannot list subjects")
        return listing.subject_items(
            self._groups,
            selection,
            cast(SubjectSource, source),
            self.config.prefix,
            after,
            self._where,
        )

    def _has_object_lock(self) -> bool:
        """Whether the bucket may hold versions under Object Lock, asked once per store."""
        if self._object_lock is None:
            self._object_lock = has_object_lock(
                self.client, self.config.bucket, self.config.name, self._where
            )
        return self._object_lock

    def _locked_items(
        self, selection: Selection, scope: Scope, items: Iterator[Item], now: datetime
    ) -> Iterator[Item]:
        """The items, each with the versions that Object Lock protects among those whose clock
        has expired (checked by HeadObject, a chunk at a time, concurrently), when the bucket
        has Object Lock."""
        if not self._has_object_lock():
            yield from items
            return
        zone = self.config.timezone

        def candidates_of(group: Group) -> list[Entry]:
            return expired_versions(selection, scope, group, zone)

        def locked_flags(candidates: Sequence[Entry]) -> list[bool]:
            with reachable(self._where, "HeadObject (Object Lock)"):
                return list(
                    self._workers.map(
                        lambda entry: is_locked(self.client, self.config.bucket, entry, now),
                        candidates,
                    )
                )

        yield from locked_items(items, candidates_of, locked_flags)

    # --- survey -----------------------------------------------------------------------------

    def survey(self, selection: Selection, sample_size: int) -> Survey:
        """Given a Selection, return in one streaming pass over the rule's listing: versions and
        delete markers due (not held), held (legal holds, Object Lock) and with a future clock,
        how many are in scope, the oldest due clock and the first due keys in listing order;
        details count current and noncurrent versions, delete markers and bytes due, versions
        locked, keys whose date pattern does not match and (cross-store) subjects."""
        scope = self._scope(selection)
        tally = Tally()
        items = self._items(selection, scope, None)
        # Only a store that may delete keeps the listing: it is for this run's batches.
        budget = SURVEY_LISTING_ENTRIES - sum(
            recorded.entries for recorded in self._survey_listings.values()
        )
        recorder = None if self.read_only or scope.cross else Recorder(budget)
        if recorder is not None:
            items = recorder.record(items)
        with reachable(self._where, "listing object versions"):
            for item in self._locked_items(selection, scope, items, datetime.now(UTC)):
                if item.kind != "group":
                    tally.subjects += 1
                    continue
                verdict = verdict_of(selection, scope, item, self.config.timezone)
                add(tally, verdict, sample_size)
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
        before_commit: BeforeCommit | None = None,
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
        deletes nothing. ``only`` is for SQL stores (subjects' rules) and must be None here;
        ``before_commit`` is never called (no transaction commits a batch of objects).
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
            self._reading = None
            items = self._locked_items(selection, scope, iter(surveyed.items), now)
        else:
            items = self._locked_items(selection, scope, self._items(selection, scope, after), now)
        self._resume = None
        chosen: list[Entry] = []
        locked = examined = failed_subjects = 0
        # Cross-store rules: the subjects some of whose objects stay (their rows must stay too),
        # and whose subject each chosen version is.
        kept: dict[KeyValues, None] = {}
        subject_of: dict[KeyValues, KeyValues] = {}
        visited: list[KeyValues] = []
        position = after
        exhausted = True
        with reachable(self._where, "listing object versions"):
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
                verdict = verdict_of(selection, scope, item, self.config.timezone)
                chosen += verdict.due
                locked += verdict.locked
                if item.subject is not None:
                    if verdict.held:
                        kept[item.subject] = None
                    subject_of.update((entry.record, item.subject) for entry in verdict.due)
                examined += len(item.group.entries)
                if len(chosen) >= limit or examined >= EXAMINED_PAGES_PER_BATCH * max(
                    limit, listing.LIST_PAGE_SIZE
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
            before_write(
                keys,
                IntentDetail(
                    markers=tuple(entry.marker for entry in chosen),
                    sizes=tuple(0 if entry.marker else entry.size for entry in chosen),
                ),
            )
        if self._resume is not None and self._reading is not None:
            # The next batch's pages come in while this one's deletes are in flight. Only
            # listing: each of them is deleted after its own intent, by version id (and ETag).
            self._reading.ahead(min(LOOKAHEAD_PAGES, -(-limit // listing.LIST_PAGE_SIZE)))
        started = time.monotonic()
        with reachable(self._where, "DeleteObjects"):
            deleted = delete_entries(self.client, self.config.bucket, chosen, self._workers)
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
                head = self.client.head_object(
                    **version_arguments(self.config.bucket, key, version_id)
                )
            except ClientError as error:
                code, _message = error_of(error)
                if code in GONE_CODES:
                    return False
                if code in ("405", "MethodNotAllowed"):
                    return True  # a delete marker: HEAD is not allowed on it, but it is there
                raise
            return version_id != NULL_VERSION or head.get("VersionId") in (None, NULL_VERSION)

        records = [tuple(record) for record in keys]
        with reachable(self._where, "HeadObject"):
            flags = list(self._workers.map(exists, records))
        return {record for record, flag in zip(records, flags, strict=True) if flag}


__all__ = ["S3Store", "open_s3_store", "s3_session"]
