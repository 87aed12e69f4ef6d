"""Reading values out of TOML tables, collecting every problem with its key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from retention.errors import ConfigIssue
from retention.rules import parse_zone
from retention.subject_prefix import (
    PrefixPart,
)

DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
# A daemon interval or a jitter of more than a year means a typo, and past it the scheduler's
# arithmetic (now + interval) could leave the calendar.
LONGEST_DURATION = timedelta(days=366)
# A message quotes at most this many characters of a value: enough to find it in the file, and
# a 5,000-digit period is not echoed whole.
LONGEST_SHOWN = 60

# A value quoted in a message. Every quoted value is matched, short or long, so that the text
# between two of them ("'9y' is longer ... (e.g. '1000y')") is never taken for one.
_QUOTED = re.compile("'[^'\\n]*'|\"[^\"\\n]*\"")


def cut_long_values(message: str) -> str:
    """Given an error message, return it with each quoted value cut as the declaration's
    messages cut values (``cut_short``): a 5,000-character time zone is not echoed whole.

    Example: ``cut_long_values("unknown time zone '" + "A" * 99 + "'")`` returns ``"unknown
    time zone '"`` followed by 56 A's and ``"..."``.
    """
    return _QUOTED.sub(lambda match: cut_short(match.group(0)), message)


def cut_short(text: str) -> str:
    """Given a value as a message quotes it, return it cut to ``LONGEST_SHOWN`` characters.

    Example: ``cut_short("'" + "A" * 99 + "'")`` returns ``"'"`` and 56 A's and ``"..."``.
    """
    return text if len(text) <= LONGEST_SHOWN else text[: LONGEST_SHOWN - 3] + "..."


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
        self.issues.append(ConfigIssue(path, cut_long_values(message)))

    def path(self, value: str | None) -> Path | None:
        return resolve_path(value, self.base_directory) if value else None

    def rejected_keys(self, path: str) -> set[str]:
        """The keys of the table at ``path`` that an issue was found at or in."""
        keys = set()
        for issue in self.issues:
            if issue.path.startswith(f"{path}."):
                keys.add(re.split(r"[.\[]", issue.path[len(path) + 1 :], maxsplit=1)[0])
        return keys

    def has_issues_under(self, path: str) -> bool:
        """Whether an issue was found at ``path`` or inside it (``rules[2]``: ``rules[2].key``)."""
        return any(
            issue.path == path or issue.path.startswith((f"{path}.", f"{path}["))
            for issue in self.issues
        )

    def duration(
        self,
        table: Mapping[str, object],
        key: str,
        path: str,
        default: timedelta,
        minimum: timedelta,
    ) -> timedelta:
        """A duration such as ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` or ``"1h30m"``."""
        raw = text(table, key)
        match = DURATION.fullmatch(raw) if raw else None
        if match is None:  # absent, or refused by the declaration
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
        try:
            return parse_zone(text(table, "timezone") or "UTC")
        except ValueError as error:
            self.error(f"{path}.timezone", str(error))
            return ZoneInfo("UTC")


# Typed access to a table the declaration has checked (retention.config.validation): a value is
# of its declared type or absent (left out, or taken out with its error already reported).


def text(table: Mapping[str, object], key: str) -> str | None:
    value = table.get(key)
    return value if isinstance(value, str) else None


def whole(table: Mapping[str, object], key: str, default: int) -> int:
    value = table.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def fraction(table: Mapping[str, object], key: str, default: float) -> float:
    value = table.get(key)
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


def flag(table: Mapping[str, object], key: str, default: bool) -> bool:
    value = table.get(key)
    return value if isinstance(value, bool) else default


def table_at(parent: Mapping[str, object], key: str) -> dict[str, object]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def names(value: object) -> tuple[str, ...]:
    """A name, or a list of names, as a tuple."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(item for item in items if isinstance(item, str))
