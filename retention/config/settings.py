"""The readers of [settings], [audit], [state], [daemon] and [checkins]."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from retention.config.model import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_DELETE,
    DEFAULT_MAX_FRACTION,
    MAX_BATCH_SIZE,
    SUPPORTED_URL,
    AuditSettings,
    CheckinSettings,
    DaemonSettings,
    Settings,
    StateSettings,
)
from retention.config.reader import Reader, resolve_path, resolve_sqlite_url


def read_settings(reader: Reader, table: Mapping[str, object]) -> Settings | None:
    path = "settings"
    reader.unknown_keys(
        table,
        path,
        {
            "timezone",
            "batch_size",
            "hash_key_file",
            "hash_key_credential",
            "max_delete",
            "max_fraction",
        },
    )
    hash_key_file = reader.string(table, "hash_key_file", path)
    hash_key_credential = reader.string(table, "hash_key_credential", path)
    if hash_key_file and hash_key_credential:
        reader.error(f"{path}.hash_key_file", "give hash_key_file or hash_key_credential, not both")
    return Settings(
        timezone=reader.zone(table, path),
        batch_size=reader.positive_int(
            table, "batch_size", path, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
        ),
        hash_key_file=reader.path(hash_key_file),
        hash_key_credential=hash_key_credential,
        max_delete=reader.positive_int(table, "max_delete", path, DEFAULT_MAX_DELETE, 10**12),
        max_fraction=reader.fraction(table, "max_fraction", path, DEFAULT_MAX_FRACTION),
    )


def read_audit(reader: Reader, table: Mapping[str, object]) -> AuditSettings | None:
    path = "audit"
    pairs = (
        ("hmac_key_file", "hmac_key_credential"),
        ("signing_key_file", "signing_key_credential"),
    )
    reader.unknown_keys(
        table, path, {"enabled", "directory", "public_keys_file", *(k for p in pairs for k in p)}
    )
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        reader.error(f"{path}.enabled", f"must be true or false, not {enabled!r}")
        enabled = True
    directory = reader.string(table, "directory", path, required=enabled)
    values = {key: reader.string(table, key, path) for pair in pairs for key in pair}
    for file_key, credential_key in pairs:
        if values[file_key] and values[credential_key]:
            reader.error(f"{path}.{file_key}", f"give {file_key} or {credential_key}, not both")
        elif enabled and not (values[file_key] or values[credential_key]):
            reader.error(f"{path}.{file_key}", f"missing (or {credential_key})")
    if directory is None:
        return AuditSettings(Path("."), Path("."), enabled=False) if not enabled else None
    public_keys = reader.string(table, "public_keys_file", path)
    directory_path = resolve_path(directory, reader.base_directory)
    return AuditSettings(
        directory=directory_path,
        public_keys_file=reader.path(public_keys) or directory_path / "public-keys.json",
        hmac_key_file=reader.path(values["hmac_key_file"]),
        hmac_key_credential=values["hmac_key_credential"],
        signing_key_file=reader.path(values["signing_key_file"]),
        signing_key_credential=values["signing_key_credential"],
        enabled=enabled,
    )


def read_state(reader: Reader, table: Mapping[str, object]) -> StateSettings:
    path = "state"
    reader.unknown_keys(table, path, {"url", "url_env", "url_credential"})
    sources = {key: reader.string(table, key, path) for key in ("url", "url_env", "url_credential")}
    if sum(value is not None for value in sources.values()) > 1:
        reader.error(path, "give one of url, url_env or url_credential")
    url = sources["url"]
    if url is not None and not SUPPORTED_URL.match(url):
        reader.error(
            f"{path}.url", "use sqlite:///PATH, postgresql+psycopg://... or mysql+pymysql://..."
        )
    if url is not None:
        sources["url"] = resolve_sqlite_url(url, reader.base_directory)
    return StateSettings(**sources, base_directory=reader.base_directory)


def read_daemon(
    reader: Reader, table: Mapping[str, object], settings: Settings | None
) -> DaemonSettings:
    path = "daemon"
    reader.unknown_keys(table, path, {field.name for field in fields(DaemonSettings)})
    defaults = DaemonSettings()
    address = reader.string(table, "metrics_address", path) or defaults.metrics_address
    try:
        ipaddress.ip_address(address)
    except ValueError:
        reader.error(
            f"{path}.metrics_address", f"must be an IP address such as 127.0.0.1, not {address!r}"
        )
    port = None
    if "metrics_port" in table:
        port = reader.positive_int(table, "metrics_port", path, 9464, 65535)
    second = timedelta(seconds=1)
    return DaemonSettings(
        # Never the host's local zone: a schedule means the same wherever it runs.
        timezone=reader.zone(table, path)
        if "timezone" in table or settings is None
        else settings.timezone,
        metrics_address=address,
        metrics_port=port,
        heartbeat=reader.duration(table, "heartbeat", path, defaults.heartbeat, second),
        lease_ttl=reader.duration(table, "lease_ttl", path, defaults.lease_ttl, 2 * second),
        overdue_grace=reader.duration(
            table, "overdue_grace", path, defaults.overdue_grace, timedelta(0)
        ),
        overdue_refresh=reader.duration(
            table, "overdue_refresh", path, defaults.overdue_refresh, second
        ),
    )


_LONGEST_CHECKIN = timedelta(minutes=1)


def read_checkins(reader: Reader, table: Mapping[str, object]) -> CheckinSettings:
    path = "checkins"
    reader.unknown_keys(table, path, {field.name for field in fields(CheckinSettings)})
    urls: dict[str, str | None] = {}
    for key in ("start", "success", "fail"):
        url = reader.string(table, key, path)
        if url is not None and not _is_http_url(url):
            # Not the value: a check-in URL holds its check's secret token.
            reader.error(f"{path}.{key}", "must be an http:// or https:// URL with a host")
            url = None
        urls[key] = url
    timeout = reader.duration(table, "timeout", path, CheckinSettings.timeout, timedelta(seconds=1))
    if timeout > _LONGEST_CHECKIN:
        reader.error(f"{path}.timeout", "must be at most 1m: a ping must not hold up a purge")
        timeout = CheckinSettings.timeout
    return CheckinSettings(urls["start"], urls["success"], urls["fail"], timeout)


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(character.isspace() or ord(character) < 32 for character in text)
    )
