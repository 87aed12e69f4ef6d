"""The next partition's keys are read while one is recorded and dropped (issue 15): nothing read
ahead is trusted more than a read in its turn, and the drop before it never waits for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from retention.audit.leaves import record_leaf
from retention.stores import partition_ahead
from tests.support import make_config, plan_and_run
from tests.test_partition_drops import (
    LATE_AT,
    LATE_ID,
    _insert_late_row,
    _key,
    _while_recording,
    events_url,
)
from tests.test_partitions import (
    AS_OF,
    DUE,
    ROWS,
    RULE,
    _claimed,
    _partitions,
    _remaining,
    _verified,
)

__all__ = ["events_url"]  # the fixture, parametrised over both servers


def _when_read_ahead(monkeypatch: pytest.MonkeyPatch) -> dict[str, threading.Event]:
    """Per partition read ahead, an event set once its thread has its keys' snapshot
    (PostgreSQL: taken, its row versions about to be counted; MariaDB: its keys read, that
    snapshot ended)."""
    events: dict[str, threading.Event] = {}
    original_reading = partition_ahead.start_reading

    def start_reading(store: Any, selection: Any, name: str, *args: Any) -> Any:
        events.setdefault(name, threading.Event())
        return original_reading(store, selection, name, *args)

    def snapshot_taken() -> None:
        name = threading.current_thread().name
        if name.startswith(partition_ahead.THREAD_PREFIX):
            events[name.removeprefix(partition_ahead.THREAD_PREFIX)].set()

    original_xmin = partition_ahead.snapshot_xmin
    original_keys = partition_ahead.key_chunks

    def snapshot_xmin(connection: Any) -> int:
        reference = original_xmin(connection)
        snapshot_taken()
        return reference

    def key_chunks(*args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from original_keys(*args, **kwargs)
        snapshot_taken()

    monkeypatch.setattr("retention.stores.partitions.start_reading", start_reading)
    monkeypatch.setattr(partition_ahead, "snapshot_xmin", snapshot_xmin)
    monkeypatch.setattr(partition_ahead, "key_chunks", key_chunks)
    return events


def test_a_row_written_into_the_next_partition_while_it_is_read_ahead_keeps_it(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While January is recorded, February's keys are read ahead (its snapshot taken before
    January is dropped: the test waits for it there, which the code before, reading each
    partition in its turn, never did); a due row then written into February is not in that
    snapshot: the check under February's lock sees it, February goes by row batches, and
    every row gone is named in the trail, each once. January and March still go whole: the
    read ahead held no lock that their drops waited for."""
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    read_ahead = _when_read_ahead(monkeypatch)

    def insert_once_february_is_read() -> str:
        assert "events_2024_02" in read_ahead, "February is read while January is recorded"
        assert read_ahead["events_2024_02"].wait(30), "February's snapshot was never taken"
        return _insert_late_row(events_url, None)

    attempts = _while_recording(monkeypatch, "events_2024_01", insert_once_february_is_read)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert attempts == ["inserted"]
    kept = {line["partition"]: line["reason"] for line in logs if line["event"] == "partition.kept"}
    assert list(kept) == ["events_2024_02"]
    assert "changed while its keys were recorded" in kept["events_2024_02"]
    partitions = _partitions(events_url)
    assert "events_2024_02" in partitions
    assert not {"events_2024_01", "events_2024_03"} & partitions
    rows = ROWS | {LATE_ID: LATE_AT}
    gone = set(rows) - _remaining(events_url)
    assert gone == DUE | {LATE_ID}
    claimed = _claimed(audit)
    assert len(claimed) == len(set(claimed)), "each row named once"
    key = _key(audit)
    assert sorted(claimed) == sorted(record_leaf(key, "db", "events", (i, rows[i])) for i in gone)
    _verified(audit)
