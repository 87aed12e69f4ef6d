"""Where the trail is: the audit directory and public key file, from the command line's --dir
and --keys or else from the config's [audit] table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from retention.config import AuditSettings, Config
from retention.errors import UsageError


def _audit_settings(config: Callable[[], Config]) -> AuditSettings:
    """Given a way to load the config, return its enabled [audit] settings; UsageError if none."""
    settings = config().audit
    if settings is None or not settings.enabled:
        raise UsageError("the config has no enabled [audit] table: give --dir (and --keys)")
    return settings


def audit_directory(directory: Path | None, config: Callable[[], Config]) -> Path:
    """Given --dir (or None) and a way to load the config, return the audit directory; the
    config is read only when --dir was not given."""
    return directory if directory is not None else _audit_settings(config).directory


def audit_locations(
    directory: Path | None, keys_file: Path | None, config: Callable[[], Config]
) -> tuple[Path, Path]:
    """Given --dir and --keys (either may be None) and a way to load the config, return the audit
    directory and public key file; the config is read only for what was not given."""
    if directory is not None and keys_file is not None:
        return directory, keys_file
    settings = _audit_settings(config)
    return directory or settings.directory, keys_file or settings.public_keys_file
