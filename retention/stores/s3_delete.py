"""Deleting listed versions: DeleteObjects requests of at most 1,000 keys, concurrently, each
version named by its id and an unversioned object also by the ETag it was listed with, the keys
S3 asks to retry sent again with backoff. Refusals are counted by S3 error code, never by key."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from retention.selection import KeyValues
from retention.stores.s3_client import NULL_VERSION, short
from retention.stores.s3_listing import Entry

DELETE_CHUNK_SIZE = 1000
# Per-key errors that S3 asks us to try again, and how many times we do.
RETRYABLE_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable"})
KEY_RETRIES = 4
RETRY_BASE_SECONDS = 0.2


@dataclass(frozen=True)
class Deleted:
    """What the DeleteObjects requests of a batch came to: versions deleted, versions Object
    Lock kept, refusals by (code, message), and the keys of every version still there."""

    done: int = 0
    locked: int = 0
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    stayed: tuple[KeyValues, ...] = ()


def delete_entries(
    client: Any, bucket: str, entries: Sequence[Entry], workers: ThreadPoolExecutor
) -> Deleted:
    """Given listed versions, delete them in DeleteObjects requests of at most 1,000 keys, sent
    by ``workers``; return what came of it. S3's exceptions propagate."""
    chunks = [
        entries[start : start + DELETE_CHUNK_SIZE]
        for start in range(0, len(entries), DELETE_CHUNK_SIZE)
    ]
    results = list(workers.map(lambda chunk: delete_chunk(client, bucket, chunk), chunks))
    failures: Counter[tuple[str, str]] = Counter()
    for result in results:
        failures.update(result.failures)
    return Deleted(
        done=sum(result.done for result in results),
        locked=sum(result.locked for result in results),
        failures=failures,
        stayed=tuple(record for result in results for record in result.stayed),
    )


def delete_chunk(client: Any, bucket: str, entries: Sequence[Entry]) -> Deleted:
    """One DeleteObjects request (Quiet: only errors come back), its keys that S3 asks to
    retry sent again with exponential backoff."""
    done = locked = 0
    failures: Counter[tuple[str, str]] = Counter()
    stayed: list[KeyValues] = []
    pending = list(entries)
    for attempt in range(KEY_RETRIES + 1):
        response = client.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [identifier(entry) for entry in pending], "Quiet": True},
        )
        retry: list[Entry] = []
        refused = 0
        errors = response.get("Errors", [])
        # Only refusals need finding among the chunk's versions.
        by_record = {entry.record: entry for entry in pending} if errors else {}
        for error in errors:
            record = (error.get("Key", ""), error.get("VersionId") or NULL_VERSION)
            entry = by_record.get(record) or next((e for e in pending if e.key == record[0]), None)
            code = error.get("Code", "?")
            message = short(error.get("Message", ""), record[0])
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
    return Deleted(done=done, locked=locked, failures=failures, stayed=tuple(stayed))


def identifier(entry: Entry) -> dict[str, str]:
    """A DeleteObjects ObjectIdentifier: the version by id; an unversioned object (whose content
    can be replaced under the same id "null") also by the ETag it was listed with."""
    result = {"Key": entry.key, "VersionId": entry.version_id}
    if entry.version_id == NULL_VERSION and entry.etag and not entry.marker:
        result["ETag"] = entry.etag
    return result
