"""Start-up of `retention run`: what a purge does not need is not imported (issue 17, the
fixed cost of a run; the times are measured by bench/sql_purge.py, not here)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.support import config_text, create_logs, logs_rule

# Modules a run without --plan-file and without check-ins has no use for.
NOT_NEEDED = ("retention.app.saved_plans", "retention.audit.prove", "urllib.request")

# Runs `retention ARGS...` in this process, then prints which of NOT_NEEDED it imported.
WRAPPER = """
import atexit, sys
def loaded():
    names = sorted(set(sys.modules) & set({modules!r}))
    sys.__stderr__.write("imported: " + ",".join(names) + "\\n")
atexit.register(loaded)
sys.argv = ["retention", *{arguments!r}]
from retention.cli import main
main()
"""


def test_a_run_imports_neither_saved_plans_nor_the_http_client(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    create_logs(url, {1: datetime(2020, 1, 1, tzinfo=UTC), 2: datetime(2026, 1, 1, tzinfo=UTC)})
    config = tmp_path / "retention.toml"
    audit = tmp_path / "audit"
    config.write_text(config_text(url, logs_rule(), audit_directory=audit), encoding="utf-8")
    arguments = ["--config", str(config), "run", "--yes", "--as-of", "2026-06-01T00:00:00+00:00"]
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER.format(modules=NOT_NEEDED, arguments=arguments)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "purged 1 record" in result.stdout, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("imported: ")]
    assert lines == ["imported: "], result.stderr


def test_a_run_starts_up_without_the_collector_and_purges_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    import retention.app
    from retention.cli import main

    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    create_logs(url, {1: datetime(2020, 1, 1, tzinfo=UTC), 2: datetime(2026, 1, 1, tzinfo=UTC)})
    config = tmp_path / "retention.toml"
    config.write_text(
        config_text(url, logs_rule(), audit_directory=tmp_path / "audit"), encoding="utf-8"
    )
    collecting: dict[str, bool] = {}
    make_plan, run_plan = retention.app.make_plan, retention.app.run_plan

    def planning(*arguments: Any, **options: Any) -> Any:
        collecting["plan"] = gc.isenabled()
        return make_plan(*arguments, **options)

    def purging(*arguments: Any, **options: Any) -> Any:
        collecting["purge"] = gc.isenabled()
        return run_plan(*arguments, **options)

    monkeypatch.setattr(retention.app, "make_plan", planning)
    monkeypatch.setattr(retention.app, "run_plan", purging)
    arguments = ["--config", str(config), "run", "--yes", "--as-of", "2026-06-01T00:00:00+00:00"]
    assert gc.isenabled()

    result = CliRunner().invoke(main, ["--log-format", "json", *arguments])

    assert result.exit_code == 0, result.output
    # Start-up's imports and opened stores set off collections that free next to nothing; the
    # batches run with it (flat RSS), and the process goes on with it after.
    assert collecting == {"plan": False, "purge": True}
    assert gc.isenabled()


def test_a_run_that_fails_before_its_batches_turns_the_collector_back_on(
    tmp_path: Path,
) -> None:
    import gc

    from retention.cli import main

    config = tmp_path / "retention.toml"
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    create_logs(url, {1: datetime(2020, 1, 1, tzinfo=UTC)})
    config.write_text(
        config_text(
            url, logs_rule().replace('"logged_at"', '"loged_at"'), audit_directory=tmp_path / "a"
        ),
        encoding="utf-8",
    )

    result = CliRunner().invoke(main, ["--config", str(config), "run", "--yes"])

    assert result.exit_code == 78, result.output
    assert "loged_at" in result.output  # the live schema check, in start-up
    assert gc.isenabled()
