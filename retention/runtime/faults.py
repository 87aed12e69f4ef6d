"""Fault injection for the crash-consistency tests.

With RETENTION_CRASH_AT=<point>, the process kills itself with SIGKILL when it reaches that
point (no cleanup, no flush: a real crash). Points: before_intent, after_intent, mid_batch,
after_commit, before_result, after_result, after_hold_recorded (a hold's entry appended, the
state database not yet told).

With RETENTION_PAUSE_AT=<point> and RETENTION_PAUSE_FILE=<file>, the process waits at that
point while <file> exists, having written <file>.reached (once), so that a test can act while,
say, a run holds the audit trail; RETENTION_PAUSE_SKIP=<n> lets the first n passes through.
Points: batch_boundary (before the holds are read for a rule's next batch), before_plan (the
stores opened and, for `run` and `erase`, the leases taken; nothing counted yet).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CRASH_POINTS = (
    "before_intent",
    "after_intent",
    "mid_batch",
    "after_commit",
    "before_result",
    "after_result",
)
# Not a batch's: reached only when a run records a hold placed while it held the trail.
HOLD_CRASH_POINTS = ("after_hold_recorded",)
PAUSE_POINTS = ("batch_boundary", "before_plan")
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    if os.environ.get("RETENTION_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(name: str) -> None:
    if os.environ.get("RETENTION_PAUSE_AT") != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] <= int(os.environ.get("RETENTION_PAUSE_SKIP") or 0):
        return
    pause = Path(os.environ.get("RETENTION_PAUSE_FILE") or "")
    if not pause.name or not pause.exists():
        return
    pause.with_name(pause.name + ".reached").touch()
    while pause.exists():
        time.sleep(0.01)
