"""Benchmark: `retention run` against a raw one-statement DELETE on a big connection-log table.

For each backend (PostgreSQL, MariaDB) and each table size (20k rows, then ``--rows``, 2M by
default) this builds one ``connection_logs`` table whose rows are spread evenly over the two
years before a fixed instant, in an order unrelated to their ids (so expired rows are scattered
through the key order: the hard case for keyset batches). Half of them are past a 1-year cutoff
(with an even row count, one sits exactly on the cutoff instant, which is due). It then copies
that table (same indexes) and:

* times ``DELETE FROM copy WHERE logged_at <= cutoff`` (one statement, one transaction);
* for each batch size, on a fresh copy, times ``retention run --yes --rule connection-logs
  --as-of <instant>`` in a subprocess (temporary TOML config), reads its ``rule.finished`` JSON
  log line (deleted, batches, seconds, longest transaction) and its own peak RSS (``wait4``);
* checks that every copy ends with the same rows left (the bench fails loudly otherwise).

With ``--peers`` (MariaDB) it also times pt-archiver ``--purge --bulk-delete --commit-each
--primary-key-only`` at the same batch size on a fresh copy (installing Debian's
``percona-toolkit`` with apt-get when it is missing); with ``--bare`` the bare keyset loop
below; with ``--both`` retention with the trail on and off; ``--rounds N`` repeats every
contender N times, interleaved, on the big table, each round starting with the next contender
in turn (pt-archiver, the bare loop, retention with the trail on, then off). Before each timed
contender PostgreSQL checkpoints; MariaDB writes the fresh copy's pages and waits for InnoDB to
purge what the contender before deleted.

It prints rows/s for each, retention's ratios to the raw DELETE, pt-archiver and the bare loop
(whole processes, start-up included, measured in the same run), the longest retention
transaction and the peak RSS at both sizes, then the goals of issue 17 per backend, batch size
and trail (median ratio and spread over the rounds): MariaDB >= 1.0x pt-archiver with the trail
and >= 1.5x without, PostgreSQL >= 0.5x the bare loop with the trail; every transaction
<= 250 ms; peak RSS not growing with the table. Everything happens in throw-away databases
``retention_bench_<hex>`` on 127.0.0.1, dropped at the end. See bench/README.md.

Usage: .venv/bin/python bench/sql_purge.py [--rows N] [--backend postgres|mariadb|all]
                                           [--batch-size N ...] [--no-audit | --both]
                                           [--explain] [--bare] [--peers] [--rounds N]
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_common import (
    STARTED,
    audit_keygen,
    compile_retention,
    json_line,
    progress,
    retention_command,
    toml_string,
    warn_if_busy,
)
from sqlalchemy import Connection, Engine, create_engine, text

# The instant the run is "as of", and what its 1-year rule expires: clock + 1y <= AS_OF.
AS_OF = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CUTOFF = datetime(2025, 1, 1, 12, 0)  # naive UTC, like the logged_at column
HISTORY = timedelta(days=730)  # logged_at spans [AS_OF - HISTORY, AS_OF)
SMALL_ROWS = 20_000
DEFAULT_ROWS = 2_000_000
DEFAULT_BATCH_SIZES = (1000, 5000, 10000)
# An odd prime not dividing 2 or 5: g -> g * SCATTER mod n permutes 0..n-1 for the usual n,
# so consecutive ids get timestamps from all over the two years.
SCATTER = 2_654_435_761

TARGET_TRANSACTION_SECONDS = 0.25
# Issue 17: retention (whole process) over pt-archiver on MariaDB, trail on / off; over the
# bare keyset loop on PostgreSQL, trail on.
PEER_GOAL = {True: 1.0, False: 1.5}
BARE_GOAL = 0.5
# Peak RSS "does not grow with the table" when the big run stays within this of the small one.
RSS_TOLERANCE_KIB = 16 * 1024

EXPLAIN_WIDTH = 160  # plan lines are cut there (the DELETE's IN list is long)

RULE_NAME = "connection-logs"
BASE_TABLE = "connection_logs_base"
RAW_TABLE = "connection_logs_raw"
RETENTION_TABLE = "connection_logs"


@dataclass(frozen=True)
class Backend:
    """What differs between the two databases; everything else is shared SQL."""

    name: str
    server_url: str  # where CREATE/DROP DATABASE run
    url_prefix: str  # + database name = the bench database's URL
    connect_args: dict[str, Any]
    drop_database: str
    table_options: str
    series: Callable[[int], str]  # a FROM item yielding g = 1..n
    timestamp_plus_seconds: str  # SQL expression, {seconds} is an integer expression
    refresh_statistics: str  # run on a copy before timing, {table} its name
    before_timing: tuple[str, ...]

    def url(self, database: str) -> str:
        """Given a database name, return the SQLAlchemy URL of that database."""
        return self.url_prefix + database


POSTGRES = Backend(
    name="postgres",
    server_url="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    url_prefix="postgresql+psycopg://postgres@127.0.0.1:5432/",
    connect_args={},
    drop_database="DROP DATABASE IF EXISTS {database} WITH (FORCE)",
    # No autovacuum racing the timed runs on the other copy (2 cores).
    table_options="WITH (autovacuum_enabled = off)",
    series=lambda rows: f"generate_series(1, {int(rows)}) AS s(g)",
    timestamp_plus_seconds="TIMESTAMP '{start}' + make_interval(secs => {seconds})",
    refresh_statistics="VACUUM ANALYZE {table}",
    before_timing=("CHECKPOINT",),
)

# Before each timed contender on MariaDB: InnoDB's history list (undo records not yet purged)
# back under this, waiting at most this long.
INNODB_QUIET_HISTORY = 1000
INNODB_QUIET_SECONDS = 60.0

MARIADB = Backend(
    name="mariadb",
    server_url="mysql+pymysql://root@127.0.0.1:3306/",
    url_prefix="mysql+pymysql://root@127.0.0.1:3306/",
    # retention runs MariaDB sessions in UTC; the bench writes its TIMESTAMPs in UTC too.
    connect_args={"init_command": "SET time_zone = '+00:00'"},
    drop_database="DROP DATABASE IF EXISTS {database}",
    table_options="ENGINE=InnoDB",
    series=lambda rows: f"(SELECT seq AS g FROM seq_1_to_{int(rows)}) AS s",
    timestamp_plus_seconds="TIMESTAMP '{start}' + INTERVAL {seconds} SECOND",
    refresh_statistics="ANALYZE TABLE {table}",
    before_timing=(),
)

BACKENDS = {backend.name: backend for backend in (POSTGRES, MARIADB)}


@dataclass(frozen=True)
class RetentionRun:
    """What one `retention run` subprocess reported and used."""

    deleted: int
    batches: int
    purge_seconds: float  # rule.finished "seconds": the batches only
    wall_seconds: float  # the whole process: start-up, schema checks, plan, batches
    longest_transaction_seconds: float
    peak_rss_kib: int
    cpu_seconds: float  # user + system time of the retention process


@dataclass(frozen=True)
class Measurement:
    """One retention run compared with the raw DELETE on an identical copy."""

    backend: str
    rows: int
    batch_size: int
    raw_deleted: int
    raw_seconds: float
    retention: RetentionRun
    bare_rate: float | None = None  # --bare: the driver-only batched loop, rows/s
    audited: bool = True
    round: int = 1
    peer_rate: float | None = None  # MariaDB: pt-archiver on the same data, rows/s

    @property
    def raw_rate(self) -> float:
        """Rows deleted per second by the raw DELETE."""
        return self.raw_deleted / self.raw_seconds

    @property
    def retention_rate(self) -> float:
        """Rows deleted per second by `retention run`, whole process (start-up included)."""
        return self.retention.deleted / self.retention.wall_seconds

    @property
    def purge_rate(self) -> float:
        """Rows deleted per second by `retention run`, its batches only."""
        return self.retention.deleted / max(self.retention.purge_seconds, 1e-9)

    @property
    def ratio(self) -> float:
        """Retention throughput (whole process) over raw DELETE throughput."""
        return self.retention_rate / self.raw_rate

    @property
    def peer_ratio(self) -> float | None:
        """Retention throughput (whole process) over pt-archiver's (whole process)."""
        return None if self.peer_rate is None else self.retention_rate / self.peer_rate

    @property
    def bare_ratio(self) -> float | None:
        """Retention throughput (whole process) over the bare driver loop's."""
        return None if self.bare_rate is None else self.retention_rate / self.bare_rate


class BenchFailure(RuntimeError):
    """The benchmark could not measure, or the two copies disagree."""


def execute(connection: Connection, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement (autocommit) and return its rows, if any."""
    result = connection.execute(text(statement))
    return [tuple(row) for row in result] if result.returns_rows else []


def scalar(connection: Connection, statement: str) -> int:
    """Run a query returning one integer and return it."""
    value = connection.execute(text(statement)).scalar_one()
    return int(value)


@contextmanager
def bench_database(backend: Backend) -> Iterator[Engine]:
    """Create a throw-away database on the backend, yield an autocommit engine on it, drop it."""
    database = f"retention_bench_{secrets.token_hex(4)}"
    server = create_engine(
        backend.server_url, isolation_level="AUTOCOMMIT", connect_args=backend.connect_args
    )
    try:
        with server.connect() as connection:
            execute(connection, f"CREATE DATABASE {database}")
        progress(f"{backend.name}: created database {database}")
        engine = create_engine(
            backend.url(database), isolation_level="AUTOCOMMIT", connect_args=backend.connect_args
        )
        try:
            yield engine
        finally:
            engine.dispose()
            with server.connect() as connection:
                execute(connection, backend.drop_database.format(database=database))
            progress(f"{backend.name}: dropped database {database}")
    finally:
        server.dispose()


def create_table(connection: Connection, backend: Backend, table: str) -> None:
    """Create an empty connection-log table (primary key only; see add_indexes)."""
    execute(connection, f"DROP TABLE IF EXISTS {table}")
    execute(
        connection,
        f"CREATE TABLE {table} ("
        " id bigint NOT NULL PRIMARY KEY,"
        " account_id int NOT NULL,"
        " ip_address varchar(45) NOT NULL,"
        " logged_at timestamp NOT NULL"
        f") {backend.table_options}",
    )


def add_indexes(connection: Connection, table: str) -> None:
    """Add the secondary index every copy has (after the bulk insert: faster)."""
    execute(connection, f"CREATE INDEX {table}_logged_at ON {table} (logged_at)")


def build_base(connection: Connection, backend: Backend, rows: int) -> int:
    """Fill BASE_TABLE with ``rows`` scattered connection logs; return how many are not expired.

    Row g gets ``logged_at = start + floor(((g * SCATTER) mod rows) * HISTORY / rows)`` seconds:
    evenly spread over HISTORY, unrelated to the id order.
    """
    create_table(connection, backend, BASE_TABLE)
    start = (AS_OF - HISTORY).replace(tzinfo=None)
    history = int(HISTORY.total_seconds())
    seconds = f"FLOOR(MOD(g * {SCATTER}, {rows}) * {history} / {rows})"
    logged_at = backend.timestamp_plus_seconds.format(start=start.isoformat(" "), seconds=seconds)
    execute(
        connection,
        f"INSERT INTO {BASE_TABLE} (id, account_id, ip_address, logged_at) "
        f"SELECT g, MOD(g, 5000) + 1, "
        f"CONCAT('10.', MOD(g, 251), '.', MOD(g, 241), '.', MOD(g, 239)), {logged_at} "
        f"FROM {backend.series(rows)}",
    )
    add_indexes(connection, BASE_TABLE)
    return scalar(connection, f"SELECT COUNT(*) FROM {BASE_TABLE} WHERE logged_at > {cutoff_sql()}")


def cutoff_sql() -> str:
    """The cutoff as a SQL literal both backends read the same way."""
    return f"TIMESTAMP '{CUTOFF.isoformat(' ')}'"


def copy_base(connection: Connection, backend: Backend, table: str) -> None:
    """Copy BASE_TABLE to ``table`` with the same indexes, and refresh its statistics."""
    create_table(connection, backend, table)
    execute(connection, f"INSERT INTO {table} SELECT * FROM {BASE_TABLE} ORDER BY id")
    add_indexes(connection, table)
    execute(connection, backend.refresh_statistics.format(table=table))


def before_timing(connection: Connection, backend: Backend, table: str) -> None:
    """Put the server in the same state before each timed operation on ``table``: PostgreSQL a
    CHECKPOINT; MariaDB the table's pages written (the copy just made leaves them dirty, for
    the page cleaner to write during whatever runs next) and InnoDB's purge of what the
    contender before deleted waited for (its history list back under INNODB_QUIET_HISTORY,
    at most INNODB_QUIET_SECONDS)."""
    for statement in backend.before_timing:
        execute(connection, statement)
    if backend is MARIADB:
        execute(connection, f"FLUSH TABLES {table} FOR EXPORT")
        execute(connection, "UNLOCK TABLES")
        deadline = time.monotonic() + INNODB_QUIET_SECONDS
        while time.monotonic() < deadline and (
            scalar(
                connection,
                "SELECT count FROM information_schema.INNODB_METRICS "
                "WHERE name = 'trx_rseg_history_len'",
            )
            > INNODB_QUIET_HISTORY
        ):
            time.sleep(0.1)


def raw_delete(connection: Connection, backend: Backend) -> tuple[int, float]:
    """Time the one-statement DELETE on RAW_TABLE; return (rows deleted, seconds)."""
    before_timing(connection, backend, RAW_TABLE)
    started = time.perf_counter()
    result = connection.execute(text(f"DELETE FROM {RAW_TABLE} WHERE logged_at <= {cutoff_sql()}"))
    seconds = time.perf_counter() - started
    return result.rowcount, seconds


def write_config(
    directory: Path, backend: Backend, database: str, rows: int, batch_size: int, audited: bool
) -> Path:
    """Write a one-rule retention config pointing at RETENTION_TABLE; return its path.

    The bench purges half of a ``rows`` table on purpose, so the rule lifts the safety brakes
    (``max_delete``, ``max_fraction``) that would otherwise stop such a run before it starts.

    ``audited``: a real audit trail in ``directory`` (keys from ``retention audit keygen``, one
    trail per run), as a production purge has; else ``[audit] enabled = false``.
    """
    path = directory / f"retention-{batch_size}-{'on' if audited else 'off'}.toml"
    keys = directory / "keys"
    trail = directory / f"trail-{batch_size}-{secrets.token_hex(4)}"  # a fresh trail each run
    audit = (
        f"directory = {toml_string(trail)}\n"
        f"hmac_key_file = {toml_string(keys / 'hmac.key')}\n"
        f"signing_key_file = {toml_string(keys / 'signing.pem')}\n"
        f"public_keys_file = {toml_string(keys / 'public-keys.json')}\n"
        if audited
        else "enabled = false\n"
    )
    path.write_text(
        f"""[settings]
timezone = "UTC"

[audit]
{audit}
[stores.bench]
kind = "sql"
url = {toml_string(backend.url(database))}
timezone = "UTC"

[[rules]]
name = "{RULE_NAME}"
store = "bench"
table = "{RETENTION_TABLE}"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
batch_size = {batch_size}
max_delete = {rows}
max_fraction = 1.0
""",
        encoding="utf-8",
    )
    if audited and not (keys / "signing.pem").exists():
        error = audit_keygen(path)
        if error is not None:
            raise BenchFailure(error)
    return path


def run_retention(config: Path, directory: Path) -> RetentionRun:
    """Run `retention run` on ``config`` in a subprocess; return its report and peak RSS.

    The child is reaped with ``os.wait4`` so that its ru_maxrss is its own, not the maximum
    over every child so far (which RUSAGE_CHILDREN would give).
    """
    command = [
        *retention_command(),
        "--config",
        str(config),
        "--log-format",
        "json",
        "run",
        "--yes",
        "--rule",
        RULE_NAME,
        "--as-of",
        AS_OF.isoformat(),
    ]
    stdout_path, stderr_path = directory / "run.out", directory / "run.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C, SIGTERM: do not leave a purge running behind us
            process.kill()
            process.wait()
            raise
        wall_seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    errors = stderr_path.read_text(encoding="utf-8", errors="replace")
    if process.returncode != 0:
        raise BenchFailure(f"retention run exited {process.returncode}:\n{errors}")
    finished = [
        line for line in map(json_line, errors.splitlines()) if line.get("event") == "rule.finished"
    ]
    if len(finished) != 1 or finished[0].get("status") != "ok":
        raise BenchFailure(f"no successful rule.finished line in the log:\n{errors}")
    report = finished[0]
    peak_kib = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return RetentionRun(
        deleted=int(report["deleted"]),
        batches=int(report["batches"]),
        purge_seconds=float(report["seconds"]),
        wall_seconds=wall_seconds,
        longest_transaction_seconds=float(report["longest_transaction_seconds"]),
        peak_rss_kib=peak_kib,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )


def bare_purge(backend: Backend, database: str, batch_size: int) -> tuple[int, float]:
    """Time the bare keyset loop: the database driver alone (no SQLAlchemy, no audit trail, no
    process start-up) sending a probe for the end of the next ``batch_size`` due keys, then the
    DELETE of that key range, one COMMIT per batch (what retention sent for a plain delete rule
    before it deleted a batch in one statement). Return (rows deleted, seconds)."""
    due = f"logged_at <= {cutoff_sql()}"
    probe = (
        f"SELECT batch.id, COUNT(*) OVER () FROM (SELECT id FROM {RETENTION_TABLE} "
        f"WHERE id > %s AND {due} ORDER BY id LIMIT {batch_size}) AS batch "
        "ORDER BY batch.id DESC LIMIT 1"
    )
    deletion = f"DELETE FROM {RETENTION_TABLE} WHERE id > %s AND id <= %s AND {due} RETURNING id"
    engine = create_engine(backend.url(database), connect_args=backend.connect_args)
    try:
        driver = engine.raw_connection()
        try:
            cursor = driver.cursor()
            last, deleted = 0, 0
            started = time.perf_counter()
            more = True
            while more:
                cursor.execute(probe, (last,))
                window = cursor.fetchone()
                if window is None:
                    driver.commit()
                    break
                end, size = window
                cursor.execute(deletion, (last, end))
                deleted += len(cursor.fetchall())
                driver.commit()
                last, more = end, size >= batch_size
            return deleted, time.perf_counter() - started
        finally:
            driver.close()
    finally:
        engine.dispose()


def pt_archiver() -> tuple[str, str]:
    """Return pt-archiver's path and version, installing Debian's ``percona-toolkit`` with
    apt-get when it is missing (as root; otherwise BenchFailure says the command)."""
    path = shutil.which("pt-archiver")
    if path is None:
        command = ["apt-get", "install", "-y", "percona-toolkit"]
        if os.geteuid() != 0:
            raise BenchFailure(f"pt-archiver is missing: run `sudo {' '.join(command)}`")
        progress("installing pt-archiver: " + " ".join(command))
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        installed = subprocess.run(
            command, capture_output=True, text=True, check=False, env=environment
        )
        path = shutil.which("pt-archiver")
        if installed.returncode != 0 or path is None:
            raise BenchFailure(f"apt-get could not install percona-toolkit:\n{installed.stderr}")
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return path, version


def peer_purge(database: str, batch_size: int) -> tuple[int, float]:
    """Time pt-archiver purging the due rows of RETENTION_TABLE the way its manual recommends
    for a fast purge (``--purge --bulk-delete --commit-each --primary-key-only``), ``--limit``
    the batch size, its session in UTC like retention's. Whole process, start-up included.
    Return (rows deleted, seconds)."""
    path, _version = pt_archiver()
    command = [
        path,
        "--source",
        f"h=127.0.0.1,P=3306,u=root,D={database},t={RETENTION_TABLE}",
        "--where",
        f"logged_at <= {cutoff_sql()}",
        "--purge",
        "--bulk-delete",
        "--commit-each",
        "--primary-key-only",
        "--limit",
        str(batch_size),
        # The bench table has no AUTO_INCREMENT; keep its last row only if it is not due.
        "--no-safe-auto-increment",
        "--no-check-charset",
        "--set-vars",
        "time_zone='+00:00'",
        "--statistics",
    ]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise BenchFailure(f"pt-archiver exited {finished.returncode}:\n{finished.stderr}")
    deleted = [
        int(line.split()[1])
        for line in finished.stdout.splitlines()
        if line.startswith("DELETE ") and line.split()[1].isdigit()
    ]
    if len(deleted) != 1:
        raise BenchFailure(f"pt-archiver printed no DELETE count:\n{finished.stdout}")
    return deleted[0], seconds


def explain_batch(connection: Connection, batch_size: int) -> None:
    """Print the plans of the two statements of one retention batch, mid-table, in the shape
    retention sends them for a plain delete rule (values inlined here, bound there): the keyset
    probe for the range's last key, then DELETE ... WHERE id in that range AND the due condition
    again, RETURNING id. Nothing is deleted: the probe runs to get the range, the DELETE is only
    EXPLAINed."""
    table = RETENTION_TABLE
    middle = scalar(connection, f"SELECT MAX(id) / 2 FROM {table}")
    due = f"{table}.logged_at <= {cutoff_sql()}"
    probe = (
        f"SELECT batch.id, COUNT(*) OVER () FROM (SELECT {table}.id AS id FROM {table} WHERE {due} "
        f"AND {table}.id > {middle} ORDER BY {table}.id LIMIT {batch_size}) AS batch "
        "ORDER BY batch.id DESC LIMIT 1"
    )
    end = execute(connection, probe)[0][0]
    deletion = (
        f"DELETE FROM {table} WHERE {table}.id > {middle} AND {table}.id <= {end} AND {due} "
        f"RETURNING {table}.id"
    )
    for label, statement in (("keyset probe", probe), ("DELETE", deletion)):
        result = connection.execute(text(f"EXPLAIN {statement}"))
        lines = [" | ".join(result.keys()) if len(result.keys()) > 1 else ""]
        lines += [" | ".join("" if cell is None else str(cell) for cell in row) for row in result]
        print(f"  EXPLAIN {label} (batch_size {batch_size}):")
        for line in filter(None, lines):
            cut = "..." if len(line) > EXPLAIN_WIDTH else ""
            print(f"    {line[:EXPLAIN_WIDTH]}{cut}")


@dataclass(frozen=True)
class Options:
    """What to measure (from the command line)."""

    backends: tuple[str, ...]
    sizes: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    trails: tuple[bool, ...]  # retention runs with the trail on (True) and/or off (False)
    explain: bool
    bare: bool
    peers: bool  # MariaDB: pt-archiver
    rounds: int


def measure_size(
    engine: Engine, backend: Backend, rows: int, options: Options
) -> list[Measurement]:
    """Build a table of ``rows``, time the raw DELETE on one copy, then, round after round and
    batch size after batch size, each contender on a fresh copy of the same data: `retention
    run` (trail on and/or off), pt-archiver (MariaDB, ``--peers``) and the bare driver loop
    (``--bare``). Check that every copy ends with the same rows left."""
    database = engine.url.database or ""
    name = backend.name
    measurements = []
    with engine.connect() as connection, tempfile.TemporaryDirectory() as scratch:
        progress(f"{name}: building {rows:,} rows")
        remaining = build_base(connection, backend, rows)
        progress(f"{name}: {rows - remaining:,} of them due; copying for the raw DELETE")
        copy_base(connection, backend, RAW_TABLE)
        raw_deleted, raw_seconds = raw_delete(connection, backend)
        raw_left = scalar(connection, f"SELECT COUNT(*) FROM {RAW_TABLE}")
        progress(
            f"{name}: raw DELETE {raw_deleted:,} rows in {raw_seconds:.2f}s "
            f"({raw_deleted / raw_seconds:,.0f} rows/s), {raw_left:,} left"
        )
        check_same(f"{name} raw DELETE", (raw_deleted, raw_left), (rows - remaining, remaining))
        execute(connection, f"DROP TABLE {RAW_TABLE}")

        def contender(what: str, purge: Callable[[], tuple[int, float]]) -> float:
            """Purge a fresh copy with ``purge``; return its rows/s."""
            copy_base(connection, backend, RETENTION_TABLE)
            before_timing(connection, backend, RETENTION_TABLE)
            deleted, seconds = purge()
            left = scalar(connection, f"SELECT COUNT(*) FROM {RETENTION_TABLE}")
            check_same(f"{name} {what}", (deleted, left), (raw_deleted, raw_left))
            execute(connection, f"DROP TABLE {RETENTION_TABLE}")
            rate = deleted / seconds
            progress(f"{name}: {what}: {deleted:,} rows in {seconds:.2f}s ({rate:,.0f} rows/s)")
            return rate

        big = rows == max(options.sizes)
        for round_number in range(1, options.rounds + 1 if big else 2):
            for batch_size in options.batch_sizes:

                def timed_retention(
                    audited: bool, batch_size: int = batch_size, round_number: int = round_number
                ) -> RetentionRun:
                    copy_base(connection, backend, RETENTION_TABLE)
                    if options.explain and big and round_number == 1:
                        explain_batch(connection, batch_size)
                    config = write_config(
                        Path(scratch), backend, database, rows, batch_size, audited
                    )
                    before_timing(connection, backend, RETENTION_TABLE)
                    run = run_retention(config, Path(scratch))
                    left = scalar(connection, f"SELECT COUNT(*) FROM {RETENTION_TABLE}")
                    check_same(
                        f"{name} retention run, batch_size {batch_size}",
                        (run.deleted, left),
                        (raw_deleted, raw_left),
                    )
                    execute(connection, f"DROP TABLE {RETENTION_TABLE}")
                    return run

                contenders: list[tuple[str | bool, Callable[[], Any]]] = []
                if options.peers and backend is MARIADB and big:
                    contenders.append(
                        (
                            "peer",
                            lambda batch_size=batch_size: contender(
                                f"pt-archiver, batch {batch_size}",
                                lambda: peer_purge(database, batch_size),
                            ),
                        )
                    )
                if options.bare and big:
                    contenders.append(
                        (
                            "bare",
                            lambda batch_size=batch_size: contender(
                                f"bare driver loop, batch {batch_size}",
                                lambda: bare_purge(backend, database, batch_size),
                            ),
                        )
                    )
                contenders += [
                    (audited, lambda audited=audited: timed_retention(audited))
                    for audited in options.trails
                ]
                # Each round starts with the next contender: none always runs first after the
                # table's build, or always right after the same other one.
                turn = (round_number - 1) % len(contenders)
                results = {key: timed() for key, timed in contenders[turn:] + contenders[:turn]}
                rates = {key: results.get(key) for key in ("peer", "bare")}
                runs: dict[bool, RetentionRun] = {
                    audited: results[audited] for audited in options.trails
                }
                for audited in options.trails:
                    run = runs[audited]
                    measurement = Measurement(
                        name,
                        rows,
                        batch_size,
                        raw_deleted,
                        raw_seconds,
                        run,
                        rates["bare"],
                        audited=audited,
                        round=round_number,
                        peer_rate=rates["peer"],
                    )
                    measurements.append(measurement)
                    peers = "".join(
                        f", {label} {ratio:.2f}x"
                        for label, ratio in (
                            ("pt-archiver", measurement.peer_ratio),
                            ("bare", measurement.bare_ratio),
                        )
                        if ratio is not None
                    )
                    progress(
                        f"{name}: retention (trail {'on' if audited else 'off'}) "
                        f"{run.deleted:,} rows in {run.wall_seconds:.2f}s "
                        f"({measurement.retention_rate:,.0f} rows/s; batches alone "
                        f"{run.purge_seconds:.2f}s; CPU {run.cpu_seconds:.1f}s), "
                        f"{run.batches} batches, longest transaction "
                        f"{run.longest_transaction_seconds * 1000:.0f} ms, peak RSS "
                        f"{run.peak_rss_kib / 1024:.1f} MiB, raw {measurement.ratio:.2f}x{peers}"
                    )
        execute(connection, f"DROP TABLE {BASE_TABLE}")
    return measurements


def check_same(what: str, got: tuple[int, int], expected: tuple[int, int]) -> None:
    """Fail loudly unless (deleted, left) matches what the other copy gave."""
    if got != expected:
        raise BenchFailure(
            f"{what}: deleted {got[0]:,} and left {got[1]:,} rows, but the other copy "
            f"deleted {expected[0]:,} and left {expected[1]:,}"
        )


def bench_backend(backend: Backend, options: Options) -> list[Measurement]:
    """All measurements of one backend, in its own throw-away database."""
    with bench_database(backend) as engine:
        with engine.connect() as connection:
            version = execute(connection, "SELECT version()")[0][0]
        progress(f"{backend.name}: server {str(version).splitlines()[0][:60]}")
        return [
            measurement
            for rows in options.sizes
            for measurement in measure_size(engine, backend, rows, options)
        ]


def _optional(value: float | None, form: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{form}}"


def summary_table(measurements: Sequence[Measurement]) -> list[str]:
    """One line per measurement: throughputs, ratios, longest transaction, peak RSS."""
    lines = [
        f"{'backend':<9}{'rows':>11}{'batch':>7}{'round':>6}{'trail':>6}{'raw rows/s':>12}"
        f"{'ret rows/s':>12}{'raw x':>7}{'batches rows/s':>16}{'CPU s':>7}{'longest tx':>12}"
        f"{'peak RSS':>11}{'pt-arch rows/s':>16}{'x':>6}{'bare rows/s':>13}{'x':>6}"
    ]
    for m in measurements:
        lines.append(
            f"{m.backend:<9}{m.rows:>11,}{m.batch_size:>7}{m.round:>6}"
            f"{'on' if m.audited else 'off':>6}{m.raw_rate:>12,.0f}"
            f"{m.retention_rate:>12,.0f}{m.ratio:>7.2f}{m.purge_rate:>16,.0f}"
            f"{m.retention.cpu_seconds:>7.1f}"
            f"{m.retention.longest_transaction_seconds * 1000:>10.0f}ms"
            f"{m.retention.peak_rss_kib / 1024:>8.1f}MiB"
            f"{_optional(m.peer_rate, ',.0f', 16)}{_optional(m.peer_ratio, '.2f', 6)}"
            f"{_optional(m.bare_rate, ',.0f', 13)}{_optional(m.bare_ratio, '.2f', 6)}"
        )
    return lines


def spread(values: Sequence[float]) -> str:
    """``median (min–max, n runs)`` of some ratios."""
    if not values:
        return "-"
    return (
        f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}, "
        f"{len(values)} run{'s' if len(values) > 1 else ''})"
    )


def verdict(measurements: Sequence[Measurement], options: Options) -> list[str]:
    """Per backend, batch size and trail: the goals of issue 17 against the ratios of every
    round (median, spread), the longest transaction and the peak RSS (20k rows vs the big
    table)."""
    big_rows, small_rows = max(options.sizes), min(options.sizes)
    lines = []
    for backend in dict.fromkeys(m.backend for m in measurements):
        for batch_size in options.batch_sizes:
            for audited in options.trails:
                runs = [
                    m
                    for m in measurements
                    if (m.backend, m.rows, m.batch_size, m.audited)
                    == (backend, big_rows, batch_size, audited)
                ]
                small = [
                    m
                    for m in measurements
                    if (m.backend, m.rows, m.batch_size, m.audited)
                    == (backend, small_rows, batch_size, audited)
                ]
                if not runs:
                    continue
                checks: dict[str, bool] = {}
                peer = [m.peer_ratio for m in runs if m.peer_ratio is not None]
                if peer:
                    goal = PEER_GOAL[audited]
                    checks[f"pt-archiver {spread(peer)} >= {goal}"] = (
                        statistics.median(peer) >= goal
                    )
                bare = [m.bare_ratio for m in runs if m.bare_ratio is not None]
                if bare and backend == POSTGRES.name:
                    checks[f"bare loop {spread(bare)} >= {BARE_GOAL}"] = (
                        statistics.median(bare) >= BARE_GOAL
                    )
                longest = max(m.retention.longest_transaction_seconds for m in runs)
                checks[
                    f"longest transaction {longest * 1000:.0f} ms <= "
                    f"{TARGET_TRANSACTION_SECONDS * 1000:.0f} ms"
                ] = longest <= TARGET_TRANSACTION_SECONDS
                if small and small_rows < big_rows:
                    before = small[0].retention.peak_rss_kib
                    after = max(m.retention.peak_rss_kib for m in runs)
                    checks[
                        f"peak RSS {before / 1024:.0f} MiB at {small_rows:,} rows -> "
                        f"{after / 1024:.0f} MiB at {big_rows:,}"
                    ] = after - before <= RSS_TOLERANCE_KIB
                status = "MET" if all(checks.values()) else "NOT met"
                details = "; ".join(
                    f"{text}: {'ok' if ok else 'NO'}" for text, ok in checks.items()
                )
                lines.append(
                    f"{backend} batch_size {batch_size}, trail {'on' if audited else 'off'}: "
                    f"{status} (raw DELETE {spread([m.ratio for m in runs])}; {details})"
                )
    return lines


def parse_arguments(argv: Sequence[str] | None = None) -> Options:
    """The command line (see the module docstring), as Options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"big table size (default {DEFAULT_ROWS:,})"
    )
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument(
        "--batch-size",
        type=int,
        action="append",
        dest="batch_sizes",
        help="a retention batch_size to try (repeatable; default: "
        f"{', '.join(map(str, DEFAULT_BATCH_SIZES))})",
    )
    trail = parser.add_mutually_exclusive_group()
    trail.add_argument(
        "--no-audit",
        action="store_true",
        help="purge with [audit] enabled = false (store cost only; default: a real audit trail)",
    )
    trail.add_argument(
        "--both",
        action="store_true",
        help="run retention twice on fresh copies, trail on and trail off",
    )
    parser.add_argument(
        "--explain", action="store_true", help="print the plans of one batch's two statements"
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also time the same two statements per batch sent by the driver alone, on a "
        "fresh copy: the floor of any client-driven batched purge",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="MariaDB: also time pt-archiver --purge --bulk-delete --commit-each "
        "--primary-key-only at the same batch size (installs percona-toolkit with apt-get)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every contender this many times on the big table, interleaved",
    )
    arguments = parser.parse_args(argv)
    if arguments.rows < 2:
        parser.error("--rows must be at least 2")
    if any(size < 1 for size in arguments.batch_sizes or ()):
        parser.error("--batch-size must be positive")
    if arguments.rounds < 1:
        parser.error("--rounds must be positive")
    trails = (True, False) if arguments.both else ((False,) if arguments.no_audit else (True,))
    return Options(
        backends=tuple(BACKENDS) if arguments.backend == "all" else (arguments.backend,),
        sizes=tuple(sorted({min(SMALL_ROWS, arguments.rows), arguments.rows})),
        batch_sizes=tuple(dict.fromkeys(arguments.batch_sizes or DEFAULT_BATCH_SIZES)),
        trails=trails,
        explain=arguments.explain,
        bare=arguments.bare,
        peers=arguments.peers,
        rounds=arguments.rounds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 0 when it measured (target met or not), 1 when it failed."""
    options = parse_arguments(argv)
    # SIGTERM unwinds like Ctrl-C, so that the throw-away databases are still dropped.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    trails = " and ".join("on" if audited else "off" for audited in options.trails)
    progress(
        f"sizes {', '.join(f'{rows:,}' for rows in options.sizes)} rows; batch sizes "
        f"{', '.join(map(str, options.batch_sizes))}; audit trail {trails}; "
        f"{options.rounds} round(s); as of {AS_OF.isoformat()}, cutoff {CUTOFF}"
    )
    warn_if_busy()
    compile_retention()
    measurements = []
    try:
        if options.peers and MARIADB.name in options.backends:
            progress(f"peer: {pt_archiver()[1]}")
        for name in options.backends:
            measurements += bench_backend(BACKENDS[name], options)
    except BenchFailure as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print()
    for line in [*summary_table(measurements), "", *verdict(measurements, options)]:
        print(line)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"(total {math.ceil(time.monotonic() - STARTED)}s; load average now {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
