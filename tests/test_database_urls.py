"""A database URL no engine can be made on (a port that is not a number, or out of range; a
query parameter its driver cannot take), for a store or the state database: every command
refuses it as a config error (exit 78) at the key path of its table, saying which part is
wrong and quoting nothing of the URL (it may hold a password). They used to end in a traceback
(exit 1) from SQLAlchemy's ``int()`` of the port, or in "the database refused it" (exit 1).
A store whose URL is fine but that refuses the session is unreachable (69), not a bug (1)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, make_url, text

from retention.cli import main
from retention.errors import ExitCode
from retention.runtime.database_urls import UnusableUrl, engine_of, parsed_url
from tests.support import config_text, logs_rule

PASSWORD = "s3cret-Pw"


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:54x2/app", "its port is not a number"),
        (
            f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:99999999/app",
            "its port is not a number from 1 to 65535",
        ),
        (
            f"mysql+pymysql://app:{PASSWORD}@127.0.0.1:0/app",
            "its port is not a number from 1 to 65535",
        ),
        (f"not a url {PASSWORD}", "use sqlite:///PATH, postgresql+psycopg://..."),
    ],
)
def test_an_unusable_url_says_which_part_without_quoting_it(url: str, said: str) -> None:
    with pytest.raises(UnusableUrl) as raised:
        parsed_url(url)
    assert str(raised.value).startswith(said)
    assert PASSWORD not in str(raised.value)


def test_a_usable_url_is_parsed() -> None:
    parsed = parsed_url(f"postgresql+psycopg://app:{PASSWORD}@db.example:65535/app")
    assert (parsed.host, parsed.port, parsed.database) == ("db.example", 65535, "app")


def test_a_query_parameter_the_dialect_refuses_is_said_without_its_value() -> None:
    def refusing(_url: str, **_options: object) -> object:
        raise TypeError(f"bad value {PASSWORD!r} for read_timeout")

    with pytest.raises(UnusableUrl) as raised:
        engine_of(refusing, "mysql+pymysql://app@h/app", pool_pre_ping=True)  # type: ignore[arg-type]
    assert str(raised.value) == (
        "a parameter of its query cannot be used: bad value '…' for read_timeout"
    )


def _cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *arguments])


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:notaport/app",
            "its port is not a number",
        ),
        (
            f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:99999999/app",
            "its port is not a number from 1 to 65535",
        ),
        (
            f"mysql+pymysql://app:{PASSWORD}@127.0.0.1:3306/app?read_timeout=soon",
            "a parameter of its query cannot be used: invalid literal for int() with base 10: '…'",
        ),
        # PyMySQL reads these only as it connects: each was a traceback (AttributeError,
        # ValueError, FileNotFoundError) from every command, config validate included.
        (
            f"mysql+pymysql://app:{PASSWORD}@127.0.0.1:3306/app?charset=nosuch",
            "a parameter of its query cannot be used: '…' object has no attribute '…'",
        ),
        (
            f"mysql+pymysql://app:{PASSWORD}@127.0.0.1:3306/app?read_timeout=0",
            "a parameter of its query cannot be used: read_timeout should be > 0",
        ),
        (
            f"mysql+pymysql://app:{PASSWORD}@127.0.0.1:3306/app?ssl_ca=/nonexistent/ca.pem",
            "a parameter of its query cannot be used: [Errno 2] No such file or directory",
        ),
    ],
)
def test_a_store_url_no_engine_can_be_made_on_is_a_config_error(
    tmp_path: Path, url: str, said: str
) -> None:
    config = tmp_path / "retention.toml"
    config.write_text(config_text(url, logs_rule()))
    for command in (["config", "validate"], ["plan"], ["run", "--yes"]):
        result = _cli(config, *command)
        assert result.exit_code == ExitCode.BAD_CONFIG, (command, result.output)
        assert f"error: stores.db.url: cannot use this database URL: {said}\n" in result.stderr
        assert PASSWORD not in result.output
        assert "Traceback" not in result.output


def test_a_state_url_no_engine_can_be_made_on_is_a_config_error(
    tmp_path: Path, sqlite_url: str
) -> None:
    config = tmp_path / "retention.toml"
    state = f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:notaport/state"
    config.write_text(config_text(sqlite_url, logs_rule(), state_url=state))
    for command in (
        ["config", "validate"],
        ["plan"],
        ["run", "--yes"],
        ["status"],
        ["hold", "list"],
    ):
        result = _cli(config, *command)
        assert result.exit_code == ExitCode.BAD_CONFIG, (command, result.output)
        assert (
            "error: state: cannot use this database URL: its port is not a number\n"
            in result.stderr
        ), command
        assert PASSWORD not in result.output


def test_a_state_url_whose_driver_refuses_its_query_is_a_config_error(
    tmp_path: Path, sqlite_url: str
) -> None:
    """PyMySQL read ?charset= only as it connected: every command that opens the state
    database (status, hold list) failed with a traceback, and config validate said nothing."""
    config = tmp_path / "retention.toml"
    state = f"mysql+pymysql://app:{PASSWORD}@127.0.0.1:3306/state?charset=nosuch"
    config.write_text(config_text(sqlite_url, logs_rule(), state_url=state))
    for command in (["config", "validate"], ["plan"], ["status"], ["hold", "list"]):
        result = _cli(config, *command)
        assert result.exit_code == ExitCode.BAD_CONFIG, (command, result.output)
        assert "error: state: cannot use this database URL: a parameter of its query" in (
            result.stderr
        ), command
        assert PASSWORD not in result.output


def test_a_store_that_refuses_the_session_is_unreachable_not_a_bug(
    tmp_path: Path, postgres_url: str, postgres_admin: Engine
) -> None:
    """A role that may not connect to the database ("permission denied for database"), and a
    SQLite path the system cannot open as a file (a NUL byte): nothing can be done on either
    store, as when it cannot be reached. Each used to be reported as "the database refused
    it" with exit 1, the code of a bug."""
    role = f"retention_no_connect_{secrets.token_hex(4)}"
    database = make_url(postgres_url).database
    with postgres_admin.connect() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN"))
        connection.execute(text(f"REVOKE CONNECT ON DATABASE {database} FROM PUBLIC"))
    try:
        refused = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
        for url in (refused, "sqlite:///%00refused.sqlite"):
            config = tmp_path / "retention.toml"
            config.write_text(config_text(url, logs_rule()))
            result = _cli(config, "config", "validate")
            assert result.exit_code == ExitCode.STORE_UNAVAILABLE, (url, result.output)
            assert "error: store 'db' is unreachable: " in result.stderr
            assert "Traceback" not in result.output
    finally:
        with postgres_admin.connect() as connection:
            connection.execute(text(f"DROP ROLE {role}"))


def test_a_state_url_from_a_variable_naming_a_driver_not_shipped_is_a_config_error(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config's own check of a URL's scheme never sees one read from a variable: a plain
    ``mysql://`` there (MySQLdb, not installed) ended in a ModuleNotFoundError's traceback."""
    config = tmp_path / "retention.toml"
    text = config_text(sqlite_url, logs_rule(), state_url="sqlite:///unused.sqlite")
    text = text.replace('url = "sqlite:///unused.sqlite"', 'url_env = "RETENTION_TEST_STATE_URL"')
    assert 'url_env = "RETENTION_TEST_STATE_URL"' in text
    config.write_text(text)
    monkeypatch.setenv("RETENTION_TEST_STATE_URL", f"mysql://app:{PASSWORD}@127.0.0.1/state")
    for command in (["config", "validate"], ["plan"], ["status"]):
        result = _cli(config, *command)
        assert result.exit_code == ExitCode.BAD_CONFIG, (command, result.output)
        assert (
            "error: state: cannot use this database URL: use sqlite:///PATH, "
            "postgresql+psycopg://... or mysql+pymysql://... (the drivers retention ships with)\n"
        ) in result.stderr, command
        assert PASSWORD not in result.output


def test_a_store_url_from_a_variable_with_a_scheme_not_shipped_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheme no driver of retention reads, from url_env: refused as the same URL in the file
    is (78, docs/exit-codes.md), not reported as an unreachable store (69)."""
    config = tmp_path / "retention.toml"
    text = config_text("sqlite:///unused.sqlite", logs_rule())
    text = text.replace('url = "sqlite:///unused.sqlite"', 'url_env = "RETENTION_TEST_STORE_URL"')
    config.write_text(text)
    monkeypatch.setenv("RETENTION_TEST_STORE_URL", f"oracle://app:{PASSWORD}@db/app")
    for command in (["config", "validate"], ["plan"]):
        result = _cli(config, *command)
        assert result.exit_code == ExitCode.BAD_CONFIG, (command, result.output)
        assert (
            "error: stores.db.url: cannot use this database URL: use sqlite:///PATH, "
            "postgresql+psycopg://... or mysql+pymysql://... (the drivers retention ships with)\n"
        ) in result.stderr
        assert PASSWORD not in result.output
