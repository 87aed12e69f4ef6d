"""Log lines: JSON for services (journald priority prefix under systemd), readable on a
terminal, third-party loggers through the same renderer, context bound per job."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from retention.runtime.logging import configure_logging, get_logger


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_lines_carry_the_journald_priority_under_systemd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    stream = io.StringIO()
    configure_logging(log_format="json", stream=stream)
    logger = get_logger()
    logger.info("run.finished", deleted=3)
    logger.warning("rule.postponed")
    logger.error("rule.failed")
    logging.getLogger("apscheduler.scheduler").warning("job missed")
    prefixes = [line[:3] for line in _lines(stream)]
    assert prefixes == ["<6>", "<4>", "<3>", "<4>"]
    first = json.loads(_lines(stream)[0][3:])
    assert (first["event"], first["deleted"], first["level"]) == ("run.finished", 3, "info")
    assert json.loads(_lines(stream)[3][3:])["event"] == "job missed"


def test_plain_json_without_journald_and_context_bound_per_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    configure_logging(log_format="json", stream=stream)
    with structlog.contextvars.bound_contextvars(run_id="r1", rule="logs"):
        get_logger().info("rule.finished")
    get_logger().info("daemon.ready")
    bound, unbound = (json.loads(line) for line in _lines(stream))
    assert (bound["run_id"], bound["rule"]) == ("r1", "logs")
    assert "run_id" not in unbound


def test_console_lines_are_for_people() -> None:
    stream = io.StringIO()
    configure_logging(log_format="console", stream=stream)
    get_logger().info("daemon.ready", rules=13)
    (line,) = _lines(stream)
    assert "daemon.ready" in line
    assert "rules=13" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_library_chatter_stays_out_at_info() -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", stream=stream)
    logging.getLogger("sqlalchemy.engine").info("SELECT secret FROM t")
    assert _lines(stream) == []


# Run in a fresh interpreter: this one imported structlog already, so configure_logging
# configures it at once here.
DEFERRED = """
import logging, sys
from retention.runtime.logging import configure_logging, get_logger
configure_logging(log_format="json", stream=sys.stdout)
assert "structlog" not in sys.modules, "imported before the first log line"
logging.getLogger("apscheduler.scheduler").warning("job missed")
get_logger(run_id="r1").info("run.finished", deleted=3)
"""


def test_structlog_is_configured_on_the_first_log_line_with_the_same_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    result = subprocess.run(
        [sys.executable, "-c", DEFERRED],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    foreign, own = result.stdout.splitlines()
    assert foreign.startswith("<4>")
    assert json.loads(foreign[3:])["event"] == "job missed"
    assert own.startswith("<6>")
    line = json.loads(own[3:])
    assert (line["event"], line["run_id"], line["deleted"]) == ("run.finished", "r1", 3)
