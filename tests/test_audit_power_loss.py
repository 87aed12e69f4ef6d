"""A power loss keeps only what was fsynced. The trail appends a batch's result without its own
fsync (the next intent's fsync, or the run's end, makes it durable), so a power loss may take
the result of a committed batch: its pending keys must then still be there, so that the next
run reconciles it. This models the power loss: at a crash point, the trail's files are cut
back to what their last fsync made durable (a file never fsynced is lost), and the next run
starts from that."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention.audit.entry_checks import load_verification_keys
from retention.audit.verify import verify_trail
from retention.config import load_config
from retention.runtime.faults import CRASH_POINTS
from tests.support import claimed_leaves, plan_and_run
from tests.test_audit_crash import (
    DUE,
    KEPT,
    _leaves,
    _setup,
    remaining_ids_from,
)

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)
KEPT_ON_POWER_LOSS = ("trail", "leaves", "pending")


class PowerLoss(BaseException):
    """Raised where the process would die: nothing after it runs (no cleanup catches it)."""


class Disk:
    """What fsync made durable: per file, its size at its last fsync."""

    def __init__(self, audit: Path) -> None:
        self.audit = audit
        self.synced: dict[str, int] = {}
        self.lock = threading.Lock()
        self.real_fsync = os.fsync

    def fsync(self, descriptor: int) -> None:
        self.real_fsync(descriptor)
        path = os.readlink(f"/proc/self/fd/{descriptor}")
        with self.lock:
            self.synced[path] = os.fstat(descriptor).st_size

    def lose_power(self, saved: Path) -> None:
        """Copy into ``saved`` the trail's files as a power loss now would leave them."""
        shutil.copytree(self.audit, saved)
        for sub in KEPT_ON_POWER_LOSS:
            for path in sorted((saved / sub).iterdir()):
                original = str(self.audit / sub / path.name)
                with self.lock:
                    size = self.synced.get(original)
                if size is None:
                    path.unlink()
                else:
                    with path.open("r+b") as handle:
                        handle.truncate(size)


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_power_loss_at_any_point_loses_no_claim_and_makes_none_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    config_path, url, audit = _setup(tmp_path)
    config = load_config(config_path)
    disk = Disk(audit)
    saved = tmp_path / "after-power-loss"

    def die(pid: int, sent: int) -> None:
        assert sent == signal.SIGKILL
        disk.lose_power(saved)
        raise PowerLoss

    monkeypatch.setattr(os, "fsync", disk.fsync)
    monkeypatch.setattr(os, "kill", die)
    monkeypatch.setenv("RETENTION_CRASH_AT", crash_at)
    with pytest.raises(PowerLoss):
        plan_and_run(config, AS_OF)
    monkeypatch.undo()
    gone = DUE | KEPT - remaining_ids_from(url)
    shutil.rmtree(audit)
    saved.rename(audit)
    before_reconciling = claimed_leaves(audit)
    assert set(before_reconciling) <= _leaves(tmp_path, gone), "a claim of a record still there"

    _, report = plan_and_run(config, AS_OF)
    assert report.exit_code == 0
    assert remaining_ids_from(url) == KEPT
    assert sorted(claimed_leaves(audit)) == sorted(_leaves(tmp_path, DUE)), "each, once"
    assert not list((audit / "pending").iterdir())
    result = verify_trail(audit, load_verification_keys(audit / "public-keys.json"))
    assert result.valid, result.problem
