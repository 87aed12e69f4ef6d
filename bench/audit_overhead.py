"""Audit trail cost: `retention run` with the trail on vs off, on identical PostgreSQL copies.

Each batch with the trail on hashes its records' leaves and writes its leaves file, its pending
keys and its intent (each fsynced) before the COMMIT, and its result after. Issue 17's target:
the trail costs 1.0 us or less per purged record.

The figure judged is the trail's own CPU time: each `retention run` with the trail on runs with
the trail's calls timed in the process (the recorder's intent, result, not-done and run-finished
calls: the CPU time of the thread calling them, plus that of the work they hand to the trail's
own threads), divided by the records purged. It is measured directly, not as the difference of
two whole purges, so the database's and the rest of the process's time does not blur it; a
busy host still slows CPU work somewhat. Reported beside it, per purged record: the wall time
inside those calls (the fsyncs' waits included), the whole process's CPU on minus off and the
purge's wall time on minus off (each pair of a round), each as its median and spread over the
rounds. Runs alternate (off first in even rounds, on first in odd ones) after one warm-up pair
that is not counted.

Run: `.venv/bin/python bench/audit_overhead.py [--rows N] [--batch-size N] [--rounds N]`.
Only 127.0.0.1 is contacted; the databases it creates are dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench_common import compile_retention
from sqlalchemy import create_engine, text

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
AS_OF = "2026-01-01T12:00:00+00:00"
ROOT = Path(__file__).resolve().parent.parent
RETENTION = (sys.executable, "-m", "retention")
GOAL_MICROSECONDS = 1.0

# Runs `retention ARGS...` with the trail's calls timed; at exit, writes what they took (CPU
# seconds, wall seconds, calls) as JSON to the file named by $AUDIT_TIMES. The trail's threads
# (leaves and pending keys written side by side, their fsyncs; settled files removed) count
# their CPU time too; their wall time is inside the calls that wait for them.
TIMED_TRAIL = """
import atexit, json, os, sys, threading, time
from retention.audit import recorder, trail
spent = {"cpu": 0.0, "wall": 0.0, "calls": 0}
lock = threading.Lock()
def timed(function):
    def call(*args, **kwargs):
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            with lock:
                spent["cpu"] += time.thread_time() - cpu
                spent["wall"] += time.perf_counter() - wall
                spent["calls"] += 1
    return call
def timed_cpu(function):
    def call(*args, **kwargs):
        cpu = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            with lock:
                spent["cpu"] += time.thread_time() - cpu
    return call
for name in ("intent", "result", "not_done", "unresolved", "run_finished"):
    setattr(recorder.TrailRecorder, name, timed(getattr(recorder.TrailRecorder, name)))
threads = trail.TrailWriter._threads
def timed_threads(self):
    pool = threads(self)
    if not getattr(pool, "timed", False):
        submit = pool.submit
        pool.submit = lambda function, *args, **kwargs: submit(
            timed_cpu(function), *args, **kwargs
        )
        pool.timed = True
    return pool
trail.TrailWriter._threads = timed_threads
def written():
    with open(os.environ["AUDIT_TIMES"], "w") as handle:
        json.dump(spent, handle)
atexit.register(written)
sys.argv = ["retention", *sys.argv[1:]]
from retention.cli import main
main()
"""


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


def timed_run(config: Path, times_file: Path) -> tuple[float, float, int, dict[str, float]]:
    """Given a config, run the purge (its trail's calls timed into ``times_file``); return the
    purge time (the executor's, from its rule.finished line: start-up and planning excluded),
    the CPU time of the whole process (user + system), the rows it deleted, and what the
    trail's calls took (cpu, wall seconds; nothing without a trail)."""
    times_file.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            TIMED_TRAIL,
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
        env={**os.environ, "AUDIT_TIMES": str(times_file)},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"run failed ({result.returncode}): {result.stdout}{result.stderr}")
    finished = [
        json.loads(line) for line in result.stderr.splitlines() if '"rule.finished"' in line
    ]
    trail_times = json.loads(times_file.read_text())
    return float(finished[0]["seconds"]), cpu, int(finished[0]["deleted"]), trail_times


def spread(values: Sequence[float]) -> str:
    """The median of ``values`` and their range, in microseconds (the values in seconds per
    record)."""
    ordered = sorted(value * 1e6 for value in values)
    return f"{statistics.median(ordered):.2f} us (rounds {ordered[0]:.2f}-{ordered[-1]:.2f})"


def one_run(
    audited: bool, options: argparse.Namespace
) -> tuple[float, float, int, dict[str, float]]:
    """One purge on a fresh copy of the table, trail on or off."""
    name = f"retention_bench_{secrets.token_hex(4)}"
    try:
        url = make_database(name, options.rows)
        with tempfile.TemporaryDirectory() as directory:
            config = write_config(Path(directory), url, options.batch_size, audited)
            measured = timed_run(config, Path(directory) / "trail-times.json")
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
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5, help="pairs of runs, alternated (5)")
    parser.add_argument(
        "--warm-up", type=int, default=1, help="pairs run first and not counted (1)"
    )
    options = parser.parse_args()
    compile_retention()
    trail_cpu: list[float] = []
    trail_wall: list[float] = []
    process_cpu: list[float] = []
    purge_wall: list[float] = []
    for round_number in range(-options.warm_up, options.rounds):
        runs: dict[bool, tuple[float, float, int, dict[str, float]]] = {}
        for audited in (False, True) if round_number % 2 == 0 else (True, False):
            runs[audited] = one_run(audited, options)
            elapsed, cpu, deleted, trail_times = runs[audited]
            label = "audit on " if audited else "audit off"
            trail_part = (
                f"; the trail's calls: CPU {trail_times['cpu']:.3f} s, wall "
                f"{trail_times['wall']:.3f} s"
                if audited
                else ""
            )
            print(
                f"{'warm-up' if round_number < 0 else f'round {round_number + 1}'} {label}: "
                f"{deleted:,} rows deleted in {elapsed:.2f} s (process CPU {cpu:.2f} s)"
                f"{trail_part}; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        if round_number < 0:
            continue
        (on_wall, on_cpu, rows, on_trail), (off_wall, off_cpu, off_rows, _) = (
            runs[True],
            runs[False],
        )
        if rows != off_rows:
            raise SystemExit(f"the two runs purged {rows:,} and {off_rows:,} rows")
        trail_cpu.append(on_trail["cpu"] / rows)
        trail_wall.append(on_trail["wall"] / rows)
        process_cpu.append((on_cpu - off_cpu) / rows)
        purge_wall.append((on_wall - off_wall) / rows)
    judged = statistics.median(trail_cpu) * 1e6
    print(
        f"rows={options.rows:,} batch_size={options.batch_size}, {options.rounds} rounds after "
        f"{options.warm_up} warm-up pair(s); per purged record:\n"
        f"  the trail's CPU (its calls and threads): {spread(trail_cpu)}\n"
        f"  wall time inside the trail's calls (fsync waits included): {spread(trail_wall)}\n"
        f"  process CPU, on minus off: {spread(process_cpu)}\n"
        f"  purge wall time, on minus off: {spread(purge_wall)}\n"
        f"target <= {GOAL_MICROSECONDS} us for the trail's CPU (median): "
        f"{'met' if judged <= GOAL_MICROSECONDS else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
