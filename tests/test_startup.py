"""Start-up: commands import a store's library (SQLAlchemy, boto3) only where a store of that
kind is used, so that `retention --help` and `config validate` start fast (docs/performance.md;
the times themselves are measured by bench/startup.py, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STORE_LIBRARIES = ("sqlalchemy", "boto3", "botocore")

# Runs `retention ARGS...` in this process, then prints which store libraries it imported.
WRAPPER = """
import atexit, sys
def loaded():
    names = {{name.split(".")[0] for name in sys.modules}} & set({libraries!r})
    sys.__stderr__.write("imported: " + ",".join(sorted(names)) + "\\n")
atexit.register(loaded)
sys.argv = ["retention", *{arguments!r}]
from retention.cli import main
main()
"""


def run_retention(arguments: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    code = WRAPPER.format(libraries=STORE_LIBRARIES, arguments=arguments)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=directory,
        check=False,
        timeout=120,
    )


def imported(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("imported: ")]
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("imported: ")


def _unaudited_config(folder: Path, stores_and_rules: str) -> Path:
    """A config in ``folder`` of these stores and rules, in UTC, without a trail, its state
    database in ``folder``."""
    config = folder / "retention.toml"
    config.write_text(
        f'[settings]\ntimezone = "UTC"\n\n[audit]\nenabled = false\n\n'
        f'[state]\nurl = "sqlite:///{folder}/state.sqlite"\n{stores_and_rules}'
    )
    return config


def test_help_imports_no_store_library(tmp_path: Path) -> None:
    result = run_retention(["--help"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Enforce data-retention periods" in result.stdout
    assert imported(result) == ""


def test_validating_a_config_without_sql_or_s3_stores_imports_neither_library(
    tmp_path: Path,
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    config = _unaudited_config(
        tmp_path,
        f"""
[stores.backups]
kind = "files"
root = "{backups}"

[[rules]]
name = "old-dumps"
store = "backups"
period = "30d"
""",
    )

    result = run_retention(["--config", str(config), "config", "validate"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "valid (1 rule, 1 store)" in result.stdout
    assert imported(result) == ""


def test_offline_validation_of_the_shipped_config_opens_no_store_and_imports_no_library(
    tmp_path: Path,
) -> None:
    from tests.support import copy_shipped_config

    # Nothing listens on port 9, and no SQLite file or key exists: only --offline can pass.
    config = copy_shipped_config(tmp_path, "http://127.0.0.1:9")

    offline = run_retention(["--config", str(config), "config", "validate", "--offline"], tmp_path)
    assert offline.returncode == 0, offline.stderr
    assert "valid as a file (17 rules, 4 stores; stores and secrets not checked)" in offline.stdout
    assert imported(offline) == ""
    assert not (tmp_path / "var").exists(), "nothing is created"

    live = run_retention(["--config", str(config), "config", "validate"], tmp_path)
    assert live.returncode != 0, live.stdout


def test_offline_validation_still_reports_every_static_error_with_its_path(
    tmp_path: Path,
) -> None:
    config = tmp_path / "retention.toml"
    config.write_text(
        '[settings]\ntimezone = "Mars/Olympus"\nbatch_size = 0\n'
        '[stores.db]\nkind = "sql"\nurl = "sqlite:///app.sqlite"\n'
    )

    result = run_retention(["--config", str(config), "config", "validate", "--offline"], tmp_path)

    assert result.returncode == 78, result.stderr
    assert "settings.timezone" in result.stderr
    assert "settings.batch_size" in result.stderr


# Modules `config validate` must not import for a config whose only store is SQLite: the use
# cases (app, executor, the trail's recorder and writer), the SQL store's survey, batches and
# partitions (with the planner they bring), SQLAlchemy's MySQL dialect, and structlog (no log
# line is written: it is configured on first use). Nor must it read the package's version
# (importlib.metadata looks through every installed distribution).
UNNEEDED_FOR_VALIDATE = (
    "retention.app",
    "retention.executor",
    "retention.audit.recorder",
    "retention.audit.trail",
    "retention.planner",
    "retention.stores.sql_survey",
    "retention.stores.sql_purge",
    "retention.stores.partitions",
    "retention.stores.partition_catalog",
    "sqlalchemy.dialects.mysql",
    "structlog",
)

MODULES_WRAPPER = """
import atexit, sys
def loaded():
    names = [name for name in {modules!r} if name in sys.modules]
    if sys.modules["retention"]._version.cache_info().currsize:
        names.append("retention.__version__")
    sys.__stderr__.write("modules: " + ",".join(names) + "\\n")
atexit.register(loaded)
sys.argv = ["retention", *{arguments!r}]
from retention.cli import main
main()
"""


def modules_loaded(
    modules: tuple[str, ...], arguments: list[str], directory: Path
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `retention ARGS...` in a fresh interpreter in ``directory``; check it exits 0;
    return its result and its ``modules: `` lines (which of ``modules`` it loaded)."""
    code = MODULES_WRAPPER.format(modules=modules, arguments=arguments)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=directory,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("modules: ")]
    return result, lines


def test_validating_a_sqlite_store_imports_only_what_the_check_needs(tmp_path: Path) -> None:
    import sqlite3

    database = tmp_path / "app.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TIMESTAMP)")
    connection.close()
    config = _unaudited_config(
        tmp_path,
        f"""
[stores.app]
kind = "sql"
url = "sqlite:///{database}"

[[rules]]
name = "old-logs"
store = "app"
table = "logs"
key = "id"
clock = "created_at"
period = "30d"
action = "delete"
""",
    )
    arguments = ["--config", str(config), "config", "validate"]
    result, lines = modules_loaded(UNNEEDED_FOR_VALIDATE, arguments, tmp_path)

    assert "valid (1 rule, 1 store)" in result.stdout
    assert lines == ["modules: "], result.stderr


def test_what_a_paused_command_leaves_alive_is_kept_from_the_collector() -> None:
    import gc

    from retention.cli.shared import collector_paused

    was_enabled = gc.isenabled()
    before = gc.get_freeze_count()
    with collector_paused():
        assert not gc.isenabled()
        kept = [[index] for index in range(1000)]  # containers: the collector tracks them

    # Neither the next collection nor the interpreter's exit walks them (docs/performance.md).
    assert gc.get_freeze_count() >= before + len(kept)
    assert gc.isenabled() == was_enabled


def test_planning_a_postgresql_partitioned_table_does_not_load_the_mysql_dialect(
    postgres_url: str, tmp_path: Path
) -> None:
    """SQLAlchemy's MySQL dialect (about 50 ms of CPU to import) is loaded only where a MySQL
    store is open: the partitions' survey of a PostgreSQL table does not import it (it did
    for the type of MariaDB's key hash, read at import time)."""
    from tests.support import config_text
    from tests.test_partitions import RULE, create_events

    create_events(postgres_url)
    config = tmp_path / "retention.toml"
    config.write_text(config_text(postgres_url, RULE))
    dialects = ("sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql")
    arguments = ["--config", str(config), "plan", "--as-of", "2025-04-15T00:00:00Z"]
    result, lines = modules_loaded(dialects, arguments, tmp_path)

    assert "events_2024_01" in result.stdout, "the plan shows the partitions due whole"
    assert lines == ["modules: sqlalchemy.dialects.postgresql"], result.stderr
