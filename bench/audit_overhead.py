"""Audit trail cost: `retention run` with the trail on vs off, on identical PostgreSQL copies.

Each batch with the trail on hashes its records' leaves and writes its leaves file, its pending
keys and its intent (each fsynced) before the COMMIT, and its result after. The trail's cost per
purged record is (purge time on - purge time off) / rows; issue 17's target is 1.0 us or less.
Run: `.venv/bin/python bench/audit_overhead.py [--rows N] [--batch-size N] [--rounds N]`.
Only 127.0.0.1 is contacted; the databases it creates are dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import compile_retention
from sqlalchemy import create_engine, text

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
AS_OF = "2026-01-01T12:00:00+00:00"
ROOT = Path(__file__).resolve().parent.parent
RETENTION = (sys.executable, "-m", "retention")


def make_database(name: str, rows: int) -> str:
    """Given a name and a row count, create a database with connection_logs (about half older
    than a year at AS_OF, scattered through the key order) and return its URL."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE connection_logs (id bigint PRIMARY KEY, account_id int, "
                "ip_address varchar(45), logged_at timestamp NOT NULL)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO connection_logs "
                "SELECT g, g % 1000, '192.0.2.' || (g % 250), "
                "timestamp '2024-01-01' + ((g::bigint * 7919) % 730) * interval '1 day' "
                "FROM generate_series(1, CAST(:rows AS int)) AS g"
            ),
            {"rows": rows},
        )
        connection.execute(text("CREATE INDEX ON connection_logs (logged_at)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE connection_logs"))
    engine.dispose()
    return url


def drop_database(name: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def write_config(directory: Path, url: str, batch_size: int, audited: bool) -> Path:
    """Given a working directory and a database, write a config (trail on or off)."""
    audit = (
        f'[audit]\ndirectory = "{directory}/audit"\n'
        f'hmac_key_file = "{directory}/keys/hmac.key"\n'
        f'signing_key_file = "{directory}/keys/signing.pem"\n'
        if audited
        else "[audit]\nenabled = false\n"
    )
    config = directory / "retention.toml"
    config.write_text(
        f'[settings]\ntimezone = "UTC"\nmax_fraction = 1.0\n'
        f'[state]\nurl = "sqlite:///{directory}/state.sqlite"\n'
        f'[stores.db]\nkind = "sql"\nurl = "{url}"\n{audit}'
        '[[rules]]\nname = "connection-logs"\nstore = "db"\ntable = "connection_logs"\n'
        'key = "id"\nclock = "logged_at"\nperiod = "1y"\naction = "delete"\n'
        f"batch_size = {batch_size}\n"
    )
    if audited:
        subprocess.run(
            [sys.executable, "-m", "retention", "--config", str(config), "audit", "keygen"],
            check=True,
            capture_output=True,
        )
    return config


def timed_run(config: Path) -> tuple[float, float, int]:
    """Given a config, run the purge; return the purge time (the executor's, from its
    rule.finished line: start-up and planning excluded), the CPU time of the whole process
    (user + system: what a busy machine moves least) and the rows it deleted."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "retention",
            "--config",
            str(config),
            "--log-format",
            "json",
            "run",
            "--yes",
            "--as-of",
            AS_OF,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"run failed ({result.returncode}): {result.stdout}{result.stderr}")
    finished = [
        json.loads(line) for line in result.stderr.splitlines() if '"rule.finished"' in line
    ]
    return float(finished[0]["seconds"]), cpu, int(finished[0]["deleted"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, interleaved")
    options = parser.parse_args()
    compile_retention()
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu_times: dict[bool, list[float]] = {True: [], False: []}
    rows = 0
    for round_number in range(options.rounds):
        for audited in (False, True) if round_number % 2 == 0 else (True, False):
            name = f"retention_bench_{secrets.token_hex(4)}"
            try:
                url = make_database(name, options.rows)
                with tempfile.TemporaryDirectory() as directory:
                    config = write_config(Path(directory), url, options.batch_size, audited)
                    elapsed, cpu, deleted = timed_run(config)
                    if audited:
                        verify = subprocess.run(
                            [*RETENTION, "--config", str(config), "audit", "verify"],
                            capture_output=True,
                            text=True,
                            check=False,
                        )
                        if verify.returncode != 0:
                            raise SystemExit(f"audit verify failed: {verify.stdout}")
            finally:
                drop_database(name)
            times[audited].append(elapsed)
            cpu_times[audited].append(cpu)
            rows = deleted
            label = "audit on " if audited else "audit off"
            print(
                f"{label}: {deleted:,} rows deleted in {elapsed:.2f} s (process CPU {cpu:.2f} s)",
                flush=True,
            )
    off, on = min(times[False]), min(times[True])
    per_record = (on - off) / rows * 1e6
    # Each round's pair, for the spread: a busy machine moves single runs a lot.
    paired = zip(times[True], times[False], strict=True)
    pairs = sorted((audited - plain) / rows * 1e6 for audited, plain in paired)
    print(
        f"rows={options.rows:,} purged={rows:,} batch_size={options.batch_size} "
        f"best of {options.rounds}: off {off:.2f} s, on {on:.2f} s, overhead "
        f"{(on - off) / off:+.1%}; trail cost {per_record:.2f} us per purged record "
        f"(pairs {pairs[0]:.2f}-{pairs[-1]:.2f}; target <= 1.0 us: "
        f"{'met' if per_record <= 1.0 else 'NOT met'})"
    )
    cpu_per_record = (min(cpu_times[True]) - min(cpu_times[False])) / rows * 1e6
    print(
        f"process CPU best of {options.rounds}: off {min(cpu_times[False]):.2f} s, on "
        f"{min(cpu_times[True]):.2f} s; the trail's CPU {cpu_per_record:.2f} us per purged "
        "record (no fsync wait in it)"
    )


if __name__ == "__main__":
    main()
