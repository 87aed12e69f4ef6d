"""Crash injection for the crash-consistency tests: with RETENTION_CRASH_AT=<point>, the process
kills itself with SIGKILL when it reaches that point (no cleanup, no flush: a real crash).
Points: before_intent, after_intent, mid_batch, after_commit, before_result, after_result."""

from __future__ import annotations

import os
import signal

CRASH_POINTS = (
    "before_intent",
    "after_intent",
    "mid_batch",
    "after_commit",
    "before_result",
    "after_result",
)


def crash_point(name: str) -> None:
    if os.environ.get("RETENTION_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
