"""Object and file batches can purge only part of what their intent selected (a file that
cannot be deleted, one touched since it was listed). The trail then says which were not purged,
so that `audit prove` never proves a deletion that did not happen and `audit verify` checks it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from retention.audit.entries import leaves_path, read_entries
from tests.test_files_store import OLD, backup_rule, cli, files_under, make_file, run, write_config


@pytest.fixture
def purged_in_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A backup folder of three old files, one of which cannot be deleted; run once, audited.
    Returns the config and the audit directory."""
    root = tmp_path / "backups"
    for name in ("a.tar", "b-stuck.tar", "c.tar"):
        make_file(root, name, OLD)
    audit = tmp_path / "audit"
    config = write_config(tmp_path, root, backup_rule(), audit=audit)
    real_unlink = os.unlink

    def unlink(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> None:
        if str(path) == "b-stuck.tar":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    result = run(config)
    monkeypatch.undo()
    assert result.exit_code == 3, result.output
    assert files_under(root) == {"b-stuck.tar"}
    return config, audit


def test_a_batch_says_what_it_selected_but_did_not_purge(purged_in_part: tuple[Path, Path]) -> None:
    _config, audit = purged_in_part
    entries = [stored.content for stored in read_entries(audit)]
    (intent,) = [entry for entry in entries if entry["type"] == "batch.intent"]
    (result,) = [entry for entry in entries if entry["type"] == "batch.result"]

    assert (intent["selected"], intent["method"]) == (3, "files-delete")
    assert (result["done"], result["failed"], result["not_done"]) == (2, 1, 1)
    assert leaves_path(audit, result["seq"]).read_text().count("\n") == 1


def test_verify_accepts_it_and_prove_tells_purged_from_not_purged(
    purged_in_part: tuple[Path, Path],
) -> None:
    config, _audit = purged_in_part
    root = str(config.parent / "backups")

    verified = cli(config, "audit", "verify")
    purged = cli(config, "audit", "prove", "--store", "backups", "--table", root, "--key", "a.tar")
    stuck = cli(
        config, "audit", "prove", "--store", "backups", "--table", root, "--key", "b-stuck.tar"
    )

    assert verified.exit_code == 0, verified.output
    assert purged.exit_code == 0, purged.output
    assert stuck.exit_code == 3, stuck.output
    assert "not purged" in stuck.output


def test_a_forged_not_done_list_is_caught(purged_in_part: tuple[Path, Path]) -> None:
    config, audit = purged_in_part
    (result,) = [
        stored.content for stored in read_entries(audit) if stored.content["type"] == "batch.result"
    ]
    # Someone hides that b-stuck.tar stayed, to make it look purged: the leaves no longer match.
    leaves_path(audit, result["seq"]).write_text("")

    verified = cli(config, "audit", "verify")

    assert verified.exit_code == 70
    assert "leaves file" in verified.output
    assert "not_done" in verified.output


def test_objects_s3_refused_are_recorded_not_done_and_not_proven(
    s3_server: str, tmp_path: Path
) -> None:
    from tests.s3_proxy import FaultProxy, make_bucket, put_objects
    from tests.support import audit_table
    from tests.test_s3_faults import run as run_s3
    from tests.test_s3_faults import write_config as write_s3_config

    bucket = make_bucket(s3_server, "not-done")
    put_objects(s3_server, bucket, ["exports/a.csv", "exports/denied.csv"])
    with FaultProxy(s3_server) as proxy:
        config = write_s3_config(tmp_path, proxy.endpoint, bucket)
        audit = tmp_path / "audit"
        config.write_text(
            config.read_text().replace("[audit]\nenabled = false\n", audit_table(audit))
        )
        proxy.key_errors(r"denied", "AccessDenied")
        result = run_s3(config)
    assert result.exit_code == 3, result.output

    (outcome,) = [
        stored.content for stored in read_entries(audit) if stored.content["type"] == "batch.result"
    ]
    assert (outcome["done"], outcome["failed"], outcome["not_done"]) == (1, 1, 1)

    def prove(key: str) -> int:
        return cli(
            config,
            "audit",
            "prove",
            "--store",
            "archive",
            "--table",
            bucket,
            "--key",
            key,
            "--key",
            "null",
        ).exit_code

    assert cli(config, "audit", "verify").exit_code == 0
    assert (prove("exports/a.csv"), prove("exports/denied.csv")) == (0, 3)
