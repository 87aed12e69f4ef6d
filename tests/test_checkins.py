"""Monitoring check-ins ([checkins]): start, success and fail pings reach a local HTTP server;
a server that hangs or refuses never fails a purge, nor holds it up past the timeout; bad URLs
are config errors (exit 78) that do not echo the URL's token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from retention.config import parse_config
from retention.errors import ConfigError
from tests.support import audit_table, create_logs, logs_rule
from tests.test_daemon import Daemons, make_logs
from tests.test_daemon import rule as daemon_rule
from tests.test_daemon import write_config as write_daemon_config

RULE = logs_rule(extra="max_fraction = 1.0")
TOKEN = "5f1c0a9e-secret-token"


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths: list[str] = []
        self.arrivals: list[float] = []  # time.monotonic() as each request came in
        self.delay = delay

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self.server.arrivals.append(time.monotonic())
        time.sleep(self.server.delay)
        self.server.paths.append(self.path)
        try:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
        except OSError:
            pass  # the client gave up waiting: what a hanging server is for

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield from _serve(Recorder())


@pytest.fixture
def hanging() -> Iterator[Recorder]:
    yield from _serve(Recorder(delay=30))


def _serve(server: Recorder) -> Iterator[Recorder]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def refused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def write_config(
    tmp_path: Path, database: str, base: str, timeout: str = "2s", rule: str = RULE
) -> Path:
    config = tmp_path / "retention.toml"
    config.write_text(
        f'[settings]\ntimezone = "UTC"\n[stores.db]\nkind = "sql"\nurl = "{database}"\n'
        f'[state]\nurl = "sqlite:///{tmp_path}/state.sqlite"\n'
        f"[checkins]\n"
        f'start = "{base}/{TOKEN}/start"\nsuccess = "{base}/{TOKEN}"\n'
        f'fail = "{base}/{TOKEN}/fail"\ntimeout = "{timeout}"\n'
        + audit_table(tmp_path / "audit")
        + rule
    )
    return config


def retention(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "retention", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=environment,
    )


def old_logs(url: str, count: int = 5) -> None:
    create_logs(url, {key: datetime.now(UTC) - timedelta(days=800) for key in range(1, count + 1)})


def test_a_run_pings_start_then_success(
    tmp_path: Path, sqlite_url: str, recorder: Recorder
) -> None:
    old_logs(sqlite_url)
    result = retention(write_config(tmp_path, sqlite_url, recorder.url), "run", "--yes")
    assert result.returncode == 0, result.stderr
    assert recorder.paths == [f"/{TOKEN}/start", f"/{TOKEN}"]


def test_a_dry_run_pings_nothing(tmp_path: Path, sqlite_url: str, recorder: Recorder) -> None:
    old_logs(sqlite_url)
    result = retention(write_config(tmp_path, sqlite_url, recorder.url), "run", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert recorder.paths == []


def test_a_failed_run_pings_fail(tmp_path: Path, sqlite_url: str, recorder: Recorder) -> None:
    old_logs(sqlite_url)
    missing_table = RULE.replace('table = "logs"', 'table = "no_such_table"')
    config = write_config(tmp_path, sqlite_url, recorder.url, rule=missing_table)
    result = retention(config, "run", "--yes")
    assert result.returncode == 78, result.stderr
    assert recorder.paths == [f"/{TOKEN}/fail"]


@pytest.mark.parametrize("server", ["hanging", "refusing"])
def test_a_hanging_or_refusing_server_neither_fails_nor_holds_up_the_purge(
    tmp_path: Path, sqlite_url: str, hanging: Recorder, server: str
) -> None:
    old_logs(sqlite_url)
    base = hanging.url if server == "hanging" else refused_url()
    config = write_config(tmp_path, sqlite_url, base, timeout="1s")
    started = time.monotonic()
    result = retention(config, "run", "--yes")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "purged 5 records" in result.stdout
    # Start and success pings, each waited for at most the 1 s timeout, beside the run itself.
    assert elapsed < 15
    assert "checkin.failed" in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_a_purge_does_not_wait_for_its_start_ping(
    tmp_path: Path, sqlite_url: str, hanging: Recorder
) -> None:
    """The start ping hangs for its whole timeout while the purge goes on: the rows are gone
    before the ping gives up."""
    old_logs(sqlite_url, 50)
    config = write_config(tmp_path, sqlite_url, hanging.url, timeout="5s")
    result = retention(config, "run", "--yes")
    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    finished = [line for line in result.stderr.splitlines() if "run.finished" in line]
    assert finished, result.stderr
    # The process waits for its pings at the end (at most the timeout), not before purging:
    # the success ping, sent once the purge is done, is still waited for when it exits.
    start, success = hanging.arrivals
    assert start < success
    assert ended - success >= 4


def test_checkin_urls_are_checked_with_their_key_paths_and_not_echoed() -> None:
    text = (
        '[settings]\ntimezone = "UTC"\n[checkins]\n'
        f'start = "ftp://hc-ping.com/{TOKEN}"\nsuccess = "hc-ping.com/{TOKEN}"\n'
        f'fail = "https://:99999/{TOKEN}"\ntimeout = "5m"\nretries = 3\n'
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text.encode())
    paths = sorted(issue.path for issue in raised.value.issues)
    assert paths == [
        "checkins.fail",
        "checkins.retries",
        "checkins.start",
        "checkins.success",
        "checkins.timeout",
    ]
    assert TOKEN not in str(raised.value)
    good = parse_config(
        b'[settings]\ntimezone = "UTC"\n[checkins]\nsuccess = "https://hc-ping.com/x"\n'
    )
    assert good.checkins.success == "https://hc-ping.com/x"
    assert good.checkins.start is None
    assert good.checkins.timeout == timedelta(seconds=10)


def test_a_bad_checkin_url_exits_78(tmp_path: Path, sqlite_url: str) -> None:
    config = write_config(tmp_path, sqlite_url, "gopher://example")
    result = retention(config, "config", "validate")
    assert result.returncode == 78
    assert "checkins.start" in result.stderr + result.stdout


def test_the_daemon_pings_start_and_success_for_each_rule_run(
    tmp_path: Path, sqlite_url: str, recorder: Recorder, daemons: Daemons
) -> None:
    make_logs(sqlite_url, "logs", old=20)
    checkins = (
        f'\n[checkins]\nstart = "{recorder.url}/{TOKEN}/start"\n'
        f'success = "{recorder.url}/{TOKEN}"\nfail = "{recorder.url}/{TOKEN}/fail"\n'
    )
    config = write_daemon_config(
        tmp_path,
        sqlite_url,
        daemon_rule("logs"),
        state_url=f"sqlite:///{tmp_path}/state.sqlite",
        daemon=checkins,
    )
    daemon = daemons.start(config)
    daemon.wait_for_event("run.finished", rule="logs")
    deadline = time.monotonic() + 10
    while len(recorder.paths) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.paths == [f"/{TOKEN}/start", f"/{TOKEN}"]
    assert daemon.stop() == 0, daemon.output()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    running = Daemons(tmp_path)
    try:
        yield running
    finally:
        running.kill_all()
