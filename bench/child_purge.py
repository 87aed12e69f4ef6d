"""Child rows deleted with their parents: `retention run` (trail on) of a rule with
``[[rules.children]]``, timed on identical copies, for one or several checkouts of the code.

Each batch locks its parent rows and records a leaf for each child row deleted with them in the
same intent (docs/audit.md). This bench times that rule: parents (all due) with ``--children``
child rows each, by the rule's own time (its rule.finished line: start-up and planning
excluded), after `audit verify` passed, on SQLite, PostgreSQL and MariaDB. Give ``--checkout
NAME=DIR`` twice or more (say the code before a change and after it): the runs alternate
between them, round by round (the order reversed every other round), on fresh copies, so that
a busy machine weighs on all alike; each one's time is given per round as a ratio to the first
one's.

Run: `.venv/bin/python bench/child_purge.py --checkout old=/path/to/old --checkout new=.
[--backend sqlite|postgres|mariadb] [--parents N] [--children N] [--batch-size N]
[--rounds N] [--profile DIR]`. Only 127.0.0.1 is contacted; what it creates is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import compile_retention, progress, warn_if_busy
from sqlalchemy import create_engine, text

AS_OF = "2026-01-01T12:00:00+00:00"
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"


def fill(url: str, parents: int, per_parent: int) -> None:
    """Given a database, create ``parents`` (all closed in 2020) and ``children`` (``per_parent``
    rows each, by a foreign key with an index)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE parents (id integer PRIMARY KEY, closed_at timestamp NOT NULL)")
        )
        connection.execute(
            text(
                "CREATE TABLE children (id integer PRIMARY KEY, parent_id integer NOT NULL "
                "REFERENCES parents (id), note varchar(40))"
            )
        )
        connection.execute(text("CREATE INDEX children_parent ON children (parent_id)"))
        connection.execute(text("CREATE INDEX parents_closed ON parents (closed_at)"))
        connection.execute(
            text("INSERT INTO parents VALUES (:id, :at)"),
            [{"id": i, "at": "2020-01-01 00:00:00"} for i in range(1, parents + 1)],
        )
        connection.execute(
            text("INSERT INTO children VALUES (:id, :parent, 'a note')"),
            [
                {"id": i, "parent": (i - 1) // per_parent + 1}
                for i in range(1, parents * per_parent + 1)
            ],
        )
    engine.dispose()


class Copies:
    """Fresh copies of one filled database, per backend."""

    def __init__(self, backend: str, directory: Path, parents: int, per_parent: int) -> None:
        self.backend = backend
        self.directory = directory
        self.created: list[str] = []
        if backend == "sqlite":
            self.base = str(directory / "base.sqlite")
            fill(f"sqlite:///{self.base}", parents, per_parent)
        else:
            self.base = self._create(None)
            fill(self._url(self.base), parents, per_parent)

    def _url(self, name: str) -> str:
        if self.backend == "postgres":
            return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        return f"mysql+pymysql://root@127.0.0.1:3306/{name}"

    def _create(self, template: str | None) -> str:
        name = f"retention_bench_{secrets.token_hex(4)}"
        admin_url = POSTGRES_ADMIN if self.backend == "postgres" else MARIADB_ADMIN
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            if self.backend == "postgres":
                suffix = f' TEMPLATE "{template}"' if template else ""
                connection.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
            else:
                connection.execute(text(f"CREATE DATABASE `{name}`"))
                if template:
                    for table in ("parents", "children"):
                        connection.execute(
                            text(f"CREATE TABLE `{name}`.{table} LIKE `{template}`.{table}")
                        )
                        connection.execute(
                            text(f"INSERT INTO `{name}`.{table} SELECT * FROM `{template}`.{table}")
                        )
        admin.dispose()
        self.created.append(name)
        return name

    def fresh(self) -> str:
        """Return the URL of a fresh copy."""
        if self.backend == "sqlite":
            copy = self.directory / f"copy-{secrets.token_hex(4)}.sqlite"
            shutil.copyfile(self.base, copy)
            return f"sqlite:///{copy}"
        return self._url(self._create(self.base))

    def drop(self) -> None:
        if self.backend == "sqlite":
            return
        admin_url = POSTGRES_ADMIN if self.backend == "postgres" else MARIADB_ADMIN
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in reversed(self.created):
                if self.backend == "postgres":
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def write_config(directory: Path, url: str, batch_size: int, checkout: Path) -> Path:
    """Given a working directory, a database and a checkout, write a config with the trail on
    and its keys (made by that checkout)."""
    config = directory / "retention.toml"
    config.write_text(
        f'[settings]\ntimezone = "UTC"\nmax_fraction = 1.0\n'
        f'[state]\nurl = "sqlite:///{directory}/state.sqlite"\n'
        f'[stores.db]\nkind = "sql"\nurl = "{url}"\n'
        f'[audit]\ndirectory = "{directory}/audit"\n'
        f'hmac_key_file = "{directory}/keys/hmac.key"\n'
        f'signing_key_file = "{directory}/keys/signing.pem"\n'
        '[[rules]]\nname = "parents"\nstore = "db"\ntable = "parents"\nkey = "id"\n'
        'clock = "closed_at"\nperiod = "1y"\naction = "delete"\n'
        f"batch_size = {batch_size}\n"
        '[[rules.children]]\ntable = "children"\nforeign_key = "parent_id"\n'
    )
    retention(checkout, config, "audit", "keygen")
    return config


def retention(
    checkout: Path, config: Path, *arguments: str, profile: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `retention` of ``checkout`` (its package first on the path) with ``config``."""
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile)]
    result = subprocess.run(
        [*prefix, "-m", "retention", "--config", str(config), "--log-format", "json", *arguments],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        cwd=checkout,
    )
    if result.returncode != 0:
        raise SystemExit(f"retention {arguments} failed ({result.returncode}): {result.stderr}")
    return result


def timed_run(checkout: Path, config: Path, profile: Path | None) -> tuple[float, int, int]:
    """Run the purge; return the rule's time, its parent rows and its child rows deleted,
    after `audit verify` passed."""
    result = retention(checkout, config, "run", "--yes", "--as-of", AS_OF, profile=profile)
    finished = [json.loads(line) for line in result.stderr.splitlines() if "rule.finished" in line]
    retention(checkout, config, "audit", "verify")
    line = finished[0]
    return float(line["seconds"]), int(line["deleted"]), int(line.get("children_deleted", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--checkout", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "mariadb"], action="append")
    parser.add_argument("--parents", type=int, default=20_000)
    parser.add_argument("--children", type=int, default=5, help="child rows per parent")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write a cProfile file per run here")
    options = parser.parse_args()
    checkouts = {
        name: Path(path).resolve()
        for name, path in (item.split("=", 1) for item in options.checkout)
    }
    warn_if_busy()
    for path in checkouts.values():
        compile_retention(checkout=path)
    for backend in options.backend or ["sqlite", "postgres", "mariadb"]:
        times: dict[str, list[float]] = {name: [] for name in checkouts}
        with tempfile.TemporaryDirectory() as work:
            copies = Copies(backend, Path(work), options.parents, options.children)
            try:
                for round_number in range(options.rounds):
                    order = list(checkouts)
                    if round_number % 2:
                        order.reverse()
                    for name in order:
                        run_directory = Path(work) / f"{name}-{round_number}"
                        run_directory.mkdir()
                        config = write_config(
                            run_directory, copies.fresh(), options.batch_size, checkouts[name]
                        )
                        profile = None
                        if options.profile is not None:
                            options.profile.mkdir(parents=True, exist_ok=True)
                            profile = options.profile / f"{backend}-{name}-{round_number}.prof"
                        seconds, parents, children = timed_run(checkouts[name], config, profile)
                        times[name].append(seconds)
                        progress(
                            f"{backend} round {round_number + 1} {name}: {parents:,} parents, "
                            f"{children:,} children in {seconds:.3f} s"
                        )
            finally:
                copies.drop()
        for name, values in times.items():
            progress(
                f"{backend} {name}: median {statistics.median(values):.3f} s "
                f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)"
            )
        first, *others = list(checkouts)
        for name in others:
            ratios = sorted(b / a for a, b in zip(times[first], times[name], strict=True))
            progress(
                f"{backend} {name}/{first} per round: "
                + ", ".join(f"{ratio:.2f}" for ratio in ratios)
            )


if __name__ == "__main__":
    main()
