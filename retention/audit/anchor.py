"""Anchors: copies of signed checkpoints kept out of the host's reach, so that a truncated tail or
a rewritten history can be detected later (``audit verify --anchor``).

An anchor is the checkpoint's exact line. It goes to a directory (one file per checkpoint,
``checkpoint-<seq>.jsonl``, never replaced), or to an S3 bucket under a prefix (same names; with
``retain_days``, under Object Lock COMPLIANCE retention). boto3 finds credentials the usual way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from retention.audit.entries import StoredEntry
from retention.config import read_within
from retention.errors import AuditFailure, StoreUnavailable, UsageError

S3_SCHEME = "s3://"
ANCHOR_SUFFIX = ".jsonl"
RETENTION_MODE = "COMPLIANCE"


@dataclass(frozen=True)
class Receipt:
    """Where an anchor went, and how long the bucket will refuse to delete it."""

    location: str
    retained_until: datetime | None = None
    warning: str | None = None


def anchor_name(seq: int) -> str:
    """Given a checkpoint's seq, return its anchor's file or object name.

    Example: ``anchor_name(41)`` returns ``"checkpoint-000000000041.jsonl"``.
    """
    return f"checkpoint-{seq:012d}{ANCHOR_SUFFIX}"


def _s3_location(url: str) -> tuple[str, str]:
    """Given ``s3://bucket/prefix``, return (bucket, prefix without surrounding slashes)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise UsageError(f"{url!r} is not an s3://bucket/prefix URL")
    return parsed.netloc, parsed.path.strip("/")


def _s3_client(endpoint_url: str | None) -> Any:
    """Given an endpoint (None: AWS), return a boto3 S3 client (credentials: boto3's chain)."""
    import boto3  # type: ignore[import-untyped]  # imported here: only S3 anchors need it

    return boto3.client("s3", endpoint_url=endpoint_url)


def _boto_errors() -> Any:
    """Return botocore's exceptions module (imported here: only S3 anchors need it)."""
    from botocore import exceptions  # type: ignore[import-untyped]

    return exceptions


def _s3_failure(url: str, error: Exception) -> Exception:
    """Given an S3 call's exception, return the expected error to raise (69 when S3 cannot be
    reached or no credentials were found, else 70)."""
    errors = _boto_errors()
    if isinstance(error, errors.EndpointConnectionError | errors.NoCredentialsError):
        return StoreUnavailable(f"{url}: {error}")
    if isinstance(error, errors.ClientError):
        code = error.response.get("Error", {}).get("Code", "?")
        message = error.response.get("Error", {}).get("Message", "")
        return AuditFailure(f"{url}: S3 refused: {code} {message}".rstrip())
    return AuditFailure(f"{url}: {error}")


def _object_lock_enabled(client: Any, bucket: str) -> bool | None:
    """Given a client and a bucket, return whether Object Lock is on (None: cannot tell)."""
    try:
        response = client.get_object_lock_configuration(Bucket=bucket)
    except _boto_errors().ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
            return False
        return None
    return bool(response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")


def export_to_s3(
    checkpoint: StoredEntry,
    url: str,
    *,
    endpoint_url: str | None,
    retain_days: int | None,
    now: datetime,
) -> Receipt:
    """Given a checkpoint, an ``s3://bucket/prefix`` URL and the time, put the checkpoint's line
    there as ``prefix/checkpoint-<seq>.jsonl``; with ``retain_days``, under Object Lock
    COMPLIANCE retention until now + that many days (AuditFailure, nothing written, when the
    bucket has no Object Lock). Return where it went."""
    errors = _boto_errors()
    bucket, prefix = _s3_location(url)
    key = "/".join(part for part in (prefix, anchor_name(checkpoint.content["seq"])) if part)
    location = f"s3://{bucket}/{key}"
    try:
        client = _s3_client(endpoint_url)
        locked = _object_lock_enabled(client, bucket)
        arguments: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Body": checkpoint.raw + b"\n",
            "ContentType": "application/json",
            "ChecksumAlgorithm": "SHA256",
        }
        until = None
        if retain_days is not None:
            if locked is False:
                raise AuditFailure(
                    f"bucket {bucket!r} has no Object Lock: --retain-days cannot be honoured "
                    "(create the bucket with Object Lock enabled); nothing was written"
                )
            until = now + timedelta(days=retain_days)
            arguments |= {"ObjectLockMode": RETENTION_MODE, "ObjectLockRetainUntilDate": until}
        client.put_object(**arguments)
    except (errors.BotoCoreError, errors.ClientError) as error:
        raise _s3_failure(location, error) from error
    warning = None
    if locked is False:
        warning = f"bucket {bucket!r} has no Object Lock: this anchor can be deleted or replaced"
    elif locked is None:
        warning = f"cannot tell whether bucket {bucket!r} has Object Lock (no permission to ask)"
    elif until is None:
        warning = "no retention set on this object (the bucket's default, if any, applies)"
    return Receipt(location, until, warning)


def export_to_file(checkpoint: StoredEntry, path: Path) -> Receipt:
    """Given a checkpoint and a directory (created when missing), write the checkpoint's line
    there as ``checkpoint-<seq>.jsonl``. Never replaces an anchor: the same line already there
    is a no-op, a different one is an AuditFailure (the history was rewritten). A path that
    exists and is not a directory is a UsageError. Return where it went."""
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"--to {str(path)!r} is not a directory: anchors go into a directory, one file per "
            "checkpoint, so that none replaces another"
        )
    target = path / anchor_name(checkpoint.content["seq"])
    content = checkpoint.raw + b"\n"
    temporary = path / f".{target.name}.{os.getpid()}.tmp"
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(descriptor, content)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            # link() fails when the target exists: an earlier anchor is never replaced.
            os.link(temporary, target)
        except FileExistsError:
            if target.read_bytes() != content:
                raise AuditFailure(
                    f"{str(target)!r} already holds a different checkpoint "
                    f"{checkpoint.content['seq']}: the trail's history differs from the one "
                    "anchored there; not replaced"
                ) from None
            return Receipt(str(target), warning="that checkpoint was already anchored there")
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as error:
        raise AuditFailure(f"cannot write the anchor {str(target)!r}: {error.strerror}") from error
    return Receipt(str(target))


def export_anchor(
    checkpoint: StoredEntry,
    destination: str,
    *,
    endpoint_url: str | None = None,
    retain_days: int | None = None,
    now: datetime,
) -> Receipt:
    """Given a checkpoint and ``--to`` (a path or an s3:// URL), export it there."""
    if destination.startswith(S3_SCHEME):
        return export_to_s3(
            checkpoint, destination, endpoint_url=endpoint_url, retain_days=retain_days, now=now
        )
    if retain_days is not None:
        raise UsageError("--retain-days applies to s3:// destinations only")
    return export_to_file(checkpoint, Path(destination))


def _load_s3(url: str, endpoint_url: str | None) -> list[tuple[str, bytes]]:
    """Given an s3:// URL naming one anchor object (``….jsonl``) or a prefix (every anchor
    under it), return (source, bytes) for each."""
    errors = _boto_errors()
    bucket, key = _s3_location(url)
    try:
        client = _s3_client(endpoint_url)
        if key.endswith(ANCHOR_SUFFIX):
            keys = [key]
        else:
            keys = []
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{key}/" if key else ""
            )
            for page in pages:
                keys += [
                    item["Key"]
                    for item in page.get("Contents", [])
                    if item["Key"].endswith(ANCHOR_SUFFIX)
                ]
        found = []
        for name in sorted(keys):
            body = client.get_object(Bucket=bucket, Key=name)["Body"].read()
            found.append((f"s3://{bucket}/{name}", bytes(body)))
    except (errors.BotoCoreError, errors.ClientError) as error:
        raise _s3_failure(url, error) from error
    if not found:
        raise UsageError(f"--anchor {url}: no anchor (*{ANCHOR_SUFFIX}) there")
    return found


# An anchor is one checkpoint entry, under a kilobyte; past this the file is something else
# (/dev/zero never ends).
LONGEST_ANCHOR_BYTES = 2**20


def load_anchors(source: str, endpoint_url: str | None = None) -> list[tuple[str, bytes]]:
    """Given ``--anchor`` (a file, a directory of anchors, or an s3:// URL of one anchor or a
    prefix), return (source, bytes) of each anchored checkpoint found there."""
    if source.startswith(S3_SCHEME):
        return _load_s3(source, endpoint_url)
    path = Path(source)
    files = sorted(path.glob(f"*{ANCHOR_SUFFIX}")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"--anchor {source}: no anchor (*{ANCHOR_SUFFIX}) in that directory")

    def error(message: str) -> UsageError:
        return UsageError(f"--anchor {source}: {message}")

    return [
        (str(file), read_within(file, LONGEST_ANCHOR_BYTES, "an anchor", error)) for file in files
    ]
