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
# PostgreSQL's procedural languages, where RAISE, plpy.error, elog and error are the function's
# own words: PL/pgSQL, PL/Python, PL/Perl, PL/Tcl.
_PROCEDURAL_SOURCES = re.compile(r"^(?:pl_exec|plpy_\w+|plperl|pltcl)\.c$")
# MariaDB's and PyMySQL's own messages, as the server and the driver spell them (% marks what
# they fill in). A SIGNAL can borrow any error number (SET MYSQL_ERRNO = 1062) with a message
# of its own, so a MariaDB message is shown only when every word outside its quotes is one of
# these messages' words; otherwise it is left out whole and only its number is shown.
_MARIADB_MESSAGES = (
    "Duplicate entry '%s' for key '%s'",
    "Cannot delete or update a parent row: a foreign key constraint fails (%s CONSTRAINT %s "
    "FOREIGN KEY (%s) REFERENCES %s (%s) ON DELETE CASCADE SET NULL NO ACTION RESTRICT "
    "ON UPDATE)",
    "Cannot add or update a child row: a foreign key constraint fails (%s)",
    "Column '%s' cannot be null",
    "Field '%s' doesn't have a default value",
    "CONSTRAINT %s failed for %s",
    "Data too long for column '%s' at row %d",
    "Data truncated for column '%s' at row %d",
    "Out of range value for column '%s' at row %d",
    "BIGINT UNSIGNED DOUBLE DECIMAL value is out of range in '%s'",
    "Incorrect integer decimal double date time datetime timestamp string value: '%s' for "
    "column %s at row %d",
    "Truncated incorrect INTEGER DOUBLE DECIMAL datetime date time value: '%s'",
    "Incorrect %s value: '%s' for function %s",
    "Unknown column '%s' in 'field list' 'where clause' 'on clause' 'order clause'",
    "Table '%s' doesn't exist",
    "Unknown table '%s' in %s",
    "Unknown database '%s'",
    "Lock wait timeout exceeded; try restarting transaction",
    "Deadlock found when trying to get lock; try restarting transaction",
    "Record has changed since last read in table '%s'",
    "Query execution was interrupted (max_statement_time exceeded)",
    "Connection was killed",
    "Subquery returns more than 1 row",
    "Operand should contain %d column(s)",
    "Column count doesn't match value count at row %d",
    "Illegal mix of collations (%s,IMPLICIT COERCIBLE EXPLICIT NONE) and (%s) for operation '%s'",
    "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB "
    "MySQL server version for the right syntax to use near '%s' at line %d",
    "Cannot execute statement in a READ ONLY transaction",
    "The MariaDB server is running with the --read-only option so it cannot execute this statement",
    "%s command denied to user '%s'@'%s' for table %s column routine",
    "Access denied for user '%s'@'%s' (using password: YES NO) to database '%s'",
    "Access denied; you need (at least one of) the %s privilege(s) for this operation",
    "Can't connect to MySQL server on '%s' ([Errno %d] Connection refused timed out)",
    "Can't connect to local server through socket '%s' (%d)",
    "Lost connection to MySQL server during query ([Errno %d] Connection reset by peer timed out)",
    "Lost connection to server at '%s', system error: %d",
    "MySQL server has gone away (BrokenPipeError ConnectionResetError TimeoutError (%d, '%s'))",
    "Server has gone away",
    "Too many connections",
    "Packet sequence number wrong - got %d expected %d",
    "Unknown system variable '%s'",
    "Variable '%s' can't be set to the value of '%s'",
    "Table definition has changed, please retry transaction",
    "Invalid default value for '%s'",
)
_WORD = re.compile(r"[A-Za-z]+")
_MARIADB_WORDS = frozenset(
    word.lower() for message in _MARIADB_MESSAGES for word in _WORD.findall(message)
)
# What stands outside the words: quoted text (blanked, or a name kept), backquoted names,
# numbers such as an error number or "at row 3".
_NOT_WORDS = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`[^`]*`|\d+")


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
        number, text = mysql.group(1), mysql.group(3).strip()
        if not reads_as_mariadb_own(text):
            return f"({number}) {_NOT_THE_SERVERS}"
        text = f"({number}) {text}"
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


_NOT_THE_SERVERS = (
    "its message is left out: it does not read as MariaDB's own "
    "(a trigger's SIGNAL can borrow a server error's number)"
)


def reads_as_mariadb_own(message: str) -> bool:
    """Given the text of a MariaDB or PyMySQL error (without its number), return whether every
    word outside its quotes, backquotes and numbers is a word of MariaDB's or PyMySQL's own
    messages: a SIGNAL's message text (``CONCAT('refusing ', OLD.name)``) is not.

    Example: ``reads_as_mariadb_own("Duplicate entry 'a@b.c' for key 'PRIMARY'")`` returns
    True, ``reads_as_mariadb_own("refusing Jane Doe")`` False.
    """
    words = _WORD.findall(_NOT_WORDS.sub(" ", message))
    return all(word.lower() in _MARIADB_WORDS for word in words)


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
    sqlstate, number = driver_codes(error)
    diagnostic = getattr(driver_error, "diag", None)
    source_file = getattr(diagnostic, "source_file", None)
    if sqlstate == "P0001" or (
        isinstance(source_file, str) and _PROCEDURAL_SOURCES.match(source_file)
    ):
        return str(sqlstate)
    if number in _MYSQL_SIGNALLED:
        return str(number)
    return None


def driver_codes(error: BaseException) -> tuple[str | None, int | None]:
    """Given an exception (a driver's, or SQLAlchemy's around it), return its SQLSTATE
    (psycopg's) and its MariaDB/MySQL error number (PyMySQL's, mysqlclient's), each None where
    the driver gives none.

    Example: for PyMySQL's ``OperationalError(1205, "Lock wait timeout exceeded; ...")`` it
    returns ``(None, 1205)``.
    """
    driver_error = getattr(error, "orig", None) or error
    sqlstate = getattr(driver_error, "sqlstate", None)
    arguments = driver_error.args
    number = (
        arguments[0]
        if type(driver_error).__module__.startswith(("pymysql", "MySQLdb"))
        and arguments
        and type(arguments[0]) is int
        else None
    )
    return (sqlstate if isinstance(sqlstate, str) else None), number


def os_error_said(error: OSError) -> str:
    """Given an OSError, return its reason and the file it names, as a message may end: the
    path is the config's or the trail's, never a record's. Example: for ``open`` of a file in
    a folder this user may not enter, ``"Permission denied: /var/lib/retention/state.sqlite"``.
    """
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}"


def refused_by_foreign_key(error: BaseException) -> bool:
    """Given an exception (a driver's, or SQLAlchemy's around it), return whether the database
    refused the statement because a foreign key still references a row it deletes or changes:
    PostgreSQL's SQLSTATE 23503, MariaDB/MySQL's errors 1451 and 1217.

    Example: for PyMySQL's ``IntegrityError(1451, "Cannot delete or update a parent row: ...")``
    it returns True.
    """
    sqlstate, number = driver_codes(error)
    return sqlstate == "23503" or number in (1451, 1217)


def refused_by_row_lock(error: BaseException) -> bool:
    """Given an exception (a driver's, or SQLAlchemy's around it), return whether the statement
    gave up waiting for a row another session holds locked: PostgreSQL's SQLSTATE 55P03
    (lock_timeout), MariaDB/MySQL's error 1205 (innodb_lock_wait_timeout).

    Example: for PyMySQL's ``OperationalError(1205, "Lock wait timeout exceeded; ...")`` it
    returns True.
    """
    sqlstate, number = driver_codes(error)
    return sqlstate == "55P03" or number == 1205


def message_without_values(error: BaseException) -> str:
    """Given a driver's or a library's exception, return its message as ``without_values``
    leaves it, or, when a trigger or function of the database raised it, a sentence that names
    its code and leaves the whole message out.

    Example: for psycopg's RaiseException of ``RAISE EXCEPTION 'refused %', OLD.email`` it
    returns ``"a trigger or function of the database raised P0001 (its message is left out: it
    may quote values)"``.
    """
    driver_error = getattr(error, "orig", None)
    if isinstance(driver_error, BaseException):
        # SQLAlchemy's wrapper: its text is "(module.Type) " and the driver's, then the
        # statement and its parameters; the driver's own error says more, and is checked whole.
        kind = type(driver_error)
        return f"({kind.__module__}.{kind.__qualname__}) {message_without_values(driver_error)}"
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
