"""Reading values out of TOML tables, collecting every problem with its key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from retention.config.model import IDENTIFIER
from retention.errors import ConfigIssue
from retention.rules import parse_zone
from retention.subject_prefix import (
    PrefixPart,
)

DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
# A daemon interval or a jitter of more than a year means a typo, and past it the scheduler's
# arithmetic (now + interval) could leave the calendar.
LONGEST_DURATION = timedelta(days=366)


def resolve_path(value: str, base_directory: Path | None) -> Path:
    """Given a path from the config and the config file's folder, return the path, made
    absolute against that folder when it is relative (as it is without a folder).

    Example: ``resolve_path("var/hmac.key", Path("/etc/retention"))`` returns
    ``Path("/etc/retention/var/hmac.key")``; ``resolve_path("/k", Path("/etc"))`` ``Path("/k")``.
    """
    path = Path(value)
    if path.is_absolute() or base_directory is None:
        return path
    return Path(os.path.normpath(base_directory / path))


_SQLITE_URL = re.compile(r"(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?", re.DOTALL)


def resolve_sqlite_url(url: str, base_directory: Path | None) -> str:
    """Given a database URL and the config file's folder, return the URL with a relative SQLite
    file path made absolute against that folder; any other URL (absolute, in-memory, another
    database) as it is.

    Example: ``resolve_sqlite_url("sqlite:///var/app.db", Path("/etc/retention"))`` returns
    ``"sqlite:////etc/retention/var/app.db"``.
    """
    match = _SQLITE_URL.fullmatch(url)
    if match is None or base_directory is None:
        return url
    scheme, file, query = match.group(1), match.group(2), match.group(3) or ""
    if not file or file == ":memory:" or file.startswith(("/", "file:")):
        return url
    return f"{scheme}{resolve_path(file, base_directory)}{query}"


@dataclass(frozen=True)
class PendingSubjects:
    """A cross-store rule's subjects, named before every rule is read."""

    rule_name: str
    prefix: str
    parts: tuple[PrefixPart, ...]
    path: str


@dataclass
class Reader:
    """Collects issues while values are read, so that every problem is reported at once."""

    issues: list[ConfigIssue] = field(default_factory=list)
    # Cross-store rules by path, until every rule is read and their subjects can be linked.
    pending_subjects: dict[str, PendingSubjects] = field(default_factory=dict)
    base_directory: Path | None = None

    def error(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path, message))

    def path(self, value: str | None) -> Path | None:
        return resolve_path(value, self.base_directory) if value else None

    def unknown_keys(self, table: Mapping[str, object], path: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                where = f"{path}.{key}" if path else key
                self.error(where, f"unknown key (known here: {', '.join(sorted(known))})")

    def table(
        self, parent: Mapping[str, object], key: str, *, required: bool = True, path: str = ""
    ) -> Mapping[str, object]:
        where = f"{path}.{key}" if path else key
        value = parent.get(key)
        if value is None:
            if required:
                self.error(where, "missing")
            return {}
        if not isinstance(value, dict):
            self.error(where, f"must be a table, not {type(value).__name__}")
            return {}
        return value

    def string(
        self, table: Mapping[str, object], key: str, path: str, *, required: bool = False
    ) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.error(f"{path}.{key}", "missing")
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(f"{path}.{key}", f"must be a non-empty string, not {value!r}")
            return None
        return value

    def identifier(self, value: object, where: str) -> str | None:
        if value is None:
            self.error(where, "missing")
            return None
        if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
            self.error(where, f"{value!r} is not a plain identifier (letters, digits, _)")
            return None
        return value

    def identifiers(self, value: object, where: str) -> tuple[str, ...]:
        """A string or a non-empty list of strings, each an identifier."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.error(where, "must be a column name or a non-empty list of column names")
            return ()
        names = [self.identifier(item, f"{where}[{index}]") for index, item in enumerate(items)]
        return tuple(name for name in names if name is not None)

    def positive_int(
        self, table: Mapping[str, object], key: str, path: str, default: int, maximum: int
    ) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            self.error(
                f"{path}.{key}", f"must be a whole number from 1 to {maximum}, not {value!r}"
            )
            return default
        return value

    def fraction(self, table: Mapping[str, object], key: str, path: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            self.error(f"{path}.{key}", f"must be a fraction above 0 and at most 1, not {value!r}")
            return default
        return float(value)

    def duration(
        self,
        table: Mapping[str, object],
        key: str,
        path: str,
        default: timedelta,
        minimum: timedelta,
    ) -> timedelta:
        """A duration such as ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` or ``"1h30m"``."""
        raw = table.get(key)
        if raw is None:
            return default
        match = DURATION.fullmatch(raw) if isinstance(raw, str) else None
        if match is None or not raw:
            self.error(
                f"{path}.{key}",
                f"must be a duration such as '30s', '15m', '2h' or '1d', not {raw!r}",
            )
            return default
        try:
            days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
            value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        except (OverflowError, ValueError):
            value = LONGEST_DURATION + timedelta(1)  # thousands of digits, or past timedelta
        if value > LONGEST_DURATION:
            self.error(f"{path}.{key}", f"must be at most {LONGEST_DURATION.days}d, not {raw!r}")
            return default
        if value < minimum:
            self.error(f"{path}.{key}", f"must be at least {minimum}, not {raw!r}")
            return default
        return value

    def zone(self, table: Mapping[str, object], path: str) -> ZoneInfo:
        name = table.get("timezone", "UTC")
        if not isinstance(name, str):
            self.error(f"{path}.timezone", f"must be a time zone name, not {name!r}")
            return ZoneInfo("UTC")
        try:
            return parse_zone(name)
        except ValueError as error:
            self.error(f"{path}.timezone", str(error))
            return ZoneInfo("UTC")
