"""The GIL's switch interval shortened while users run (runtime/handovers.py), restored once
the last one ends, whatever the order they end in or an error."""

from __future__ import annotations

import sys

import pytest

from retention.runtime.handovers import SWITCH_INTERVAL_SECONDS, quick_handovers


def test_the_interval_is_short_while_any_user_runs_and_restored_after() -> None:
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL_SECONDS
    first, second = quick_handovers(), quick_handovers()
    first.__enter__()
    assert sys.getswitchinterval() == SWITCH_INTERVAL_SECONDS
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == SWITCH_INTERVAL_SECONDS
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before


def test_an_error_restores_it_and_a_shorter_one_is_kept() -> None:
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), quick_handovers():
        raise RuntimeError("a batch failed")
    assert sys.getswitchinterval() == before
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS / 2)
    try:
        with quick_handovers():
            assert sys.getswitchinterval() == SWITCH_INTERVAL_SECONDS / 2
    finally:
        sys.setswitchinterval(before)
