"""Judging a key's listed versions under a rule: what is due, held, locked, in the future or
unreadable, and the survey's running totals. Pure: no request to S3."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from retention.holds import object_held
from retention.rules import is_expired, is_future, read_date, wall_time_to_utc
from retention.selection import KeyValues, Selection
from retention.stores.s3_listing import Entry, Group, Item, Scope


@dataclass(slots=True)
class Verdict:
    """What one key's versions come to under a selection."""

    due: list[Entry] = field(default_factory=list)
    held: int = 0
    locked: int = 0
    future: int = 0
    unmatched: int = 0
    in_scope: int = 0
    oldest: datetime | date | None = None


@dataclass
class Tally:
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


def clock_of(scope: Scope, group: Group, entry: Entry) -> datetime | date | None:
    """A version's clock: the date its key holds (None when the key does not match the
    pattern), else its LastModified."""
    if scope.pattern is None:
        return entry.last_modified
    return read_date(scope.pattern, group.key[scope.relative_from :])


def expired_versions(selection: Selection, scope: Scope, group: Group, zone: Any) -> list[Entry]:
    """The versions (not delete markers) of a key whose clock has expired."""
    versions = [entry for entry in group.entries if not entry.marker]
    if scope.cross:
        return versions
    expired = []
    for entry in versions:
        clock = clock_of(scope, group, entry)
        if clock is not None and is_expired(clock, selection.default, zone):
            expired.append(entry)
    return expired


def verdict_of(selection: Selection, scope: Scope, item: Item, zone: Any) -> Verdict:
    """Given a key's versions, return what is due: every version whose clock has expired and
    that Object Lock does not protect, and every delete marker whose own clock has expired or
    that goes with the last versions of its key, except a current marker over versions that
    stay. A marker with no version under it goes by its own clock only (the key's date, or
    its own LastModified). A held key keeps everything."""
    assert item.group is not None
    if len(item.group.entries) == 1 and not scope.cross:
        return verdict_of_one(selection, scope, item, zone)
    return verdict_of_many(selection, scope, item, zone)


def verdict_of_many(selection: Selection, scope: Scope, item: Item, zone: Any) -> Verdict:
    """verdict_of for any key, however many versions it has."""
    group = item.group
    assert group is not None
    verdict = Verdict()
    expired: set[str] = set()
    for entry in group.entries:
        if scope.cross:
            expired.add(entry.version_id)
            continue
        clock = clock_of(scope, group, entry)
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
            clock = clock_of(scope, group, entry)
            assert clock is not None
            oldest = instant(clock, zone)
            if verdict.oldest is None or before(oldest, verdict.oldest):
                verdict.oldest = oldest
    return verdict


def verdict_of_one(selection: Selection, scope: Scope, item: Item, zone: Any) -> Verdict:
    """verdict_of for a key listed with one version or one delete marker (every key of an
    unversioned bucket): the same verdict, without the sets and lists that several versions
    need. It goes by its own clock; Object Lock only ever protects a version."""
    assert item.group is not None
    entry = item.group.entries[0]
    clock = clock_of(scope, item.group, entry)
    if clock is None:
        return Verdict(unmatched=1)
    if not is_expired(clock, selection.default, zone):
        return Verdict(in_scope=1, future=int(is_future(clock, selection.as_of, zone)))
    held = object_held(selection.holds, item.group.key)
    if entry.version_id in item.locked:
        return Verdict(in_scope=1, held=1, locked=0 if held else 1)
    if held:
        return Verdict(in_scope=1, held=1)
    return Verdict(due=[entry], in_scope=1, oldest=instant(clock, zone))


def add(tally: Tally, verdict: Verdict, sample_size: int) -> None:
    """Add a key's verdict to a survey's totals (and its first due keys to the samples)."""
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
        tally.oldest is None or before(verdict.oldest, tally.oldest)
    ):
        tally.oldest = verdict.oldest


def instant(clock: datetime | date, zone: Any) -> datetime | date:
    """A clock value as the plan shows it: an aware UTC instant, or a date."""
    if isinstance(clock, datetime) and clock.tzinfo is None:
        return wall_time_to_utc(clock, zone, upper=False)
    return clock


def before(first: datetime | date, second: datetime | date) -> bool:
    # One rule's clocks are all of one kind: instants, or dates.
    return first < second
