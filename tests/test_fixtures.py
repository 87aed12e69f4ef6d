"""Checks that the database fixtures in conftest.py give real, isolated databases."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError


@contextmanager
def connect(url: str) -> Iterator[Connection]:
    """Connect to ``url``, disposing of the engine afterwards."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def current_database(conn: Connection) -> str:
    """Name of the database the connection is using (file path for SQLite)."""
    if conn.dialect.name == "sqlite":
        return str(conn.execute(text("SELECT file FROM pragma_database_list")).scalar_one())
    function = "DATABASE()" if conn.dialect.name == "mysql" else "current_database()"
    return str(conn.execute(text(f"SELECT {function}")).scalar_one())


def test_select_one_and_create_table(database_url: str) -> None:
    with connect(database_url) as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t (id) VALUES (1)"))
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1


def test_database_url_names_the_fresh_database(database_url: str) -> None:
    with connect(database_url) as conn:
        name = current_database(conn)
    if database_url.startswith("sqlite"):
        assert name.endswith("test.sqlite")
    else:
        assert name.startswith("retention_test_")
        assert name == make_url(database_url).database


_seen_databases: dict[str, list[str]] = {}


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_a_different_database_and_old_ones_are_dropped(
    database_url: str, attempt: int
) -> None:
    """Run twice per backend: the second run's database differs and the first is gone."""
    with connect(database_url) as conn:
        name = current_database(conn)
        backend = conn.dialect.name
        seen = _seen_databases.setdefault(backend, [])
        assert name not in seen
        existing: list[str]
        if backend == "postgresql":
            existing = list(conn.execute(text("SELECT datname FROM pg_database")).scalars())
        elif backend == "mysql":
            existing = list(conn.execute(text("SHOW DATABASES")).scalars())
        else:
            existing = []  # SQLite files live in per-test tmp dirs; nothing to drop
        assert not set(seen) & set(existing)
    seen.append(name)


def test_postgres_readonly_role_can_select_but_not_write(
    postgres_url: str, postgres_readonly_url: Callable[[], str]
) -> None:
    with connect(postgres_url) as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t (id) VALUES (1)"))
        conn.commit()
    readonly_url = postgres_readonly_url()
    assert make_url(readonly_url).username != "postgres"
    with connect(readonly_url) as conn:
        assert conn.execute(text("SELECT id FROM t")).scalars().all() == [1]
        for statement in (
            "INSERT INTO t (id) VALUES (2)",
            "DELETE FROM t",
            "CREATE TABLE u (x int)",
        ):
            with pytest.raises(DBAPIError) as excinfo:
                conn.execute(text(statement))
            assert excinfo.value.orig is not None
            assert (
                getattr(excinfo.value.orig, "sqlstate", None) == "42501"
            )  # insufficient_privilege
            conn.rollback()
    with connect(postgres_url) as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1


def test_postgres_non_utc_session_time_zone(postgres_non_utc_url: str) -> None:
    with connect(postgres_non_utc_url) as conn:
        assert conn.execute(text("SHOW TimeZone")).scalar_one() == "America/New_York"
        offset = conn.execute(text("SELECT EXTRACT(TIMEZONE FROM now())")).scalar_one()
        assert offset in (-5 * 3600, -4 * 3600)


def test_postgres_default_session_is_not_forced_non_utc(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        assert conn.execute(text("SHOW TimeZone")).scalar_one() != "America/New_York"


def test_mariadb_non_utc_session_time_zone(mariadb_non_utc_url: str) -> None:
    engine = create_engine(mariadb_non_utc_url)
    try:
        for _ in range(2):  # every pooled and fresh connection, not just the first
            with engine.connect() as conn:
                zone = conn.execute(text("SELECT @@session.time_zone")).scalar_one()
                assert zone == "-05:00"
                skew = conn.execute(
                    text("SELECT TIMESTAMPDIFF(HOUR, UTC_TIMESTAMP(), NOW())")
                ).scalar_one()
                assert skew == -5
            engine.dispose()
    finally:
        engine.dispose()


def test_mariadb_url_is_utf8mb4(mariadb_url: str) -> None:
    with connect(mariadb_url) as conn:
        charset = conn.execute(text("SELECT @@character_set_database")).scalar_one()
        assert charset == "utf8mb4"


@pytest.mark.parametrize(
    ("ci", "expected"), [("", "1 skipped"), ("true", "1 error")], ids=["local", "ci"]
)
def test_unreachable_server_skips_locally_and_fails_in_ci(ci: str, expected: str) -> None:
    """An unreachable server is a skip with instructions, but an error under CI=true."""
    env = {
        **os.environ,
        "CI": ci,
        "RETENTION_TEST_POSTGRES": "postgresql+psycopg://postgres@127.0.0.1:1/postgres",
    }
    node = f"{Path(__file__).name}::test_postgres_default_session_is_not_forced_non_utc"
    result = subprocess.run(
        # Without Hypothesis's plugin: its import is most of this child's start-up.
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",
            node,
        ],
        cwd=Path(__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert expected in output, output
    assert "RETENTION_TEST_POSTGRES" in output
    assert "pg_ctlcluster --skip-systemctl-redirect" in output
