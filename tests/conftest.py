"""Fixtures giving each test a fresh, real database, as a SQLAlchemy URL string.

SQLite needs nothing. PostgreSQL and MariaDB tests create a uniquely named
database per test on a local server and drop it afterwards. When a server is
unreachable those tests are skipped with instructions, except under ``CI=true``
where that is a hard failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import URL, Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

CONNECT_TIMEOUT_S = 3
NON_UTC_POSTGRES_TIMEZONE = "America/New_York"
NON_UTC_MARIADB_OFFSET = "-05:00"
UNKNOWN_THREAD_ID = 1094  # MariaDB ER_NO_SUCH_THREAD


def _drop_postgres(conn: Connection, quoted: str, name: str) -> None:
    """Drop a PostgreSQL database, disconnecting anyone still using it."""
    conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))


def _drop_mariadb(conn: Connection, quoted: str, name: str) -> None:
    """Drop a MariaDB database, first killing sessions that could hold locks on it."""
    sessions = conn.execute(
        text(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = :name AND id <> CONNECTION_ID()"
        ),
        {"name": name},
    ).scalars()
    for session_id in sessions.all():
        try:
            conn.execute(text(f"KILL CONNECTION {int(session_id)}"))
        except OperationalError as error:
            # The session ended between the listing and the KILL: nothing left to kill.
            if getattr(error.orig, "args", (None,))[0] != UNKNOWN_THREAD_ID:
                raise
    conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))


@dataclass(frozen=True)
class Server:
    """A database server on which tests create throw-away databases."""

    label: str
    env_var: str
    default_admin_url: str
    start_command: str
    create_suffix: str
    test_query: Mapping[str, str]
    drop: Callable[[Connection, str, str], None]

    def admin_url(self) -> URL:
        """The admin URL: ``$env_var`` if set, else the local default."""
        return make_url(os.environ.get(self.env_var) or self.default_admin_url)

    def unavailable(self, error: Exception) -> None:
        """Skip (or, under ``CI=true``, fail) because the server cannot be reached."""
        url = self.admin_url().render_as_string(hide_password=True)
        message = (
            f"{self.label} is not reachable at {url}: {type(error).__name__}: {error}\n"
            f"To run these tests, start it with:\n    {self.start_command}\n"
            f"or set {self.env_var} to an admin URL of a running server "
            f"(default {self.default_admin_url})."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


POSTGRES = Server(
    label="PostgreSQL",
    env_var="RETENTION_TEST_POSTGRES",
    default_admin_url="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    start_command=("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"),
    create_suffix="",
    test_query={},
    drop=_drop_postgres,
)
MARIADB = Server(
    label="MariaDB",
    env_var="RETENTION_TEST_MARIADB",
    default_admin_url="mysql+pymysql://root@127.0.0.1:3306/",
    start_command=("start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"),
    create_suffix=" CHARACTER SET utf8mb4",
    test_query={"charset": "utf8mb4"},
    drop=_drop_mariadb,
)


def _admin_engine(server: Server) -> Iterator[Engine]:
    """Yield an AUTOCOMMIT admin engine, after checking the server accepts connections."""
    engine = create_engine(
        server.admin_url(),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )
    try:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as error:  # any failure to connect means "not usable"
            server.unavailable(error)
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _throwaway_database(
    server: Server,
    admin: Engine,
    *,
    setup: Sequence[str] = (),
    query: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, then drop it.

    ``setup`` statements run on the admin connection after creation, with
    ``{db}`` replaced by the quoted database name. ``query`` adds URL
    parameters on top of the server's own.
    """
    name = f"retention_test_{secrets.token_hex(6)}"
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quoted}{server.create_suffix}"))
        for statement in setup:
            conn.execute(text(statement.format(db=quoted)))
    url = server.admin_url().set(database=name)
    url = url.update_query_dict({**server.test_query, **(query or {})})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            server.drop(conn, quoted, name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests using any ``postgres_*`` / ``mariadb_*`` fixture with that backend's mark."""
    for item in items:
        fixture_names: Sequence[str] = getattr(item, "fixturenames", ())
        for backend in ("postgres", "mariadb"):
            if any(fixture.startswith(f"{backend}_") for fixture in fixture_names):
                item.add_marker(backend)


@pytest.fixture(autouse=True)
def _no_terminal_size_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text output fits $COLUMNS when it is set (cli/shared.py ``output_width``): the tests that
    check a width set it themselves. pytest-xdist's workers start with COLUMNS=80 and LINES=24
    in their environment (as a shell may export them), which folded the tables other tests read
    by column."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """AUTOCOMMIT engine on the PostgreSQL admin URL (skips/fails if unreachable)."""
    yield from _admin_engine(POSTGRES)


@pytest.fixture(scope="session")
def mariadb_admin() -> Iterator[Engine]:
    """AUTOCOMMIT engine on the MariaDB admin URL (skips/fails if unreachable)."""
    yield from _admin_engine(MARIADB)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of an (empty) SQLite file database in the test's tmp_path."""
    return f"sqlite:///{tmp_path / 'test.sqlite'}"


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """URL of a fresh PostgreSQL database, dropped after the test."""
    with _throwaway_database(POSTGRES, postgres_admin) as url:
        yield url


@pytest.fixture
def mariadb_url(mariadb_admin: Engine) -> Iterator[str]:
    """URL of a fresh MariaDB database (utf8mb4), dropped after the test."""
    with _throwaway_database(MARIADB, mariadb_admin) as url:
        yield url


@pytest.fixture
def mariadb_second_url(mariadb_admin: Engine) -> Iterator[str]:
    """URL of another fresh MariaDB database on the same server, dropped after the test."""
    with _throwaway_database(MARIADB, mariadb_admin) as url:
        yield url


@pytest.fixture
def postgres_non_utc_url(postgres_admin: Engine) -> Iterator[str]:
    """Like ``postgres_url``, but sessions default to TimeZone America/New_York."""
    setup = [f"ALTER DATABASE {{db}} SET timezone TO '{NON_UTC_POSTGRES_TIMEZONE}'"]
    with _throwaway_database(POSTGRES, postgres_admin, setup=setup) as url:
        yield url


@pytest.fixture
def mariadb_non_utc_url(mariadb_admin: Engine) -> Iterator[str]:
    """Like ``mariadb_url``, but every session runs with ``time_zone = '-05:00'``.

    Done with PyMySQL's ``init_command`` connect argument, passed as a URL
    query parameter, so it applies to every new connection.
    """
    query = {"init_command": f"SET time_zone = '{NON_UTC_MARIADB_OFFSET}'"}
    with _throwaway_database(MARIADB, mariadb_admin, query=query) as url:
        yield url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh database, once per backend: sqlite, postgres, mariadb."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def postgres_readonly_url(postgres_url: str, postgres_admin: Engine) -> Iterator[Callable[[], str]]:
    """Callable giving a URL for a read-only login role on the ``postgres_url`` database.

    The role has only CONNECT on the database (PUBLIC's default privileges on
    it are revoked), USAGE on schema public and SELECT on its tables. Call it
    after creating the tables: each call (re)grants SELECT on all current
    tables. The role is dropped at teardown.
    """
    url = make_url(postgres_url)
    role = f"retention_ro_{secrets.token_hex(6)}"
    password = secrets.token_hex(16)
    quote = postgres_admin.dialect.identifier_preparer.quote
    db, quoted_role = quote(str(url.database)), quote(role)
    owner = create_engine(url, isolation_level="AUTOCOMMIT")

    def run(engine: Engine, *statements: str) -> None:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))

    def make_readonly_url() -> str:
        run(owner, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {quoted_role}")
        return url.set(username=role, password=password).render_as_string(hide_password=False)

    run(
        owner,
        f"CREATE ROLE {quoted_role} LOGIN PASSWORD '{password}'",
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {db} TO {quoted_role}",
        f"GRANT USAGE ON SCHEMA public TO {quoted_role}",
    )
    try:
        yield make_readonly_url
    finally:
        run(
            owner,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
            f"DROP OWNED BY {quoted_role}",
        )
        owner.dispose()
        run(postgres_admin, f"DROP ROLE IF EXISTS {quoted_role}")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3 server (moto, in a thread, HTTP on 127.0.0.1) with two buckets: ``locked-anchors``
    (Object Lock enabled) and ``plain-anchors`` (without). Yields its endpoint URL; credentials
    are dummies set in the environment for the session."""
    import boto3  # type: ignore[import-untyped]
    from moto.server import ThreadedMotoServer  # type: ignore[import-untyped]

    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("AWS_ACCESS_KEY_ID", "testing")
        environment.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        environment.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            environment.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket="locked-anchors", ObjectLockEnabledForBucket=True)
            client.create_bucket(Bucket="plain-anchors")
            yield endpoint
        finally:
            server.stop()
