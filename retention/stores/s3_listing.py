"""Listing a rule's objects: every version and delete marker under a prefix, one key at a time
with all of its versions, and for cross-store rules the objects of each subject in turn.

A listing is a stream of Items, each saying where the listing goes on after it (a batch's
``resume_after``), so that a batch can stop anywhere and the next one start there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, cast

from retention.errors import RetentionError
from retention.rules import DatePattern
from retention.selection import KeyValues, Selection
from retention.store_protocol import SubjectSource
from retention.stores.s3_client import NULL_VERSION, ClientError
from retention.stores.s3_pages import PageChain

LIST_PAGE_SIZE = 1000
SUBJECT_PAGE_SIZE = 500


class Entry(NamedTuple):
    """One listed object version or delete marker (a named tuple: a listing makes one per
    version, and a tuple costs a third of a frozen dataclass to make)."""

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


class Group(NamedTuple):
    """Every listed version and delete marker of one key."""

    key: str
    entries: tuple[Entry, ...]


ItemKind = Literal["group", "subject_done", "subject_failed"]


class Item(NamedTuple):
    """One step of a rule's listing: a key's versions, or (cross-store rules) a subject finished
    or refused; ``position`` is where the listing goes on after it (a batch's resume_after)."""

    kind: ItemKind
    position: KeyValues
    group: Group | None = None
    locked: frozenset[str] = frozenset()
    subject: KeyValues | None = None


@dataclass(frozen=True)
class Scope:
    """How a rule reads the objects it lists."""

    prefix: str
    relative_from: int
    pattern: DatePattern | None
    cross: bool


GroupsOf = Callable[[str, "str | None"], Iterator[Group]]


def never_versioned(client: Any, bucket: str) -> bool:
    """Whether versioning was never turned on for the bucket (then every object is its only,
    "null", version). Unknown counts as versioned: listing versions is always right, only
    slower."""
    try:
        status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    except ClientError:
        status = "unknown"
    return status is None


def version_pages(
    client: Any, bucket: str, prefix: str, key_marker: str | None, pool: ThreadPoolExecutor
) -> Iterator[list[Entry]]:
    """Every version and delete marker under ``prefix`` after the key ``key_marker``, one
    ListObjectVersions page at a time (each next request sent by ``pool`` while this page is
    parsed: s3_pages)."""
    arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE_SIZE}
    if key_marker is not None:
        arguments["KeyMarker"] = key_marker
    for response in PageChain(client, "ListObjectVersions", pool).pages(arguments):
        page = [version_entry(raw) for raw in response.get("Versions", [])]
        page += [marker_entry(raw) for raw in response.get("DeleteMarkers", [])]
        yield page


def object_pages(
    client: Any, bucket: str, prefix: str, key_marker: str | None, pool: ThreadPoolExecutor
) -> Iterator[list[Entry]]:
    """ListObjectsV2 pages, for a bucket that was never versioned: the same entries as
    ListObjectVersions would give, at a fraction of its cost on some servers (each next
    request sent by ``pool`` while this page is parsed: s3_pages)."""
    arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE_SIZE}
    if key_marker is not None:
        arguments["StartAfter"] = key_marker
    for response in PageChain(client, "ListObjectsV2", pool).pages(arguments):
        yield [object_entry(raw) for raw in response.get("Contents", [])]


class Prefetched:
    """List pages fetched ahead in the background: the next page is on its way while this one
    is judged, and ``ahead`` lets the fetching run further while a batch's deletes are in
    flight. ``pool`` has one worker, so requests go one at a time, in order."""

    def __init__(self, pages: Iterator[list[Entry]], pool: ThreadPoolExecutor) -> None:
        self._pages = pages
        self._pool = pool
        self._fetches: deque[Future[list[Entry] | None]] = deque([pool.submit(next, pages, None)])
        self._ended = False

    def __iter__(self) -> Iterator[list[Entry]]:
        return self

    def __next__(self) -> list[Entry]:
        if self._ended:
            raise StopIteration
        page = self._fetches.popleft().result()
        if page is None:
            self._ended = True
            self._fetches.clear()
            raise StopIteration
        if not self._fetches:
            self._fetches.append(self._pool.submit(next, self._pages, None))
        return page

    def ahead(self, pages: int) -> None:
        """Have up to ``pages`` pages fetched or on their way (bounded memory: a batch's worth)
        before the next one is read."""
        while not self._ended and len(self._fetches) < pages:
            self._fetches.append(self._pool.submit(next, self._pages, None))


def grouped(pages: Iterator[list[Entry]]) -> Iterator[Group]:
    """Given list pages in key order, return each key with all its versions: the last key of a
    page is held back until the next page shows whether its versions go on there."""
    pending: tuple[str, list[Entry]] | None = None
    for page in pages:
        by_key: dict[str, list[Entry]] = {}
        for entry in page:
            by_key.setdefault(entry.key, []).append(entry)
        # UTF-8 byte order, S3's, is code point order: sorting the text agrees with the listing.
        for key in sorted(by_key):
            if pending is not None and pending[0] == key:
                pending[1].extend(by_key[key])
                continue
            if pending is not None:
                yield Group(pending[0], tuple(pending[1]))
            pending = (key, by_key[key])
    if pending is not None:
        yield Group(pending[0], tuple(pending[1]))


def key_items(
    groups_of: GroupsOf, prefix: str, after: KeyValues | None, where: str
) -> Iterator[Item]:
    """A rule's listing of the keys under ``prefix``, after the position ``after``
    (``("key", last key)``). ``where`` names the store in errors."""
    key_marker: str | None = None
    if after is not None:
        if len(after) != 2 or after[0] != "key" or not isinstance(after[1], str):
            raise RetentionError(f"{where}: cannot resume a listing after {after!r}")
        key_marker = after[1]
    return (Item("group", ("key", group.key), group) for group in groups_of(prefix, key_marker))


def subject_items(
    groups_of: GroupsOf,
    selection: Selection,
    source: SubjectSource,
    store_prefix: str,
    after: KeyValues | None,
    where: str,
) -> Iterator[Item]:
    """A cross-store rule's listing: its subjects in key order (bounded pages from their SQL
    store, ``source``), and for each one everything under its prefix. Positions are
    ``("subject", previous subject, current subject or None, last key or None)``."""
    subjects = selection.subjects
    objects = selection.rule.objects
    assert subjects is not None
    assert objects is not None
    assert objects.subjects is not None
    owner = objects.subjects
    previous: KeyValues | None = None
    resume_subject: KeyValues | None = None
    resume_key: str | None = None
    if after is not None:
        if len(after) != 4 or after[0] != "subject":
            raise RetentionError(f"{where}: cannot resume a listing after {after!r}")
        previous = cast("KeyValues | None", after[1])
        resume_subject = cast("KeyValues | None", after[2])
        resume_key = cast("str | None", after[3])
    while True:
        page = source.due_keys(subjects, after=previous, limit=SUBJECT_PAGE_SIZE)
        for subject in page:
            done: KeyValues = ("subject", subject, None, None)
            relative = owner.prefix_for(subject)
            if relative is None:
                yield Item("subject_failed", done, subject=subject)
            else:
                key_marker = resume_key if subject == resume_subject else None
                for group in groups_of(store_prefix + relative, key_marker):
                    position = ("subject", previous, subject, group.key)
                    yield Item("group", position, group, subject=subject)
                yield Item("subject_done", done, subject=subject)
            resume_subject = None
            previous = subject
        if len(page) < SUBJECT_PAGE_SIZE:
            return


class Recorder:
    """Keeps the items of a listing while it is read, up to ``limit`` versions; past that it
    keeps nothing (``items`` None), so that memory stays bounded whatever the bucket holds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[Item] | None = []
        self.entries = 0

    def record(self, items: Iterator[Item]) -> Iterator[Item]:
        for item in items:
            if self.items is not None:
                self.entries += len(item.group.entries) if item.group is not None else 1
                if self.entries > self.limit:
                    self.items = None
                else:
                    self.items.append(item)
            yield item


def version_entry(raw: dict[str, Any]) -> Entry:
    """An entry of ListObjectVersions' Versions."""
    return Entry(
        raw["Key"],
        raw.get("VersionId") or NULL_VERSION,
        raw["LastModified"].astimezone(UTC),
        False,
        bool(raw.get("IsLatest")),
        int(raw.get("Size") or 0),
        raw.get("ETag"),
    )


def object_entry(raw: dict[str, Any]) -> Entry:
    """An entry of ListObjectsV2's Contents: the only, current, "null" version of its key."""
    return Entry(
        raw["Key"],
        NULL_VERSION,
        raw["LastModified"].astimezone(UTC),
        False,
        True,
        int(raw.get("Size") or 0),
        raw.get("ETag"),
    )


def marker_entry(raw: dict[str, Any]) -> Entry:
    """An entry of ListObjectVersions' DeleteMarkers."""
    return Entry(
        raw["Key"],
        raw.get("VersionId") or NULL_VERSION,
        raw["LastModified"].astimezone(UTC),
        True,
        bool(raw.get("IsLatest")),
    )
