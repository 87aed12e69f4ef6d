"""S3 Object Lock: whether a bucket has it, and which expired versions it protects now (a legal
hold, or a GOVERNANCE or COMPLIANCE retention until later). Those are held, never fought:
governance is never bypassed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from retention.errors import StoreUnavailable
from retention.runtime.logging import get_logger
from retention.stores.s3_client import (
    CONNECTION_ERRORS,
    GONE_CODES,
    ClientError,
    error_of,
    first_line,
    version_arguments,
)
from retention.stores.s3_listing import Entry, Group, Item

# Object Lock is checked by HeadObject, this many candidate versions at a time.
LOCK_CHECK_CHUNK = 256


def has_object_lock(client: Any, bucket: str, store: str, where: str) -> bool:
    """Whether versions in the bucket may be under Object Lock. Unknown (no permission, not
    implemented) counts as yes, and says so in the log: then every candidate is checked."""
    try:
        response = client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as error:
        code, _message = error_of(error)
        if code == "ObjectLockConfigurationNotFoundError":
            return False
        get_logger().warning(
            "s3.object_lock_unknown",
            store=store,
            code=code,
            consequence="every expired version is checked with HeadObject (slower); "
            "allow s3:GetBucketObjectLockConfiguration to avoid it",
        )
        return True
    except CONNECTION_ERRORS as error:
        raise StoreUnavailable(f"{where} is unreachable: {first_line(error)}") from error
    configuration = response.get("ObjectLockConfiguration", {})
    return bool(configuration.get("ObjectLockEnabled") == "Enabled")


def is_locked(client: Any, bucket: str, entry: Entry, now: datetime) -> bool:
    """Whether Object Lock forbids deleting this version now: a legal hold, or a GOVERNANCE
    or COMPLIANCE retention until later (governance is never bypassed)."""
    try:
        head = client.head_object(**version_arguments(bucket, entry.key, entry.version_id))
    except ClientError as error:
        code, _message = error_of(error)
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


def locked_items(
    items: Iterator[Item],
    candidates_of: Callable[[Group], list[Entry]],
    locked_flags: Callable[[Sequence[Entry]], list[bool]],
) -> Iterator[Item]:
    """The items, each with the versions Object Lock protects among its candidates (those
    ``candidates_of`` its group, whose clock has expired): ``locked_flags`` checks them, a
    chunk at a time."""
    chunk: list[Item] = []
    candidates: list[Entry] = []
    for item in items:
        chunk.append(item)
        if item.group is not None:
            candidates += candidates_of(item.group)
        if len(candidates) >= LOCK_CHECK_CHUNK:
            yield from _with_locks(chunk, candidates, locked_flags)
            chunk, candidates = [], []
    yield from _with_locks(chunk, candidates, locked_flags)


def _with_locks(
    chunk: list[Item],
    candidates: list[Entry],
    locked_flags: Callable[[Sequence[Entry]], list[bool]],
) -> Iterator[Item]:
    flags = locked_flags(candidates)
    locked = {entry.record for entry, flag in zip(candidates, flags, strict=True) if flag}
    for item in chunk:
        if item.group is None or not locked:
            yield item
            continue
        versions = frozenset(
            entry.version_id for entry in item.group.entries if entry.record in locked
        )
        yield item._replace(locked=versions)
