"""Expected errors and their exit codes.

Expected errors print one clear line (or one per problem) and exit with a fixed code; anything
else is a bug and keeps its traceback (exit 1). docs/exit-codes.md lists every code.
"""

from __future__ import annotations

import re
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
    """One problem in the configuration, at a key path such as ``rules[3].period``; or, with
    ``warning``, a caution that `config validate` prints and nothing refuses."""

    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(RetentionError):
    """The configuration is invalid; every issue found is listed, not just the first."""

    exit_code = ExitCode.BAD_CONFIG

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        count = len(self.issues)
        super().__init__(f"{count} configuration error{'s' if count != 1 else ''}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigIssue]]]:
        # Pickled with its issues (a child process's check hands them back), not its message.
        return (type(self), (list(self.issues),))


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


# A quoted name is kept where the driver says what it names ("column 'phone'", "constraint
# \"people_pkey\"", "for key 'PRIMARY'"); every other quoted text may be a value.
_NAMED = r"(?:column|relation|constraint|table|index|key|type|schema|database|sequence|function)"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$.]*"
_QUOTED = re.compile(
    rf"(?P<kept>\b{_NAMED}\s+(?P<quote>['\"]){_IDENTIFIER}(?P=quote))"
    r"|'(?:[^'\\]|\\.|'')*'"
    r'|"(?:[^"\\]|\\.|"")*"',
    re.IGNORECASE,
)
# PostgreSQL's "Key (email)=(jane@example.com)", wherever it shows up.
_KEY_VALUE = re.compile(r"\)=\((?:[^()]|\([^()]*\))*\)")
# PyMySQL's errors read "(1062, \"Duplicate entry 'jane@example.com' for key 'PRIMARY'\")".
_MYSQL_TUPLE = re.compile(r"^\((\d+), (['\"])(.*)\2\)$", re.DOTALL)
# A second net for messages whose words are the database user's (a trigger's, below): e-mail and
# IPv4 addresses, the values most often quoted unquoted, wherever they stand.
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\b(?:\d{1,3}\.){3}\d{1,3}\b")
# MariaDB's SIGNAL and RESIGNAL (ER_SIGNAL_WARN, ER_SIGNAL_NOT_FOUND, ER_SIGNAL_EXCEPTION).
_MYSQL_SIGNALLED = frozenset({1642, 1643, 1644})


def without_values(message: str) -> str:
    """Given a driver's or a library's error message, return its first line with every value
    left out: quoted literals blanked (names of columns, constraints and keys kept), key values
    of PostgreSQL's ``Key (...)=(...)`` blanked, and what follows the first line (SQLAlchemy's
    ``[SQL: ...]`` and ``[parameters: ...]``, PostgreSQL's DETAIL) dropped.

    Example: ``without_values("(1062, \"Duplicate entry 'a@b.c' for key 'PRIMARY'\")")`` returns
    ``"(1062) Duplicate entry '…' for key 'PRIMARY'"``.
    """
    text = message.strip()
    mysql = _MYSQL_TUPLE.match(text)
    if mysql:
        text = f"({mysql.group(1)}) {mysql.group(3).strip()}"
    lines = text.splitlines()
    line = lines[0] if lines else ""
    for marker in ("[SQL:", "[parameters:"):
        line = line.split(marker, 1)[0]
    line = _KEY_VALUE.sub(")=(…)", line.rstrip())

    def blank(match: re.Match[str]) -> str:
        if match.group("kept"):
            return match.group("kept")
        quote = match.group(0)[0]
        return f"{quote}…{quote}"

    return _ADDRESS.sub("…", _QUOTED.sub(blank, line))


def raised_by_database_code(error: BaseException) -> str | None:
    """Given an exception (a driver's, or SQLAlchemy's around it), return its error code when
    a trigger or function of the database raised it with a message of its own, else None: such
    a message is the schema owner's words (``RAISE EXCEPTION 'refused %', OLD.email``), and
    nothing in it tells a value from the words around it.

    PostgreSQL: the SQLSTATE P0001 (``RAISE`` without a code), or an error PL/pgSQL raised
    (psycopg's ``diag.source_file`` is ``pl_exec.c``: ``RAISE`` with any code). MariaDB/MySQL
    (PyMySQL, mysqlclient): ``SIGNAL`` and ``RESIGNAL``'s error numbers 1642-1644.

    Example: for PyMySQL's ``OperationalError(1644, "refused jane@example.com")`` it returns
    ``"1644"``.
    """
    driver_error = getattr(error, "orig", None) or error
    sqlstate = getattr(driver_error, "sqlstate", None)
    diagnostic = getattr(driver_error, "diag", None)
    if sqlstate == "P0001" or getattr(diagnostic, "source_file", None) == "pl_exec.c":
        return str(sqlstate)
    module = type(driver_error).__module__
    arguments = driver_error.args
    if (
        module.startswith(("pymysql", "MySQLdb"))
        and arguments
        and isinstance(arguments[0], int)
        and arguments[0] in _MYSQL_SIGNALLED
    ):
        return str(arguments[0])
    return None


def refused_by_foreign_key(error: BaseException) -> bool:
    """Given an exception (a driver's, or SQLAlchemy's around it), return whether the database
    refused the statement because a foreign key still references a row it deletes or changes:
    PostgreSQL's SQLSTATE 23503, MariaDB/MySQL's errors 1451 and 1217.

    Example: for PyMySQL's ``IntegrityError(1451, "Cannot delete or update a parent row: ...")``
    it returns True.
    """
    driver_error = getattr(error, "orig", None) or error
    if getattr(driver_error, "sqlstate", None) == "23503":
        return True
    arguments = driver_error.args
    return (
        type(driver_error).__module__.startswith(("pymysql", "MySQLdb"))
        and bool(arguments)
        and arguments[0] in (1451, 1217)
    )


def message_without_values(error: BaseException) -> str:
    """Given a driver's or a library's exception, return its message as ``without_values``
    leaves it, or, when a trigger or function of the database raised it, a sentence that names
    its code and leaves the whole message out.

    Example: for psycopg's RaiseException of ``RAISE EXCEPTION 'refused %', OLD.email`` it
    returns ``"a trigger or function of the database raised P0001 (its message is left out: it
    may quote values)"``.
    """
    code = raised_by_database_code(error)
    if code is not None:
        return (
            f"a trigger or function of the database raised {code} "
            "(its message is left out: it may quote values)"
        )
    return without_values(str(error))


def error_text(error: BaseException) -> str:
    """Given an exception, return the one line that reports, logs, the run ledger and the audit
    trail may show. A RetentionError's message is written by this program, values already left
    out; any other exception (a driver's, a library's, a bug) is named by its type, its message
    passed through ``without_values``: driver errors quote the rows they refused.

    Example: ``error_text(KeyError("jane@example.com"))`` returns ``"KeyError: '…'"``.
    """
    if isinstance(error, RetentionError):
        return str(error)
    return f"{type(error).__name__}: {message_without_values(error)}"
