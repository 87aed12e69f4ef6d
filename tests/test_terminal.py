"""An engineer at a terminal: counted nouns, help that tells where logs go, progress, width,
shell completion."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy import text as sql

from retention.cli import main
from retention.config import parse_config
from retention.render import render_plan, render_report
from retention.wording import counted, plural
from tests.support import config_text, create_logs, make_config, plan, plan_and_run

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_a_noun_is_plural_only_when_its_count_is_not_one() -> None:
    assert counted(1, "rule") == "1 rule"
    assert counted(0, "rule") == "0 rules"
    assert counted(1_200, "record") == "1,200 records"
    assert plural("delete marker", 1) == "delete marker"
    assert plural("delete marker", 2) == "delete markers"
    assert counted(3, "entry") == "3 entries"


def test_one_rule_and_one_record_are_singular_in_plan_and_run(sqlite_url: str) -> None:
    create_logs(sqlite_url, {1: datetime(2020, 1, 1), 2: datetime(2026, 11, 1)})
    config = make_config(sqlite_url, _logs_rule())
    plan_text = render_plan(plan(config, AS_OF), "UTC")
    assert "1 record due in 1 rule." in plan_text
    _plan, report = plan_and_run(config, AS_OF)
    report_text = render_report(report)
    assert "purged 1 record; 0 of 1 rule failed." in report_text
    for text in (plan_text, report_text):
        assert "1 rules" not in text
        assert "1 records" not in text


def test_config_validate_counts_one_rule_and_one_store(sqlite_url: str, tmp_path: Path) -> None:
    create_logs(sqlite_url, {1: datetime(2020, 1, 1)})
    path = tmp_path / "retention.toml"
    path.write_text(config_text(sqlite_url, _logs_rule()))
    result = CliRunner().invoke(main, ["--config", str(path), "config", "validate"])
    assert result.exit_code == 0, result.output
    assert "valid (1 rule, 1 store)" in result.stdout


def test_help_lists_the_log_levels_and_says_where_logs_go() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    words = " ".join(result.stdout.split())
    assert "[debug|info|warning|error|critical]" in words
    assert "They go to stderr; `daemon` writes them to stdout" in words
    daemon_help = CliRunner().invoke(main, ["daemon", "--help"])
    assert "Logs go to standard output" in " ".join(daemon_help.stdout.split())


def _logs_rule(extra: str = "") -> str:
    return f"""
[[rules]]
name = "logs"
store = "db"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
{extra}
"""


def test_object_counts_are_singular_for_one() -> None:
    from retention.render import _detail

    assert _detail("delete_markers", 1) == "1 delete marker"
    assert _detail("delete_markers", 2) == "2 delete markers"
    assert _detail("unreadable_directories", 1) == "1 unreadable directory"
    assert _detail("symlinks_skipped", 1) == "1 symlink skipped"
    assert _detail("locked", 1) == "1 locked"


def _many_logs_config(url: str, directory: Path, rows: int = 3000) -> Path:
    create_logs(url, {key: datetime(2020, 1, 1) for key in range(1, rows + 1)})
    path = directory / "retention.toml"
    path.write_text(config_text(url, _logs_rule("batch_size = 100")))
    return path


def _on_a_terminal(arguments: list[str], columns: int = 100) -> str:
    """Run `retention` with stdout and stderr on one pseudo-terminal of ``columns`` columns, as
    at a terminal; return what the terminal received, escape sequences removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    environment = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    process = subprocess.Popen(
        [sys.executable, "-m", "retention", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=environment,
    )
    os.close(slave)
    received = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed (Linux)
            break
        if not chunk:
            break
        received += chunk
    assert process.wait(timeout=60) == 0, received.decode(errors="replace")
    os.close(master)
    return ANSI.sub("", received.decode()).replace("\r\n", "\n")


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_run_on_a_terminal_shows_progress_and_keeps_logs_out_of_the_table(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = _many_logs_config(sqlite_url, tmp_path)
    screen = _on_a_terminal(["--config", str(config), "run", "--yes"])
    # The bar: done of due, a rate, time left.
    assert re.search(r"logs .* 3000/3000 [\d,]+/s \d:\d\d:\d\d", screen), screen[-2000:]
    assert re.search(r"logs .* [1-9]\d{2,3}/3000 ", screen), "no intermediate progress"
    # Every log line whole, on a line of its own (the display redraws after it).
    lines = [line.rsplit("\r", 1)[-1] for line in screen.split("\n")]
    finished = [line for line in lines if "rule.finished" in line]
    assert len(finished) == 1
    assert finished[0].startswith("20")
    assert finished[0].rstrip().endswith("status=ok")
    # The table comes after the display and the logs, all in one piece.
    start = next(index for index, line in enumerate(lines) if line.startswith("Run of plan"))
    table = lines[start : start + 7]
    assert table[2].startswith("RULE")
    assert table[4].startswith("logs  ok")
    assert table[5] == ""
    assert table[-1] == "purged 3,000 records; 0 of 1 rule failed."
    assert not any("rule.finished" in line or "/3000" in line for line in lines[start:])


def test_no_progress_when_stderr_is_not_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    config = _many_logs_config(sqlite_url, tmp_path)
    finished = subprocess.run(
        [sys.executable, "-m", "retention", "--config", str(config), "run", "--yes"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    )
    # Only log lines (JSON: stderr is not a terminal), no bar, no escape sequence.
    assert "\x1b" not in finished.stderr
    assert "/3000" not in finished.stderr
    events = [json.loads(line)["event"] for line in finished.stderr.splitlines()]
    assert events == ["rule.finished", "run.finished"]
    assert "purged 3,000 records" in finished.stdout


def _complete(words: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """What bash completion gets for the command line ``words`` (the cursor after its last
    word), through click's completion variables, as the shell would ask."""
    environment = {key: value for key, value in os.environ.items() if key != "RETENTION_CONFIG"}
    environment |= {
        "_RETENTION_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    if config is not None:
        environment["RETENTION_CONFIG"] = str(config)
    return subprocess.run(
        [str(Path(sys.executable).parent / "retention")],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(config).parent if config else None,
    )


def test_shell_completion_completes_rule_names(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "retention.toml"
    rules = _logs_rule() + _logs_rule().replace('name = "logs"', 'name = "login-audit"')
    rules += _logs_rule().replace('name = "logs"', 'name = "sessions"')
    path.write_text(config_text(sqlite_url, rules))
    for words in ("retention plan --rule lo", "retention run --dry-run --rule lo"):
        completed = _complete(words, path)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.split() == ["plain,logs", "plain,login-audit"]
    everything = _complete("retention hold add --rule ", path)
    assert everything.stdout.split() == ["plain,logs", "plain,login-audit", "plain,sessions"]
    with_option = _complete(f"retention --config {path} audit show --rule s")
    assert with_option.stdout.split() == ["plain,sessions"]


def test_shell_completion_with_a_bad_config_completes_nothing_quietly(tmp_path: Path) -> None:
    path = tmp_path / "retention.toml"
    path.write_text("[[rules]]\nname = 3\n")
    for config in (path, tmp_path / "missing.toml"):
        completed = _complete("retention plan --rule ", config)
        assert completed.returncode == 0
        assert completed.stdout.strip() == ""
        assert completed.stderr == ""


def test_a_wide_table_folds_its_wide_columns_under_each_row() -> None:
    from retention.layout import table

    headers = ["RULE", "STORE.TABLE", "DUE"]
    rows = [["logs", "app." + "x" * 60, "1,200"], ["sessions", "app.sessions", "3"]]
    wide = table(headers, rows, {2}, width=None, folded=(1,))
    assert len(wide) == 4
    assert max(len(line) for line in wide) > 40
    narrow = table(headers, rows, {2}, width=40, folded=(1,))
    assert max(len(line) for line in narrow) <= 40
    assert narrow[0].split() == ["RULE", "DUE"]
    assert narrow[2].split() == ["logs", "1,200"]
    assert narrow[3].startswith("    store.table app.xxx")
    assert "".join(line.strip() for line in narrow).count("x") == 60
    assert narrow[-1] == "    store.table app.sessions"


def test_rich_is_not_imported_at_start_up() -> None:
    """rich is for progress on a terminal only: `retention --help` must not pay for it."""
    code = (
        "import sys, retention.cli; print(sorted(m for m in sys.modules if m.startswith('rich')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_text_written_by_someone_else_cannot_drive_the_terminal(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A policy (from the trail an auditor does not trust) and a hold's condition reach the
    terminal as visible escapes, never as the escape sequences, carriage returns or bidi
    overrides they hold; newlines and French spaces stay as they are. (A config refuses such a
    policy: test_config_labels.py. The trail's is written here as an older version, or a
    forger, could have written it.)"""
    create_logs(sqlite_url, {1: datetime(2020, 1, 1), 2: datetime(2026, 11, 1)})
    with create_engine(sqlite_url).begin() as connection:
        connection.execute(sql("ALTER TABLE logs ADD COLUMN note TEXT"))
    hostile = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m\u202eP-7 « 1\u00a0an »"
    path = tmp_path / "retention.toml"
    rule = _logs_rule('policy = "P-7"')
    path.write_text(config_text(sqlite_url, rule, audit_directory=tmp_path / "audit"))
    config = parse_config(path.read_bytes())
    (logs,) = config.rules
    plan_and_run(replace(config, rules=(replace(logs, policy=hostile),)), AS_OF)

    def invoke(*arguments: str) -> str:
        # color=True: click strips some escape sequences when its output is not a terminal.
        result = CliRunner().invoke(main, ["--config", str(path), *arguments], color=True)
        assert result.exit_code == 0, result.output
        return result.stdout

    invoke("hold", "add", "--rule", "logs", "--where", "note = '\x1b[8m'", "--reason", "L-17")
    shown = invoke("audit", "show") + invoke("hold", "list")

    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", shown), repr(shown)
    escaped = "\\u001b]0;pwned\\u0007\\u001b[2J\\u000d\\u009b31m\\u202eP-7 « 1\u00a0an »"
    assert f"logs: {escaped}" in shown
    assert "note = '\\u001b[8m'" in shown
