"""PostgreSQL: what the drop of a whole partition reads of the catalog under the partition's lock
(issue 15): not the table's whole partitioning again, but whether the partition still stands as
its keys' snapshot saw it (the same relation, still attached, the same bound) and whether a
foreign key references the table now. A partition that does not is kept (its rows, if still in
the table, go by row batches), and the run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

from retention.audit.leaves import record_leaf
from retention.stores import partitions
from tests.support import make_config, plan_and_run
from tests.test_partitions import (
    AS_OF,
    DUE,
    ROWS,
    RULE,
    _claimed,
    _partitions,
    _remaining,
    _verified,
    create_events,
)

FEBRUARY = {i for i, at in ROWS.items() if at.month == 2 and at.year == 2024}


def _before_the_drop_of(
    monkeypatch: pytest.MonkeyPatch, name: str, url: str, statements: list[str]
) -> None:
    """Run ``statements`` from another session once that partition's keys are recorded, just
    before its drop (its lock, its check) starts."""
    original = partitions.finish_partition

    def finish_partition(store: Any, selection: Any, recorded: Any, *args: Any) -> Any:
        if recorded.name == name:
            engine = create_engine(url)
            with engine.begin() as connection:
                for statement in statements:
                    connection.execute(text(statement))
            engine.dispose()
        return original(store, selection, recorded, *args)

    monkeypatch.setattr(partitions, "finish_partition", finish_partition)


def _kept(logs: list[dict[str, Any]]) -> dict[str, str]:
    return {line["partition"]: line["reason"] for line in logs if line["event"] == "partition.kept"}


def _run_changing_february(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statements: list[str]
) -> tuple[dict[str, str], Path]:
    """Purge the events table (audited), ``statements`` run from another session once
    February's keys are recorded, just before its drop; check the run ended ok, deleted every
    due row and left a trail that verifies. Return the partitions kept (with why) and the
    audit directory."""
    create_events(url)
    audit = tmp_path / "audit"
    config = make_config(url, RULE, audit_directory=audit)
    _before_the_drop_of(monkeypatch, "events_2024_02", url, statements)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert _remaining(url) == set(ROWS) - DUE
    _verified(audit)
    return _kept(logs), audit


def _claimed_as(audit: Path, ids: set[int]) -> None:
    """The trail claims exactly the rows ``ids``, each once."""
    key = (audit.parent / "audit-keys" / "hmac.key").read_bytes().strip()
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, ROWS[i])) for i in ids
    )


def test_a_partition_detached_once_its_keys_are_recorded_is_kept_and_the_run_goes_on(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """February is detached (a table of its own now) after its keys are recorded: the check
    under its lock sees it is no longer a partition of the table, nothing is dropped (the code
    before a DETACH of a table not attached would fail the run), its intent is rolled back,
    and the other partitions still go whole. Its rows are no longer the table's: none is
    claimed."""
    detach = "ALTER TABLE events DETACH PARTITION events_2024_02"
    kept, audit = _run_changing_february(postgres_url, tmp_path, monkeypatch, [detach])
    assert list(kept) == ["events_2024_02"]
    assert "was changed while its keys were recorded" in kept["events_2024_02"]
    assert not {"events_2024_01", "events_2024_03"} & _partitions(postgres_url)
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        detached = connection.execute(text("SELECT count(*) FROM events_2024_02")).scalar_one()
    engine.dispose()
    assert detached == len(FEBRUARY)
    _claimed_as(audit, DUE - FEBRUARY)


def test_a_partition_attached_again_with_another_bound_is_kept(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """February is detached and attached again with another range (still holding its rows)
    after its keys are recorded: the same relation, attached, but not with the bound its keys
    were read under: kept, its rows deleted by row batches, each named once."""
    statements = [
        "ALTER TABLE events DETACH PARTITION events_2024_02",
        "ALTER TABLE events ATTACH PARTITION events_2024_02 "
        "FOR VALUES FROM ('2024-02-01') TO ('2024-02-20')",
    ]
    kept, audit = _run_changing_february(postgres_url, tmp_path, monkeypatch, statements)
    assert list(kept) == ["events_2024_02"]
    assert "was changed while its keys were recorded" in kept["events_2024_02"]
    assert "events_2024_02" in _partitions(postgres_url)
    _claimed_as(audit, DUE)


def test_a_foreign_key_created_after_the_plan_keeps_the_partition(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A foreign key referencing the table is created once February's keys are recorded (the
    plan saw none): the check under February's lock sees it, and February is kept (its rows go
    by row batches, as a referenced table's always do)."""
    reference = (
        "CREATE TABLE event_notes (id integer, logged_at timestamp, "
        "FOREIGN KEY (id, logged_at) REFERENCES events (id, logged_at))"
    )
    kept, _audit = _run_changing_february(postgres_url, tmp_path, monkeypatch, [reference])
    assert "events_2024_02" in kept
    assert "a foreign key references the table now" in kept["events_2024_02"]
    assert "events_2024_02" in _partitions(postgres_url)
    assert "events_2024_01" not in _partitions(postgres_url)
