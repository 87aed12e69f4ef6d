"""Expected errors and their exit codes.

Expected errors print one clear line (or one per problem) and exit with a fixed code; anything
else is a bug and keeps its traceback (exit 1). docs/exit-codes.md lists every code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    BUG = 1
    USAGE = 2
    PARTIAL_FAILURE = 3
    STORE_UNAVAILABLE = 69
    AUDIT_FAILURE = 70
    LOCK_HELD = 75
    BAD_CONFIG = 78
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


class RetentionError(Exception):
    """An expected failure: its message is for people, its exit code for machines."""

    exit_code: ExitCode = ExitCode.BUG


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the configuration, at a key path such as ``rules[3].period``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(RetentionError):
    """The configuration is invalid; every issue found is listed, not just the first."""

    exit_code = ExitCode.BAD_CONFIG

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        count = len(self.issues)
        super().__init__(f"{count} configuration error{'s' if count != 1 else ''}")


class StoreUnavailable(RetentionError):
    """A store could not be reached (network, credentials, missing database file)."""

    exit_code = ExitCode.STORE_UNAVAILABLE


class UsageError(RetentionError):
    exit_code = ExitCode.USAGE


class AuditFailure(RetentionError):
    """The audit trail cannot be written (or read back): nothing may be deleted."""

    exit_code = ExitCode.AUDIT_FAILURE


class LockHeld(RetentionError):
    """Another process holds the lock (the audit trail's writer lock)."""

    exit_code = ExitCode.LOCK_HELD


class BatchConflict(RetentionError):
    """Rows changed between the locking select and the write; the batch was rolled back."""
