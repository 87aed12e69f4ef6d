"""A batch's write waits at most ROW_LOCK_TIMEOUT_SECONDS for a row another session holds
locked (an application's open transaction), on PostgreSQL (lock_timeout) and MariaDB
(innodb_lock_wait_timeout): then the batch is rolled back, the rule fails with a message that
says so (exit 3), the trail says nothing went, and the next run, the lock gone, purges it all.
Before, the run waited as long as the other session held the row, deaf to SIGTERM."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

import retention.stores.sql_dialect as sql_dialect
from retention.cli import main
from retention.errors import ExitCode
from tests.support import config_text, create_logs, logs_rule, remaining_ids


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_a_batch_gives_up_on_a_row_locked_by_another_session(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url: str = request.getfixturevalue(f"{backend}_url")
    monkeypatch.setattr(sql_dialect, "ROW_LOCK_TIMEOUT_SECONDS", 1)
    create_logs(url, {key: datetime(2020, 1, 1) for key in range(1, 11)})
    audit = tmp_path / "audit"
    config = tmp_path / "retention.toml"
    config.write_text(config_text(url, logs_rule(), audit_directory=audit))
    application = create_engine(url)
    try:
        with application.connect() as holding:
            holding.begin()
            holding.execute(text("SELECT id FROM logs WHERE id = 5 FOR UPDATE")).all()
            # The application's transaction ends after 15 s at the latest: a run that waits for
            # it (the code before) then purges everything, and the test fails, not hangs.
            ends = threading.Timer(15, holding.rollback)
            ends.start()
            started = time.monotonic()
            ran = CliRunner().invoke(
                main, ["--config", str(config), "run", "--yes", "--output", "json"]
            )
            waited = time.monotonic() - started
            ends.cancel()
            ends.join()
            if waited < 15:
                holding.rollback()
        assert ran.exit_code == ExitCode.PARTIAL_FAILURE, ran.output
        assert waited < 10, waited
        (outcome,) = json.loads(ran.stdout)["rules"]
        assert (outcome["status"], outcome["deleted"]) == ("failed", 0)
        assert outcome["error"].endswith(
            ": a row of the batch stayed locked by another session for 1 s; the batch was "
            "rolled back, and the next run tries it again"
        )
        assert remaining_ids(application, "logs") == set(range(1, 11))
        assert CliRunner().invoke(main, ["--config", str(config), "audit", "verify"]).exit_code == 0

        again = CliRunner().invoke(main, ["--config", str(config), "run", "--yes"])
        assert again.exit_code == 0, again.output
        assert remaining_ids(application, "logs") == set()
    finally:
        application.dispose()
