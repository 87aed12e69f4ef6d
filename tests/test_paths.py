"""One config, one set of files, whatever the working directory: every relative path in the
config (key files, the audit directory, SQLite files, credentials files, backup folders, the
default state database) is relative to the config file's folder. A hold placed from one
directory protects its row in a run started from another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine

from retention.audit.keys import add_public_key, generate_hmac_key, generate_signer
from retention.cli import main
from retention.config import (
    FilesStoreConfig,
    S3StoreConfig,
    SqlStoreConfig,
    load_config,
    parse_config,
    resolve_path,
    resolve_sqlite_url,
)
from retention.errors import ConfigError, ExitCode
from retention.runtime.secrets import read_hash_key, state_url, store_url
from tests.support import (
    config_text,
    copy_shipped_config,
    create_logs,
    logs_rule,
    remaining_ids,
)

SCRUBBED = ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "RETENTION_CONFIG", "NOTIFY_SOCKET")

EVERY_PATH = """
[settings]
timezone = "UTC"
hash_key_file = "secrets/hash.key"

[audit]
directory = "audit"
hmac_key_file = "secrets/hmac.key"
signing_key_file = "../shared/signing.pem"
public_keys_file = "./public-keys.json"

[stores.db]
kind = "sql"
url = "sqlite:///data/app.sqlite"

[stores.bucket]
kind = "s3"
bucket = "some-bucket"
credentials_file = "secrets/s3-credentials"

[stores.folder]
kind = "files"
root = "backups"

[state]
url = "sqlite:///var/state.sqlite?timeout=5"
"""


@pytest.fixture(autouse=True)
def _no_service_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)


def _write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "retention.toml"
    path.write_text(text)
    return path


def test_every_relative_path_is_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    config_path = _write(site, EVERY_PATH)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path(os.path.relpath(config_path)))
    assert config.settings.hash_key_file == site / "secrets" / "hash.key"
    assert config.audit is not None
    assert config.audit.directory == site / "audit"
    assert config.audit.hmac_key_file == site / "secrets" / "hmac.key"
    assert config.audit.signing_key_file == tmp_path / "shared" / "signing.pem"
    assert config.audit.public_keys_file == site / "public-keys.json"
    database = config.stores["db"]
    assert isinstance(database, SqlStoreConfig)
    assert store_url(database) == f"sqlite:///{site}/data/app.sqlite"
    bucket = config.stores["bucket"]
    assert isinstance(bucket, S3StoreConfig)
    assert bucket.credentials_file == site / "secrets" / "s3-credentials"
    folder = config.stores["folder"]
    assert isinstance(folder, FilesStoreConfig)
    assert folder.root == site / "backups"
    assert state_url(config.state) == f"sqlite:///{site}/var/state.sqlite?timeout=5"


def test_the_public_keys_file_defaults_to_the_resolved_audit_directory(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            '[settings]\ntimezone = "UTC"\n[audit]\ndirectory = "trail"\n'
            'hmac_key_file = "k"\nsigning_key_file = "s"\n',
        )
    )
    assert config.audit is not None
    assert config.audit.public_keys_file == tmp_path / "trail" / "public-keys.json"


def test_absolute_paths_and_other_urls_stay_as_written() -> None:
    base = Path("/etc/retention")
    assert resolve_path("/srv/keys/hmac.key", base) == Path("/srv/keys/hmac.key")
    assert resolve_path("keys/../hmac.key", base) == Path("/etc/retention/hmac.key")
    for url in (
        "sqlite:////var/lib/retention/state.sqlite",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:app?mode=ro&uri=true",
        "postgresql+psycopg://retention@db.example/state",
        "mysql+pymysql://root@127.0.0.1:3306/app",
    ):
        assert resolve_sqlite_url(url, base) == url
    assert resolve_sqlite_url("sqlite:///app.db", base) == "sqlite:////etc/retention/app.db"
    assert (
        resolve_sqlite_url("sqlite+pysqlite:///../app.db?timeout=2", base)
        == "sqlite+pysqlite:////etc/app.db?timeout=2"
    )
    # Without a config file (a config parsed from bytes), relative paths stay as written.
    assert resolve_sqlite_url("sqlite:///app.db", None) == "sqlite:///app.db"
    config = parse_config(EVERY_PATH.replace('root = "backups"', 'root = "/srv/backups"').encode())
    assert config.settings.hash_key_file == Path("secrets/hash.key")
    assert config.state.url == "sqlite:///var/state.sqlite?timeout=5"


def test_urls_from_the_environment_or_a_credential_are_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    config_path = _write(
        site,
        '[settings]\ntimezone = "UTC"\n'
        '[stores.db]\nkind = "sql"\nurl_env = "APP_DB_URL"\n'
        '[state]\nurl_credential = "state-db-url"\n',
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "state-db-url").write_text("sqlite:///var/state.sqlite\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("APP_DB_URL", "sqlite:///data/app.sqlite")
    monkeypatch.chdir(tmp_path)
    config = load_config(config_path)
    database = config.stores["db"]
    assert isinstance(database, SqlStoreConfig)
    assert store_url(database) == f"sqlite:///{site}/data/app.sqlite"
    assert state_url(config.state) == f"sqlite:///{site}/var/state.sqlite"
    monkeypatch.setenv("APP_DB_URL", "postgresql+psycopg://postgres@127.0.0.1/app")
    assert store_url(database) == "postgresql+psycopg://postgres@127.0.0.1/app"


def test_the_default_state_database_is_beside_the_config_whatever_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    config_path = _write(site, '[settings]\ntimezone = "UTC"\n')
    urls = set()
    for directory in (tmp_path, site, tmp_path / "a"):
        directory.mkdir(exist_ok=True)
        monkeypatch.chdir(directory)
        urls.add(state_url(load_config(config_path).state))
    assert urls == {f"sqlite:///{site}/var/state.sqlite"}


def test_no_state_table_under_a_systemd_state_directory_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default used to be $STATE_DIRECTORY/state.sqlite: switching a service to another,
    # empty database would drop its holds, so it must name its database.
    config = load_config(_write(tmp_path, '[settings]\ntimezone = "UTC"\n'))
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/retention")
    with pytest.raises(ConfigError) as caught:
        state_url(config.state)
    (issue,) = caught.value.issues
    assert issue.path == "state"
    assert 'url = "sqlite:////var/lib/retention/state.sqlite"' in issue.message
    named = load_config(_write(tmp_path, EVERY_PATH))
    assert state_url(named.state) == f"sqlite:///{tmp_path}/var/state.sqlite?timeout=5"


def test_a_key_file_is_read_from_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    config_path = _write(site, '[settings]\ntimezone = "UTC"\nhash_key_file = "hash.key"\n')
    (site / "hash.key").write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.chdir(tmp_path)
    assert read_hash_key(load_config(config_path).settings) == b"0123456789abcdef" * 2


# --- a hold placed from one directory, a run from another ---------------------------------------


def _retention(config: Path, cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    return subprocess.run(
        [sys.executable, "-m", "retention", "--config", str(config), *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


AUDITED = """
[audit]
directory = "var/audit"
hmac_key_file = "var/../secrets/audit-hmac.key"
signing_key_file = "secrets/audit-signing.pem"
public_keys_file = "audit-public-keys.json"
"""


@pytest.mark.parametrize(
    ("audit", "store_url_of", "state"),
    [
        # Everything relative, the state database the default one.
        (AUDITED, "sqlite:///data/app.sqlite", ""),
        # Only the state database relative: on the old code, the hold went to another one and
        # the run deleted the held row.
        ("[audit]\nenabled = false\n", "sqlite:///{site}/data/app.sqlite", "var/state.sqlite"),
    ],
    ids=["relative-keys-store-default-state", "relative-state"],
)
def test_a_hold_placed_from_another_directory_protects_its_row_in_a_run_from_a_third(
    tmp_path: Path, audit: str, store_url_of: str, state: str
) -> None:
    site = tmp_path / "etc" / "retention"
    (site / "data").mkdir(parents=True)
    generate_hmac_key(site / "secrets" / "audit-hmac.key")
    signer = generate_signer(site / "secrets" / "audit-signing.pem")
    add_public_key(site / "audit-public-keys.json", signer, datetime(2000, 1, 1, tzinfo=UTC))
    create_logs(
        f"sqlite:///{site}/data/app.sqlite",
        {key: datetime(2020, 1, key, tzinfo=UTC) for key in (1, 2, 3)},
    )
    state_table = f'[state]\nurl = "sqlite:///{state}"\n' if state else ""
    config = _write(
        site,
        f"""
[settings]
timezone = "UTC"
max_fraction = 1.0
{audit}
[stores.db]
kind = "sql"
url = "{store_url_of.format(site=site)}"
timezone = "UTC"
{state_table}
{logs_rule()}
""",
    )
    admin, service = tmp_path / "home" / "admin", tmp_path / "srv"
    admin.mkdir(parents=True)
    service.mkdir()

    held = _retention(
        config, admin, "hold", "add", "--rule", "logs", "--key", "2", "--reason", "T-1"
    )
    assert held.returncode == 0, held.stderr
    assert "hold 1 on rule logs" in held.stdout
    ran = _retention(config, service, "run", "--yes")
    assert ran.returncode == int(ExitCode.OK), ran.stderr

    engine = create_engine(f"sqlite:///{site}/data/app.sqlite")
    assert remaining_ids(engine, "logs") == {2}
    engine.dispose()
    # One state database, one trail, beside the config; nothing written where they started.
    assert (site / "var" / "state.sqlite").exists()
    if audit == AUDITED:
        assert sorted(path.name for path in (site / "var" / "audit" / "trail").iterdir())
    assert not any(admin.iterdir())
    assert not any(service.iterdir())
    listed = _retention(config, service, "hold", "list")
    assert listed.returncode == 0, listed.stderr
    assert "T-1" in listed.stdout


def test_config_validate_under_systemd_names_a_missing_state_table(tmp_path: Path) -> None:
    config = _write(tmp_path, '[settings]\ntimezone = "UTC"\n')
    checked = _retention(config, tmp_path, "config", "validate")
    assert checked.returncode == 0, checked.stderr
    environment = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    under_systemd = subprocess.run(
        [sys.executable, "-m", "retention", "--config", str(config), "config", "validate"],
        cwd=tmp_path,
        env={**environment, "STATE_DIRECTORY": "/var/lib/retention"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert under_systemd.returncode == int(ExitCode.BAD_CONFIG)
    assert "state: missing, and $STATE_DIRECTORY is set" in under_systemd.stderr


def test_a_plain_demo_from_another_directory_fills_the_database_the_config_names(
    tmp_path: Path,
) -> None:
    checkout, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Nothing listens on port 9: the demo skips the buckets and says so.
    config = copy_shipped_config(checkout, "http://127.0.0.1:9")

    created = _retention(config, elsewhere, "demo", "--as-of", "2026-04-02T12:00:00+00:00")
    assert created.returncode == 0, created.stderr
    assert f"demo database {checkout / 'var' / 'demo.sqlite'}:" in created.stdout
    assert not any(elsewhere.iterdir())

    planned = _retention(
        config,
        elsewhere,
        "plan",
        "--rule",
        "connection-logs",
        "--as-of",
        "2026-04-02T12:00:00+00:00",
        "--output",
        "json",
    )
    assert planned.returncode == 0, planned.stderr
    (rule,) = json.loads(planned.stdout)["rules"]
    assert rule["error"] is None
    assert rule["due"] > 0


def test_a_plain_demo_without_a_sqlite_store_asks_for_a_database(tmp_path: Path) -> None:
    config = _write(tmp_path, '[settings]\ntimezone = "UTC"\n')
    refused = _retention(config, tmp_path, "demo")
    assert refused.returncode == int(ExitCode.USAGE), refused.stderr
    assert refused.stderr.startswith("error: "), refused.stderr
    assert "give --database FILE" in refused.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="an admin's command run as root")
def test_what_root_makes_in_the_service_s_folder_goes_to_the_service_s_user(
    sqlite_url: str, tmp_path: Path
) -> None:
    """An admin runs `hold add` and `run` as root on the service's host: the state database,
    the audit folders, its lock, segment, leaves and tail state they make in the folder the
    service's user owns go to that user (root-owned, they stopped the next run: exit 70)."""
    service = tmp_path / "service"
    service.mkdir()
    create_logs(sqlite_url, {1: datetime(2020, 1, 1), 2: datetime(2020, 1, 2)})
    text = config_text(
        sqlite_url,
        logs_rule(),
        audit_directory=service / "audit",
        state_url=f"sqlite:///{service / 'state.sqlite'}",
    )
    path = tmp_path / "retention.toml"
    path.write_text(text)
    nobody = 65534
    for made in (service, *service.rglob("*")):
        os.chown(made, nobody, nobody)

    for arguments in (
        ["hold", "add", "--rule", "logs", "--key", "2", "--reason", "L-17"],
        ["run", "--yes", "--as-of", "2026-01-01T00:00:00Z"],
    ):
        result = CliRunner().invoke(main, ["--config", str(path), *arguments])
        assert result.exit_code == 0, result.output

    made = {str(found.relative_to(service)) for found in service.rglob("*")}
    assert {"state.sqlite", "audit/lock", "audit/trail/00000001.jsonl"} <= made
    assert any(name.startswith("audit/leaves/") for name in made), made
    owners = {str(found.relative_to(service)): found.lstat().st_uid for found in service.rglob("*")}
    assert {name for name, owner in owners.items() if owner != nobody} == set()


@pytest.mark.skipif(os.geteuid() != 0, reason="an admin's command run as root")
def test_root_hands_over_no_file_that_a_link_in_the_service_s_folder_points_at(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The service's user (compromised) puts links where root creates files in its folder:
    root's open followed them (writing through them), and handing what it opened over gave
    that user a file of root's (here standing in for /etc/shadow). The trail's files are now
    opened without following a link, and only the file of that very name, with no other link,
    is handed over."""
    service = tmp_path / "service"
    (service / "audit").mkdir(parents=True)
    create_logs(sqlite_url, {1: datetime(2020, 1, 1)})
    text = config_text(
        sqlite_url,
        logs_rule(),
        audit_directory=service / "audit",
        state_url=f"sqlite:///{service / 'state.sqlite'}",
    )
    path = tmp_path / "retention.toml"
    path.write_text(text)
    shadow, tail_shadow = tmp_path / "shadow", tmp_path / "tail-shadow"
    shadow.write_text("root's\n")
    tail_shadow.write_text("root's\n")
    (service / "audit" / "tail.json.tmp").symlink_to(tail_shadow)
    nobody = 65534
    for made in (service, *service.rglob("*")):
        os.chown(made, nobody, nobody, follow_symlinks=False)
    hold = ["hold", "add", "--rule", "logs", "--key", "1", "--reason", "L"]

    placed = CliRunner().invoke(main, ["--config", str(path), *hold])
    (service / "audit" / "lock").unlink()
    (service / "audit" / "lock").symlink_to(shadow)
    refused = CliRunner().invoke(main, ["--config", str(path), *hold])

    # The tail state is a cache: not written through the link, the hold still goes in.
    assert placed.exit_code == 0, placed.output
    # A lock that is a link is no lock: the trail is not opened, nothing changes.
    assert refused.exit_code == ExitCode.AUDIT_FAILURE, refused.output
    assert (shadow.stat().st_uid, tail_shadow.stat().st_uid) == (0, 0)
    assert shadow.read_text() == tail_shadow.read_text() == "root's\n"
    assert (service / "state.sqlite").stat().st_uid == nobody
