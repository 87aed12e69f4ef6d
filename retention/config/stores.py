"""The readers of [stores.NAME]: SQL databases, S3 buckets, backup folders."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from retention.config.model import FilesStoreConfig, S3StoreConfig, SqlStoreConfig, StoreConfig
from retention.config.reader import Reader, resolve_path, resolve_sqlite_url


def read_stores(reader: Reader, table: Mapping[str, object]) -> dict[str, StoreConfig]:
    stores: dict[str, StoreConfig] = {}
    for name, raw in table.items():
        path = f"stores.{name}"
        if reader.identifier(name, path) is None:
            continue
        if not isinstance(raw, dict):
            reader.error(path, "must be a table: [stores.NAME]")
            continue
        kind = raw.get("kind")
        if kind == "s3":
            stores[name] = _read_s3_store(reader, name, raw, path)
            continue
        if kind == "files":
            files_store = _read_files_store(reader, name, raw, path)
            if files_store is not None:
                stores[name] = files_store
            continue
        if kind != "sql":
            reader.error(
                f"{path}.kind", f"unknown store kind {kind!r} (supported: 'sql', 's3', 'files')"
            )
            continue
        reader.unknown_keys(raw, path, {"kind", "url", "url_env", "url_credential", "timezone"})
        sources = {
            key: reader.string(raw, key, path) for key in ("url", "url_env", "url_credential")
        }
        if sum(value is not None for value in sources.values()) != 1:
            reader.error(
                path,
                "give exactly one of url, url_env (an environment variable holding the URL) or "
                "url_credential (a file in $CREDENTIALS_DIRECTORY); keep passwords out of the TOML",
            )
        url = sources["url"]
        if url is not None and not re.match(
            r"(sqlite|postgresql\+psycopg|mysql\+pymysql|mariadb\+pymysql)://", url
        ):
            reader.error(
                f"{path}.url",
                "use sqlite:///PATH, postgresql+psycopg://... or mysql+pymysql://... "
                "(the drivers retention ships with)",
            )
        stores[name] = SqlStoreConfig(
            name=name,
            timezone=reader.zone(raw, path),
            url=resolve_sqlite_url(url, reader.base_directory) if url is not None else None,
            url_env=sources["url_env"],
            url_credential=sources["url_credential"],
            base_directory=reader.base_directory,
        )
    return stores


_S3_STORE_KEYS = {
    "kind",
    "bucket",
    "prefix",
    "region",
    "endpoint_url",
    "addressing_style",
    "credentials_file",
    "credentials_credential",
    "profile",
    "max_concurrency",
    "max_attempts",
    "timezone",
}
# S3's own rules for bucket names (3-63 characters, lower case, digits, dots, hyphens).
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _read_s3_store(
    reader: Reader, name: str, raw: Mapping[str, object], path: str
) -> S3StoreConfig:
    reader.unknown_keys(raw, path, _S3_STORE_KEYS)
    bucket = reader.string(raw, "bucket", path, required=True) or ""
    if bucket and not BUCKET.fullmatch(bucket):
        reader.error(f"{path}.bucket", f"{bucket!r} is not a valid S3 bucket name")
    prefix = object_prefix(reader, raw, path)
    endpoint_url = reader.string(raw, "endpoint_url", path)
    if endpoint_url is not None and not re.match(r"https?://[^/\s]+", endpoint_url):
        reader.error(f"{path}.endpoint_url", "must be an http:// or https:// URL")
    credentials_file = reader.string(raw, "credentials_file", path)
    credentials_credential = reader.string(raw, "credentials_credential", path)
    if credentials_file and credentials_credential:
        reader.error(path, "give credentials_file or credentials_credential, not both")
    style = raw.get("addressing_style", "auto")
    if style not in ("auto", "path", "virtual"):
        reader.error(f"{path}.addressing_style", "must be 'auto', 'path' or 'virtual'")
        style = "auto"
    return S3StoreConfig(
        name=name,
        bucket=bucket,
        timezone=reader.zone(raw, path),
        prefix=prefix,
        region=reader.string(raw, "region", path),
        endpoint_url=endpoint_url,
        addressing_style=style,  # type: ignore[arg-type]  # checked just above
        credentials_file=reader.path(credentials_file),
        credentials_credential=credentials_credential,
        profile=reader.string(raw, "profile", path),
        max_concurrency=reader.positive_int(raw, "max_concurrency", path, 8, 64),
        max_attempts=reader.positive_int(raw, "max_attempts", path, 8, 20),
    )


def _read_files_store(
    reader: Reader, name: str, raw: Mapping[str, object], path: str
) -> FilesStoreConfig | None:
    reader.unknown_keys(raw, path, {"kind", "root", "timezone"})
    root = reader.string(raw, "root", path, required=True)
    zone = reader.zone(raw, path)
    if root is None:
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


def object_prefix(reader: Reader, raw: Mapping[str, object], path: str) -> str:
    prefix = raw.get("prefix", "")
    if not isinstance(prefix, str):
        reader.error(f"{path}.prefix", f"must be a string, not {prefix!r}")
        return ""
    if prefix.startswith("/"):
        reader.error(f"{path}.prefix", "S3 keys do not start with '/': drop the leading '/'")
    return prefix
