"""The readers of [stores.NAME]: SQL databases, S3 buckets, backup folders."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from retention.config.model import (
    SUPPORTED_URL,
    SUPPORTED_URL_FORMS,
    FilesStoreConfig,
    S3StoreConfig,
    SqlStoreConfig,
    StoreConfig,
)
from retention.config.reader import Reader, resolve_path, resolve_sqlite_url, text, whole


def read_stores(reader: Reader, table: Mapping[str, object]) -> dict[str, StoreConfig]:
    """Each store of a kind the declaration knows (a store it refused is already taken out)."""
    stores: dict[str, StoreConfig] = {}
    for name, raw in table.items():
        path = f"stores.{name}"
        if not isinstance(raw, dict):
            continue
        kind = raw.get("kind")
        if kind == "s3":
            stores[name] = _read_s3_store(reader, name, raw, path)
        elif kind == "files":
            files_store = _read_files_store(reader, name, raw, path)
            if files_store is not None:
                stores[name] = files_store
        elif kind == "sql":
            stores[name] = _read_sql_store(reader, name, raw, path)
    return stores


def _read_sql_store(
    reader: Reader, name: str, raw: Mapping[str, object], path: str
) -> SqlStoreConfig:
    url = text(raw, "url")
    if url is not None and not SUPPORTED_URL.match(url):
        reader.error(f"{path}.url", SUPPORTED_URL_FORMS)
    return SqlStoreConfig(
        name=name,
        timezone=reader.zone(raw, path),
        url=resolve_sqlite_url(url, reader.base_directory) if url is not None else None,
        url_env=text(raw, "url_env"),
        url_credential=text(raw, "url_credential"),
        base_directory=reader.base_directory,
    )


# S3's own rules for bucket names (3-63 characters, lower case, digits, dots, hyphens).
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _read_s3_store(
    reader: Reader, name: str, raw: Mapping[str, object], path: str
) -> S3StoreConfig:
    style = text(raw, "addressing_style") or "auto"
    return S3StoreConfig(
        name=name,
        bucket=text(raw, "bucket") or "",
        timezone=reader.zone(raw, path),
        prefix=text(raw, "prefix") or "",
        region=text(raw, "region"),
        endpoint_url=text(raw, "endpoint_url"),
        addressing_style=style,  # type: ignore[arg-type]  # one of three: the declaration's
        credentials_file=reader.path(text(raw, "credentials_file")),
        credentials_credential=text(raw, "credentials_credential"),
        profile=text(raw, "profile"),
        max_concurrency=whole(raw, "max_concurrency", 8),
        max_attempts=whole(raw, "max_attempts", 8),
    )


def _read_files_store(
    reader: Reader, name: str, raw: Mapping[str, object], path: str
) -> FilesStoreConfig | None:
    root = text(raw, "root")
    zone = reader.zone(raw, path)
    if root is None:
        return None
    if "\x00" in root:
        reader.error(f"{path}.root", "a path has no NUL character")
        return None
    root_path = Path(root)
    if not root_path.is_absolute():
        # Relative to the config file, never to the working directory: where `retention` is
        # started from must not change which folder it deletes from.
        if reader.base_directory is None:
            reader.error(f"{path}.root", f"{root!r}: give an absolute path")
            return None
        root_path = resolve_path(root, reader.base_directory)
    # A root of / (however spelt: /tmp/.., //) would put the whole machine in scope.
    if Path(*[part for part in root_path.parts if part not in ("", ".")]).resolve() == Path("/"):
        reader.error(f"{path}.root", "refusing / as a root: name the backup folder itself")
        return None
    return FilesStoreConfig(name=name, root=root_path, timezone=zone)
