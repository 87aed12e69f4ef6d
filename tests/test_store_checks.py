"""`config validate` checks its S3 stores in a child process while it checks the other stores
and the secrets (retention/store_checks.py): the same findings, in the same order, with the
same exit code as one process checking them all, and the parent never imports botocore. The
command runs as a program: a process with other threads (this one, once the test S3 server
runs) checks in one process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_s3_store import new_bucket

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or len(os.sched_getaffinity(0)) < 2,
    reason="the S3 stores are checked in a child process only where it may use a second CPU",
)

# Runs `retention ARGS...`; at exit, says whether this process imported botocore (a child's exit
# runs no exit handler). With ONE_PROCESS, a sleeping thread keeps the check in one process.
WRAPPER = """
import atexit, sys, threading, time
atexit.register(
    lambda: sys.__stderr__.write(f"botocore here: {{'botocore' in sys.modules}}\\n")
)
if {one_process!r}:
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
sys.argv = ["retention", *{arguments!r}]
from retention.cli import main
main()
"""


def validate(config: Path, *, one_process: bool) -> tuple[int, str, str, bool]:
    """Run `config validate` of ``config``; return its exit code, stdout, stderr (without the
    wrapper's line) and whether the first process imported botocore."""
    code = WRAPPER.format(
        one_process=one_process, arguments=["--config", str(config), "config", "validate"]
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=config.parent,
        check=False,
        timeout=120,
    )
    lines = result.stderr.splitlines()
    said = [line for line in lines if line.startswith("botocore here: ")]
    assert len(said) == 1, result.stderr
    stderr = "\n".join(line for line in lines if not line.startswith("botocore here: "))
    return result.returncode, result.stdout, stderr, said[0] == "botocore here: True"


def write_config(
    directory: Path,
    s3_server: str,
    rules: str,
    buckets: dict[str, str],
    *,
    credentials_files: dict[str, Path] | None = None,
    app_url: str | None = None,
    settings: str = "",
) -> Path:
    """A config of a SQLite store ``app`` (a table ``logs``; ``app_url``: its url line instead)
    and S3 stores (name -> bucket) on ``s3_server``, with ``rules``."""
    database = directory / "app.sqlite"
    if not database.exists():
        with sqlite3.connect(database) as connection:
            connection.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, created_at TIMESTAMP)")
        connection.close()
    credentials = directory / "s3-credentials"
    credentials.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = t\n")
    s3 = "".join(
        f"""
[stores.{name}]
kind = "s3"
bucket = "{bucket}"
endpoint_url = "{s3_server}"
addressing_style = "path"
region = "us-east-1"
credentials_file = "{(credentials_files or {}).get(name, credentials)}"
"""
        for name, bucket in buckets.items()
    )
    config = directory / "retention.toml"
    config.write_text(
        f"""
[settings]
timezone = "UTC"
{settings}

[audit]
enabled = false

[state]
url = "sqlite:///{directory}/state.sqlite"

[stores.app]
kind = "sql"
{app_url or f'url = "sqlite:///{database}"'}
{s3}
{rules}
"""
    )
    return config


def sql_rule(name: str, clock: str) -> str:
    return f"""
[[rules]]
name = "{name}"
store = "app"
table = "logs"
key = "id"
clock = "{clock}"
period = "30d"
action = "delete"
"""


def s3_rule(name: str, store: str) -> str:
    return f"""
[[rules]]
name = "{name}"
store = "{store}"
prefix = "exports/"
clock = "last_modified"
period = "30d"
"""


def test_a_valid_config_is_checked_with_its_s3_stores_in_a_child(
    tmp_path: Path, s3_server: str
) -> None:
    config = write_config(
        tmp_path,
        s3_server,
        s3_rule("exports", "content") + sql_rule("logs", "created_at"),
        {"content": new_bucket(s3_server).name},
    )

    code, stdout, stderr, botocore_here = validate(config, one_process=False)

    assert (code, stderr) == (0, ""), stderr
    assert "valid (2 rules, 2 stores)" in stdout
    assert not botocore_here, "the S3 store was checked in this process"
    assert validate(config, one_process=True) == (code, stdout, stderr, True)


def test_problems_on_both_sides_come_in_the_rules_order_with_the_same_exit_code(
    tmp_path: Path, s3_server: str
) -> None:
    config = write_config(
        tmp_path,
        s3_server,
        s3_rule("gone", "missing")
        + sql_rule("logs", "loged_at")
        + s3_rule("exports", "content")
        + sql_rule("more-logs", "created_at"),
        {"missing": "no-such-bucket-anywhere", "content": new_bucket(s3_server).name},
        settings=f'hash_key_file = "{tmp_path / "no-such.key"}"',
    )

    in_two = validate(config, one_process=False)
    in_one = validate(config, one_process=True)

    code, _stdout, stderr, botocore_here = in_two
    assert code == 78, stderr
    assert "no such bucket" in stderr
    assert "rules[1].clock" in stderr
    assert "loged_at" in stderr
    # The secrets (checked in the parent) come after every rule's problems, as before.
    assert stderr.index("settings.hash_key_file") > stderr.index("rules[1].clock")
    assert not botocore_here
    assert in_two[:3] == in_one[:3]


def test_an_s3_store_that_cannot_be_opened_fails_as_it_would_in_one_process(
    tmp_path: Path, s3_server: str
) -> None:
    config = write_config(
        tmp_path,
        s3_server,
        sql_rule("logs", "created_at") + s3_rule("exports", "content"),
        {"content": new_bucket(s3_server).name},
        credentials_files={"content": tmp_path / "no-such-file"},
    )

    in_two = validate(config, one_process=False)

    code, _stdout, stderr, _botocore_here = in_two
    assert code == 78, stderr
    assert "stores.content.credentials_file: cannot read" in stderr
    assert in_two[:3] == validate(config, one_process=True)[:3]


def test_an_earlier_rules_error_here_wins_over_a_later_one_in_the_child(
    tmp_path: Path, s3_server: str
) -> None:
    config = write_config(
        tmp_path,
        s3_server,
        sql_rule("logs", "created_at") + s3_rule("exports", "content"),
        {"content": new_bucket(s3_server).name},
        credentials_files={"content": tmp_path / "no-such-file"},
        app_url='url_env = "RETENTION_TEST_NEVER_SET_URL"',
    )

    in_two = validate(config, one_process=False)

    code, _stdout, stderr, _botocore_here = in_two
    assert code == 78, stderr
    assert "stores.app.url_env: environment variable" in stderr
    assert "credentials_file" not in stderr
    assert in_two[:3] == validate(config, one_process=True)[:3]


# Runs `retention ARGS...`; at its first fork, says whether the config's modules were imported.
FORK_WRAPPER = """
import os, sys
fork = os.fork
def noted_fork():
    sys.__stderr__.write(f"config read at the fork: {{'retention.config' in sys.modules}}\\n")
    return fork()
os.fork = noted_fork
sys.argv = ["retention", *{arguments!r}]
from retention.cli import main
main()
"""


def test_the_s3_child_starts_before_the_config_is_read(tmp_path: Path, s3_server: str) -> None:
    config = write_config(
        tmp_path,
        s3_server,
        s3_rule("exports", "content") + sql_rule("logs", "created_at"),
        {"content": new_bucket(s3_server).name},
    )
    code = FORK_WRAPPER.format(arguments=["--config", str(config), "config", "validate"])

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert "valid (2 rules, 2 stores)" in result.stdout
    assert result.stderr.splitlines() == ["config read at the fork: False"]


def test_a_config_that_fails_to_load_fails_as_it_would_in_one_process(
    tmp_path: Path, s3_server: str
) -> None:
    config = write_config(
        tmp_path,
        s3_server,
        s3_rule("exports", "content") + sql_rule("logs", "created_at") + "colour = 'blue'\n",
        {"content": new_bucket(s3_server).name},
    )

    in_two = validate(config, one_process=False)

    code, _stdout, stderr, botocore_here = in_two
    assert code == 78, stderr
    assert "colour" in stderr
    assert not botocore_here
    assert in_two[:3] == validate(config, one_process=True)[:3]


def test_a_config_read_from_a_pipe_is_read_once(tmp_path: Path, s3_server: str) -> None:
    config = write_config(
        tmp_path,
        s3_server,
        s3_rule("exports", "content") + sql_rule("logs", "created_at"),
        {"content": new_bucket(s3_server).name},
    )
    code = WRAPPER.format(
        one_process=False, arguments=["--config", "/dev/stdin", "config", "validate"]
    )

    result = subprocess.run(
        [sys.executable, "-c", code],
        input=config.read_text(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "valid (2 rules, 2 stores)" in result.stdout
