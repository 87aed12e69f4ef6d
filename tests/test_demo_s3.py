"""scripts/demo-s3 and `retention demo`: the demo's S3 server is one its checkout started, on the
port it recorded; a server that another checkout started (whose runs would empty this demo's
buckets) is refused."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from retention.errors import ExitCode
from tests.support import copy_shipped_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "demo-s3"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout of its own (the script and this checkout's venv): var/ is its own."""
    if not (ROOT / ".venv" / "bin" / "moto_server").exists():
        pytest.skip("moto_server is missing: run `make setup`")
    directory = tmp_path / "checkout"
    (directory / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, directory / "scripts" / "demo-s3")
    (directory / ".venv").symlink_to(ROOT / ".venv")
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_s3(checkout: Path, command: str, port: int | None) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/demo-s3 COMMAND`` in the checkout, with DEMO_S3_PORT=port (None: unset,
    as `make demo-stop` runs it)."""
    environment = {key: value for key, value in os.environ.items() if key != "DEMO_S3_PORT"}
    if port is not None:
        environment["DEMO_S3_PORT"] = str(port)
    return subprocess.run(
        [str(checkout / "scripts" / "demo-s3"), command],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class _Quiet(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """A server on 127.0.0.1 that no demo-s3 of this checkout started."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_another_checkout_started_is_refused(checkout: Path, foreign_server: int) -> None:
    result = demo_s3(checkout, "start", foreign_server)
    assert result.returncode == 1
    assert "did not start" in result.stderr
    assert not (checkout / "var" / "demo-s3.pid").exists()
    status = demo_s3(checkout, "status", foreign_server)
    assert "did not start" in status.stdout


def test_the_demo_starts_its_own_server_reuses_it_and_stops_it(
    checkout: Path, tmp_path: Path
) -> None:
    port = free_port()
    started = demo_s3(checkout, "start", port)
    try:
        assert started.returncode == 0, started.stderr
        assert (checkout / "var" / "demo-s3.port").read_text().strip() == str(port)
        pid = int((checkout / "var" / "demo-s3.pid").read_text())
        again = demo_s3(checkout, "start", port)
        assert again.returncode == 0, again.stderr
        assert f"this checkout's server runs on http://127.0.0.1:{port} (pid {pid})" in again.stdout

        # The same server seen from another checkout: not its own, refused.
        other = tmp_path / "other"
        (other / "scripts").mkdir(parents=True)
        shutil.copy2(SCRIPT, other / "scripts" / "demo-s3")
        (other / ".venv").symlink_to(ROOT / ".venv")
        refused = demo_s3(other, "start", port)
        assert refused.returncode == 1
        assert "did not start" in refused.stderr
        assert "no server started by this checkout" in demo_s3(other, "stop", port).stdout
    finally:
        stopped = demo_s3(checkout, "stop", port)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped moto" in stopped.stdout
    assert not (checkout / "var" / "demo-s3.pid").exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_stop_without_the_port_stops_the_server_started_on_another_port(checkout: Path) -> None:
    """README: `DEMO_S3_PORT=4567 make demo`, then `make demo-stop` (no DEMO_S3_PORT) stops it:
    the port is the one recorded in var/. It once looked on 4566, found nothing, and deleted the
    record, leaving the server running with nothing left to stop it by."""
    port = free_port()
    started = demo_s3(checkout, "start", port)
    assert started.returncode == 0, started.stderr
    pid = int((checkout / "var" / "demo-s3.pid").read_text())
    try:
        status = demo_s3(checkout, "status", None)
        assert f"this checkout's server answers on http://127.0.0.1:{port}" in status.stdout
        stopped = demo_s3(checkout, "stop", None)
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped moto (pid {pid})" in stopped.stdout
        assert not (checkout / "var" / "demo-s3.pid").exists()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGTERM)


def retention_demo(checkout: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`retention demo` with the shipped config as ``checkout`` has it, started from elsewhere."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "retention"), "demo", *options],
        env={
            **os.environ,
            "RETENTION_CONFIG": str(checkout / "config" / "retention.toml"),
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo-secret-key",
        },
        cwd=checkout.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_retention_demo_fills_the_server_its_checkout_started_and_refuses_others(
    checkout: Path, tmp_path: Path
) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    copy_shipped_config(checkout, endpoint)
    other = tmp_path / "other"
    copy_shipped_config(other, endpoint)
    started = demo_s3(checkout, "start", port)
    try:
        assert started.returncode == 0, started.stderr

        refused = retention_demo(other)
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        assert f"the S3 server at {endpoint}: not started by this checkout's" in refused.stderr
        assert not (other / "var").exists()

        filled = retention_demo(checkout)
        assert filled.returncode == 0, filled.stderr
        assert f" on {endpoint}: " in filled.stdout
        assert (checkout / "var" / "demo.sqlite").exists()

        # Said to be the user's own: filled (its own bucket names, on the same server).
        mine = retention_demo(other, "--s3-endpoint-is-mine")
        assert mine.returncode == 0, mine.stderr
        assert f" on {endpoint}: " in mine.stdout
    finally:
        demo_s3(checkout, "stop", port)
