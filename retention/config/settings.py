"""The readers of [settings], [audit], [state], [daemon] and [checkins]."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from retention.config.model import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_DELETE,
    DEFAULT_MAX_FRACTION,
    SUPPORTED_URL,
    SUPPORTED_URL_FORMS,
    AuditSettings,
    CheckinSettings,
    DaemonSettings,
    Settings,
    StateSettings,
)
from retention.config.reader import (
    Reader,
    flag,
    fraction,
    resolve_path,
    resolve_sqlite_url,
    text,
    whole,
)


def read_settings(reader: Reader, table: Mapping[str, object]) -> Settings:
    path = "settings"
    return Settings(
        timezone=reader.zone(table, path),
        batch_size=whole(table, "batch_size", DEFAULT_BATCH_SIZE),
        hash_key_file=reader.path(text(table, "hash_key_file")),
        hash_key_credential=text(table, "hash_key_credential"),
        max_delete=whole(table, "max_delete", DEFAULT_MAX_DELETE),
        max_fraction=fraction(table, "max_fraction", DEFAULT_MAX_FRACTION),
    )


def read_audit(reader: Reader, table: Mapping[str, object]) -> AuditSettings | None:
    """An enabled trail needs its directory and both keys: rules between keys and a value,
    which the declaration leaves to this reader."""
    path = "audit"
    enabled = flag(table, "enabled", True)
    directory = text(table, "directory")
    if enabled and directory is None and "directory" not in reader.rejected_keys(path):
        reader.error(f"{path}.directory", "missing")
    values = {key: text(table, key) for pair in _AUDIT_KEYS for key in pair}
    for file_key, credential_key in _AUDIT_KEYS:
        given = values[file_key] or values[credential_key]
        if enabled and not given and not {file_key, credential_key} & reader.rejected_keys(path):
            reader.error(f"{path}.{file_key}", f"missing (or {credential_key})")
    if directory is None:
        return AuditSettings(Path("."), Path("."), enabled=False) if not enabled else None
    directory_path = resolve_path(directory, reader.base_directory)
    return AuditSettings(
        directory=directory_path,
        public_keys_file=reader.path(text(table, "public_keys_file"))
        or directory_path / "public-keys.json",
        hmac_key_file=reader.path(values["hmac_key_file"]),
        hmac_key_credential=values["hmac_key_credential"],
        signing_key_file=reader.path(values["signing_key_file"]),
        signing_key_credential=values["signing_key_credential"],
        enabled=enabled,
    )


_AUDIT_KEYS = (
    ("hmac_key_file", "hmac_key_credential"),
    ("signing_key_file", "signing_key_credential"),
)


def read_state(reader: Reader, table: Mapping[str, object]) -> StateSettings:
    path = "state"
    sources = {key: text(table, key) for key in ("url", "url_env", "url_credential")}
    url = sources["url"]
    if url is not None and not SUPPORTED_URL.match(url):
        reader.error(f"{path}.url", SUPPORTED_URL_FORMS)
    if url is not None:
        sources["url"] = resolve_sqlite_url(url, reader.base_directory)
    return StateSettings(**sources, base_directory=reader.base_directory)


def read_daemon(reader: Reader, table: Mapping[str, object], settings: Settings) -> DaemonSettings:
    path = "daemon"
    defaults = DaemonSettings()
    address = text(table, "metrics_address") or defaults.metrics_address
    try:
        ipaddress.ip_address(address)
    except ValueError:
        reader.error(
            f"{path}.metrics_address", f"must be an IP address such as 127.0.0.1, not {address!r}"
        )
    port = whole(table, "metrics_port", 0) or None
    second = timedelta(seconds=1)
    return DaemonSettings(
        # Never the host's local zone: a schedule means the same wherever it runs.
        timezone=reader.zone(table, path) if "timezone" in table else settings.timezone,
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
    urls: dict[str, str | None] = {}
    for key in ("start", "success", "fail"):
        url = text(table, key)
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
