"""Benchmark: expired partitions dropped whole by `retention run`, against a raw DELETE + VACUUM
and pg_partman's own retention, on identical monthly-partitioned tables (issue 15).

For PostgreSQL it builds ``--rows`` rows (2M by default) spread evenly over the 24 months of
2024 and 2025, in three identical tables partitioned by month on ``logged_at`` (declarative
``PARTITION BY RANGE``, plus a default partition), then, as of 2026-01-01 00:00 UTC with a
1-year rule (exactly the 12 months of 2024 are expired: half the rows, whole partitions):

* ``raw``: ``DELETE FROM t WHERE logged_at <= cutoff`` (one statement, one transaction), then
  ``VACUUM t`` to get the space back; its lock is the DELETE's (every deleted row stays locked
  until it ends);
* ``retention``: ``retention run --yes`` in a subprocess, audit trail on (keys from
  ``retention audit keygen``), timed from start to exit; its longest lock is the longest
  ``lock_seconds`` of its ``partition.dropped`` log lines (the transaction that locks, counts
  again, detaches and drops one partition) or of its row batches;
* ``pg_partman``: the same table under pg_partman 4.7 (``create_parent`` monthly, retention set
  so that it drops the same 12 partitions, ``retention_keep_table = false``), timed
  ``SELECT partman.run_maintenance(...)``. It runs in one transaction: the parent's lock is
  held until it ends, so its lock is the whole call.

For MariaDB (``PARTITION BY RANGE COLUMNS``): the raw DELETE (no VACUUM: InnoDB reuses the
space in place) against ``retention run``.

Each copy must end with the same rows left. Every table lives in a throw-away database
``retention_bench_<hex>`` (``--database-prefix``), dropped at the end. pg_partman is Debian's
``postgresql-15-partman``.

Usage: .venv/bin/python bench/partition_purge.py [--rows N] [--backend postgres|mariadb|all]
                                                [--batch-size N] [--database-prefix P]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from bench_common import (
    audit_keygen,
    compile_retention,
    json_line,
    progress,
    retention_command,
    toml_string,
    warn_if_busy,
)
from sqlalchemy import Connection, Engine, create_engine, text

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
CUTOFF = "2025-01-01 00:00:00"  # a 1-year rule as of AS_OF: clock <= CUTOFF is due
FIRST_MONTH = date(2024, 1, 1)
MONTHS = 24
DEFAULT_ROWS = 2_000_000
SECONDS = (date(2026, 1, 1) - FIRST_MONTH).days * 86400

GOAL_ROWS_PER_SECOND = 370_000
GOAL_RAW_RATIO = 0.5
GOAL_PARTMAN_FACTOR = 2.0
GOAL_LOCK_SECONDS = 0.25

SERVERS = {
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/",
}


@dataclass
class Result:
    """One contender on one backend: rows purged, seconds, longest lock, and what it says."""

    name: str
    rows: int
    seconds: float
    lock_seconds: float
    notes: list[str] = field(default_factory=list)
    # retention on PostgreSQL: the parent's own lock (DETACH to COMMIT), which readers of the
    # table wait for; lock_seconds is then the partition's (its writers wait while it is
    # counted again).
    table_lock_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def month(index: int) -> date:
    year, number = divmod(FIRST_MONTH.month - 1 + index, 12)
    return date(FIRST_MONTH.year + year, number + 1, 1)


@contextmanager
def database(backend: str, prefix: str) -> Iterator[tuple[Engine, str]]:
    """A throw-away database: an autocommit engine on it and its URL; dropped at the end."""
    name = f"{prefix}{secrets.token_hex(4)}"
    server = create_engine(
        SERVERS[backend] + ("postgres" if backend == "postgres" else ""),
        isolation_level="AUTOCOMMIT",
    )
    with server.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = SERVERS[backend] + name
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        yield engine, url
    finally:
        engine.dispose()
        force = " WITH (FORCE)" if backend == "postgres" else ""
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        server.dispose()


def create_partitioned(connection: Connection, backend: str, table: str) -> None:
    """An empty table partitioned by month over 2024-2025 (plus a catch-all partition)."""
    columns = (
        "id bigint NOT NULL, account_id int NOT NULL, ip_address varchar(45) NOT NULL, "
        "logged_at timestamp NOT NULL, PRIMARY KEY (id, logged_at)"
    )
    if backend == "postgres":
        connection.execute(text(f"CREATE TABLE {table} ({columns}) PARTITION BY RANGE (logged_at)"))
        for index in range(MONTHS):
            connection.execute(
                text(
                    f"CREATE TABLE {table}_p{month(index):%Y_%m} PARTITION OF {table} "
                    f"FOR VALUES FROM ('{month(index)}') TO ('{month(index + 1)}') "
                    "WITH (autovacuum_enabled = off)"
                )
            )
        connection.execute(text(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT"))
        return
    parts = ", ".join(
        f"PARTITION p{month(index):%Y_%m} VALUES LESS THAN ('{month(index + 1)}')"
        for index in range(MONTHS)
    )
    connection.execute(
        text(
            f"CREATE TABLE {table} ({columns.replace('timestamp', 'datetime')}) ENGINE=InnoDB "
            f"PARTITION BY RANGE COLUMNS (logged_at) ({parts}, "
            "PARTITION pmax VALUES LESS THAN (MAXVALUE))"
        )
    )


def fill(connection: Connection, backend: str, table: str, rows: int) -> None:
    """``rows`` rows, evenly over the 24 months in id order."""
    start = f"{FIRST_MONTH} 00:00:00"
    if backend == "postgres":
        series = f"generate_series(1, {rows}) AS s(g)"
        clock = (
            f"TIMESTAMP '{start}' + make_interval(secs => floor((g - 1) * {SECONDS}.0 / {rows}))"
        )
    else:
        series = f"(SELECT seq AS g FROM seq_1_to_{rows}) AS s"
        clock = f"TIMESTAMP '{start}' + INTERVAL FLOOR((g - 1) * {SECONDS} / {rows}) SECOND"
    connection.execute(
        text(
            f"INSERT INTO {table} (id, account_id, ip_address, logged_at) "
            f"SELECT g, MOD(g, 5000) + 1, "
            f"CONCAT('10.', MOD(g, 251), '.', MOD(g, 241), '.', MOD(g, 239)), {clock} "
            f"FROM {series}"
        )
    )
    if backend == "postgres":
        connection.execute(text(f"VACUUM ANALYZE {table}"))
    else:
        connection.execute(text(f"ANALYZE TABLE {table}"))


def count(connection: Connection, table: str) -> int:
    return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def raw_delete(connection: Connection, backend: str, table: str) -> Result:
    if backend == "postgres":
        connection.execute(text("CHECKPOINT"))
    started = time.perf_counter()
    deleted = connection.execute(
        text(f"DELETE FROM {table} WHERE logged_at <= TIMESTAMP '{CUTOFF}'")
    ).rowcount
    delete_seconds = time.perf_counter() - started
    notes = [f"DELETE {delete_seconds:.2f} s"]
    if backend == "postgres":
        connection.execute(text(f"VACUUM {table}"))
        notes.append(f"VACUUM {time.perf_counter() - started - delete_seconds:.2f} s")
    name = "raw DELETE + VACUUM" if backend == "postgres" else "raw DELETE"
    return Result(name, deleted, time.perf_counter() - started, delete_seconds, notes)


def write_config(directory: Path, url: str, table: str, rows: int, batch_size: int) -> Path:
    path = directory / "retention.toml"
    keys = directory / "keys"
    path.write_text(
        f"""[settings]
timezone = "UTC"

[audit]
directory = {toml_string(directory / "trail")}
hmac_key_file = {toml_string(keys / "hmac.key")}
signing_key_file = {toml_string(keys / "signing.pem")}
public_keys_file = {toml_string(keys / "public-keys.json")}

[stores.bench]
kind = "sql"
url = {toml_string(url)}
timezone = "UTC"

[[rules]]
name = "events"
store = "bench"
table = "{table}"
key = ["id", "logged_at"]
clock = "logged_at"
period = "1y"
action = "delete"
batch_size = {batch_size}
max_delete = {rows}
max_fraction = 1.0
""",
        encoding="utf-8",
    )
    error = audit_keygen(path)
    if error is not None:
        raise SystemExit(error)
    return path


def retention_run(url: str, table: str, rows: int, batch_size: int, backend: str) -> Result:
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as scratch:
        config = write_config(Path(scratch), url, table, rows, batch_size)
        command = [*retention_command(), "--config", str(config), "--log-format", "json"]
        command += ["run", "--yes", "--as-of", AS_OF.isoformat()]
        if backend == "postgres":
            checkpoint = create_engine(url, isolation_level="AUTOCOMMIT")
            with checkpoint.connect() as connection:
                connection.execute(text("CHECKPOINT"))
            checkpoint.dispose()
        started = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"retention run exited {finished.returncode}:\n{finished.stderr}")
    lines = [json_line(line) for line in finished.stderr.splitlines()]
    report = next(line for line in lines if line.get("event") == "rule.finished")
    drops = [line for line in lines if line.get("event") == "partition.dropped"]
    kept = [line for line in lines if line.get("event") == "partition.kept"]
    locks = [line for line in lines if line.get("event") == "partition.locks"]
    table_lock = max((float(line["table_lock_seconds"]) for line in locks), default=None)
    notes = [
        f"{len(drops)} partitions dropped whole ({sum(d['rows'] for d in drops):,} rows)",
        f"rule {report['seconds']:.2f} s, {report['batches']} batches",
    ]
    if kept:
        notes.append(f"{len(kept)} partitions KEPT: {kept[0].get('reason')}")
    return Result(
        "retention run (trail on)",
        int(report["deleted"]),
        seconds,
        float(report["longest_transaction_seconds"]),
        notes,
        table_lock,
    )


def bench_postgres(rows: int, batch_size: int, prefix: str) -> list[Result]:
    with database("postgres", prefix) as (engine, url), engine.connect() as connection:
        for table in ("events_raw", "events_ret", "events_partman"):
            progress(f"postgres: {table}: {rows:,} rows over {MONTHS} monthly partitions")
            if table == "events_partman":
                connection.execute(
                    text(
                        "CREATE TABLE events_partman (id bigint NOT NULL, account_id int NOT NULL,"
                        " ip_address varchar(45) NOT NULL, logged_at timestamp NOT NULL,"
                        " PRIMARY KEY (id, logged_at)) PARTITION BY RANGE (logged_at)"
                    )
                )
            else:
                create_partitioned(connection, "postgres", table)
        results = []
        progress("postgres: raw DELETE + VACUUM")
        fill(connection, "postgres", "events_raw", rows)
        results.append(shown(raw_delete(connection, "postgres", "events_raw")))
        left = count(connection, "events_raw")
        progress("postgres: retention run")
        fill(connection, "postgres", "events_ret", rows)
        results.append(shown(retention_run(url, "events_ret", rows, batch_size, "postgres")))
        same(left, count(connection, "events_ret"), "retention")
        progress("postgres: pg_partman")
        results.append(shown(pg_partman(connection, rows)))
        # pg_partman drops whole partitions only: a row exactly at the cutoff (due) is in the
        # first kept partition, and stays.
        on_cutoff = count(connection, f"events_partman WHERE logged_at = TIMESTAMP '{CUTOFF}'")
        same(left + on_cutoff, count(connection, "events_partman"), "pg_partman")
        return results


def pg_partman(connection: Connection, rows: int) -> Result:
    """pg_partman 4.7 managing ``events_partman`` (create_parent makes its partitions, then the
    rows go in), its retention set to drop exactly the 2024 months; time run_maintenance()."""
    table = "events_partman"
    connection.execute(text("CREATE SCHEMA IF NOT EXISTS partman"))
    connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman"))
    connection.execute(
        text(
            "SELECT partman.create_parent(p_parent_table => 'public.events_partman', "
            "p_control => 'logged_at', p_type => 'native', p_interval => 'monthly', "
            "p_start_partition => '2024-01-01', p_premake => 1)"
        )
    )
    fill(connection, "postgres", table, rows)
    # pg_partman drops a partition when its end is before now() - retention: retention is set
    # so that now() - retention falls just after the cutoff, like the rule's.
    connection.execute(
        text(
            "UPDATE partman.part_config SET retention_keep_table = false, retention = "
            "(date_trunc('second', now()) - TIMESTAMPTZ '2025-01-01 01:00:00+00')::text "
            "WHERE parent_table = 'public.events_partman'"
        )
    )
    partitions = count(connection, "pg_inherits WHERE inhparent = 'events_partman'::regclass")
    connection.execute(text("CHECKPOINT"))
    before = count(connection, table)
    started = time.perf_counter()
    connection.execute(text("SELECT partman.run_maintenance('public.events_partman')"))
    seconds = time.perf_counter() - started
    dropped = before - count(connection, table)
    left = count(connection, "pg_inherits WHERE inhparent = 'events_partman'::regclass")
    notes = [f"{partitions - left} of {partitions} partitions dropped, one transaction, no audit"]
    return Result("pg_partman run_maintenance()", dropped, seconds, seconds, notes)


def bench_mariadb(rows: int, batch_size: int, prefix: str) -> list[Result]:
    with database("mariadb", prefix) as (engine, url), engine.connect() as connection:
        connection.execute(text("SET time_zone = '+00:00'"))
        results = []
        for table in ("events_raw", "events_ret"):
            progress(f"mariadb: {table}: {rows:,} rows over {MONTHS} monthly partitions")
            create_partitioned(connection, "mariadb", table)
            fill(connection, "mariadb", table, rows)
        settle_mariadb(connection)
        progress("mariadb: raw DELETE")
        results.append(shown(raw_delete(connection, "mariadb", "events_raw")))
        left = count(connection, "events_raw")
        settle_mariadb(connection)
        progress("mariadb: retention run")
        results.append(shown(retention_run(url, "events_ret", rows, batch_size, "mariadb")))
        same(left, count(connection, "events_ret"), "retention")
        return results


def settle_mariadb(connection: Connection, timeout_seconds: float = 60.0) -> None:
    """Wait until InnoDB has purged what the contender before left (the raw DELETE's million
    rows) and flushed its dirty pages, as PostgreSQL's contenders start after a CHECKPOINT: a
    DROP PARTITION that meets the purge still at work, or many dirty pages, waits about a
    second for it, which would be charged to the next contender."""
    connection.execute(text("SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001"))
    deadline = time.monotonic() + timeout_seconds
    try:
        while time.monotonic() < deadline:
            status = dict(
                connection.execute(
                    text(
                        "SHOW GLOBAL STATUS WHERE Variable_name IN "
                        "('Innodb_history_list_length', 'Innodb_buffer_pool_pages_dirty')"
                    )
                ).all()
            )
            if (
                int(status["Innodb_history_list_length"]) < 100
                and int(status["Innodb_buffer_pool_pages_dirty"]) < 1000
            ):
                progress(f"mariadb: settled ({status})")
                return
            time.sleep(0.2)
        progress(f"mariadb: not settled after {timeout_seconds:.0f} s ({status})")
    finally:
        connection.execute(text("SET GLOBAL innodb_max_dirty_pages_pct_lwm = DEFAULT"))


def shown(result: Result) -> Result:
    """Print one contender's figures as soon as they are measured."""
    progress(
        f"{result.name}: {result.rows:,} rows in {result.seconds:.2f} s, longest lock "
        f"{result.lock_seconds * 1000:.0f} ms; " + "; ".join(result.notes)
    )
    return result


def same(expected: int, got: int, who: str) -> None:
    if expected != got:
        raise SystemExit(f"{who} left {got:,} rows, the raw DELETE {expected:,}")


def report(backend: str, results: Sequence[Result]) -> list[str]:
    lines = [
        f"{backend}:",
        f"  {'contender':<30} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'longest lock':>13}",
    ]
    for result in results:
        lines.append(
            f"  {result.name:<30} {result.rows:>10,} {result.seconds:>8.2f} "
            f"{result.rate:>10,.0f} {result.lock_seconds * 1000:>10.0f} ms  "
            + "; ".join(result.notes)
        )
    by_name = {result.name.split(" (")[0].split(" run")[0]: result for result in results}
    ours = next(result for result in results if result.name.startswith("retention"))
    raw = results[0]
    lines.append(
        f"  goal >= {GOAL_ROWS_PER_SECOND:,} rows/s: {ours.rate:,.0f} "
        f"({'met' if ours.rate >= GOAL_ROWS_PER_SECOND else 'NOT met'})"
    )
    ratio = ours.rate / raw.rate
    lines.append(
        f"  goal >= {GOAL_RAW_RATIO} x {raw.name}: {ratio:.2f} "
        f"({'met' if ratio >= GOAL_RAW_RATIO else 'NOT met'})"
    )
    partman = by_name.get("pg_partman")
    if partman is not None:
        factor = ours.seconds / partman.seconds
        lines.append(
            f"  goal within {GOAL_PARTMAN_FACTOR:g}x pg_partman: {factor:.2f}x its time "
            f"({'met' if factor <= GOAL_PARTMAN_FACTOR else 'NOT met'})"
        )
    lines.append(
        f"  goal longest lock <= {GOAL_LOCK_SECONDS * 1000:.0f} ms: "
        f"{ours.lock_seconds * 1000:.0f} ms, longest transaction "
        f"({'met' if ours.lock_seconds <= GOAL_LOCK_SECONDS else 'NOT met'})"
    )
    if ours.table_lock_seconds is not None:
        lines.append(
            f"  of which the table's own lock (DETACH to COMMIT on PostgreSQL, LOCK TABLES on "
            f"MariaDB): {ours.table_lock_seconds * 1000:.0f} ms "
            f"({'met' if ours.table_lock_seconds <= GOAL_LOCK_SECONDS else 'NOT met'})"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--backend", choices=["postgres", "mariadb", "all"], default="all")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument(
        "--database-prefix",
        default="retention_bench_",
        help="the throw-away databases' names start with this (then 8 hex digits)",
    )
    options = parser.parse_args(argv)
    warn_if_busy()
    compile_retention()
    lines = []
    if options.backend in ("postgres", "all"):
        lines += report(
            "postgres", bench_postgres(options.rows, options.batch_size, options.database_prefix)
        )
    if options.backend in ("mariadb", "all"):
        lines += report(
            "mariadb", bench_mariadb(options.rows, options.batch_size, options.database_prefix)
        )
    print("\n".join(lines))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
