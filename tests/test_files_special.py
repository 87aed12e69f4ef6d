"""FIFOs, Unix sockets and devices in a backup folder: `plan`, `run` and `run --dry-run` count
them apart ("skipped: not a regular file", `not_regular_files` in JSON), never open them (a
FIFO's open blocks until a writer comes: every command here runs in a subprocess with a timeout,
so a hang fails the test) and never delete them; symlinks are counted as before, and directories
walked into. Real FIFOs (os.mkfifo), a bound Unix socket, and, as root, a character device."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_files_store import (
    AS_OF_TEXT,
    OLD,
    RECENT,
    backup_rule,
    make_file,
    write_config,
)

# Seconds a command may take; a FIFO opened for reading would block it for ever.
TIMEOUT = 60


def retention(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retention", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=config.parent,
    )


@pytest.fixture
def short_root() -> Iterator[Path]:
    """A folder with a short path: a Unix socket's path is at most 107 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _old(path: Path) -> None:
    os.utime(path, (OLD.timestamp(), OLD.timestamp()), follow_symlinks=False)


def special_entries(root: Path) -> set[str]:
    """Make a folder of due backups beside entries that are no regular file; return the
    names of those that must stay whatever runs."""
    make_file(root, "db-old.sql.gz", OLD)
    make_file(root, "nightly/db-old.sql.gz", OLD)
    make_file(root, "nightly/db-new.sql.gz", RECENT)
    os.mkfifo(root / "db-pipe.sql.gz")  # named as a backup, and as old
    _old(root / "db-pipe.sql.gz")
    os.mkfifo(root / "nightly" / "stream")
    _old(root / "nightly" / "stream")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(root / "agent.sock"))
    server.close()  # the socket file stays
    _old(root / "agent.sock")
    (root / "latest.sql.gz").symlink_to(root / "db-old.sql.gz")
    kept = {"db-pipe.sql.gz", "nightly/stream", "agent.sock", "latest.sql.gz"}
    if os.geteuid() == 0:
        os.mknod(root / "null-copy", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        _old(root / "null-copy")
        kept.add("null-copy")
    return kept


def entries_under(root: Path) -> dict[str, str]:
    """Every entry under ``root`` and its kind, never following links."""
    found = {}
    for directory, directories, files in os.walk(root):
        for name in files + directories:
            path = Path(directory) / name
            mode = path.lstat().st_mode
            kind = (
                "file"
                if stat.S_ISREG(mode)
                else "fifo"
                if stat.S_ISFIFO(mode)
                else "socket"
                if stat.S_ISSOCK(mode)
                else "device"
                if stat.S_ISCHR(mode)
                else "symlink"
                if stat.S_ISLNK(mode)
                else "directory"
            )
            found[path.relative_to(root).as_posix()] = kind
    return found


def _rule(document: dict[str, Any]) -> dict[str, Any]:
    (rule,) = document["plan"]["rules"] if "plan" in document else document["rules"]
    assert isinstance(rule, dict)
    return rule


def test_fifos_sockets_and_devices_are_counted_never_opened_nor_deleted(
    tmp_path: Path, short_root: Path
) -> None:
    kept = special_entries(short_root)
    specials = len(kept) - 1  # all but the symlink
    config = write_config(tmp_path, short_root, backup_rule())
    before = entries_under(short_root)

    planned = retention(config, "plan", "--as-of", AS_OF_TEXT, "--output", "json")
    assert planned.returncode == 0, planned.stderr
    rule = _rule(json.loads(planned.stdout))
    assert rule["due"] == 2
    assert rule["objects"] == {
        "files": 2,
        "bytes": 2,
        "symlinks_skipped": 1,
        "not_regular_files": specials,
    }
    text = retention(config, "plan", "--as-of", AS_OF_TEXT, "--wide")
    assert text.returncode == 0, text.stderr
    assert f"{specials} skipped: not a regular file (FIFO, socket or device)" in text.stdout

    for dry_run in (
        retention(config, "run", "--dry-run", "--as-of", AS_OF_TEXT, "--output", "json"),
        retention(config, "run", "--dry-run", "--as-of", AS_OF_TEXT, "--wide"),
    ):
        assert dry_run.returncode == 0, dry_run.stderr
    dry_document = json.loads(
        retention(config, "run", "--dry-run", "--as-of", AS_OF_TEXT, "--output", "json").stdout
    )
    assert _rule(dry_document)["objects"]["not_regular_files"] == specials
    assert entries_under(short_root) == before

    ran = retention(config, "run", "--yes", "--as-of", AS_OF_TEXT, "--wide")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Left in place, not purged (as the plan counted them):" in ran.stdout
    assert (
        f"backups: 1 symlink skipped, {specials} skipped: not a regular file "
        "(FIFO, socket or device)" in ran.stdout
    )
    after = entries_under(short_root)
    assert {path for path, kind in after.items() if kind != "directory"} == kept | {
        "nightly/db-new.sql.gz"
    }
    assert all(after[path] == before[path] for path in kept)
    # The folder still holding a FIFO is not removed.
    assert after["nightly"] == "directory"

    # Nothing is due now; the entries are still counted, and the JSON run report says so too.
    again = retention(config, "run", "--yes", "--as-of", AS_OF_TEXT, "--output", "json")
    assert again.returncode == 0, again.stderr
    rule = _rule(json.loads(again.stdout))
    assert rule["objects"]["not_regular_files"] == specials
    assert rule["due"] == 0


def test_a_fifo_with_a_writer_waiting_is_not_read_either(tmp_path: Path, short_root: Path) -> None:
    """A FIFO some process writes to (a dump streamed through a pipe) is left to it: no read
    takes its data, and the run does not wait for it."""
    make_file(short_root, "db-old.sql.gz", OLD)
    fifo = short_root / "db-stream.sql.gz"
    os.mkfifo(fifo)
    _old(fifo)
    writer = subprocess.Popen(
        [sys.executable, "-c", f"open({str(fifo)!r}, 'wb').write(b'dump')"],
    )
    try:
        config = write_config(tmp_path, short_root, backup_rule())
        ran = retention(config, "run", "--yes", "--as-of", AS_OF_TEXT, "--output", "json")
        assert ran.returncode == 0, ran.stderr
        assert _rule(json.loads(ran.stdout))["objects"]["not_regular_files"] == 1
        assert writer.poll() is None, "something opened the FIFO for reading"
        assert stat.S_ISFIFO(fifo.lstat().st_mode)
        assert not (short_root / "db-old.sql.gz").exists()
    finally:
        writer.kill()
        writer.wait(10)
