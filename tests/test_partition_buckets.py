"""MariaDB's check of a partition whose keys the server digests (issue 15): keys read in several
chunks, or row by row (text keys), are checked by the SHA-256 of their joined string in buckets
of about a chunk each, taken by the server in the keys' snapshot and again under LOCK TABLES.
No secret: whoever reads the statements (SHOW PROCESSLIST) learns nothing that lets keys be
swapped unseen. A swap between the keys' read and the lock keeps the partition (its rows go by
row batches, each named), a text key holding the separators cannot pass for other keys, and a
string the server cut fails the check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

from retention.audit.leaves import record_leaf
from retention.stores import partition_keys_mariadb, partition_survey, partitions
from tests.support import make_config, plan_and_run
from tests.test_partition_drops import _key, _update
from tests.test_partitions import (
    AS_OF,
    DUE,
    KEPT,
    ROWS,
    RULE,
    _claimed,
    _partitions,
    _remaining,
    _verified,
    create_events,
)

FEBRUARY = "2024-02-10 00:00:00"
TEXT_RULE = RULE.replace('key = ["id", "logged_at"]', 'key = ["code", "logged_at"]')


def _before_lock(
    monkeypatch: pytest.MonkeyPatch, name: str, action: Callable[[], str]
) -> list[str]:
    """Run ``action()`` once, after the partition ``name``'s keys are read and recorded and
    before its LOCK TABLES; return the list its result goes into."""
    results: list[str] = []
    original = partitions.finish_mariadb

    def finish(store: Any, selection: Any, recorded: Any, before_lock: Any) -> Any:
        if recorded.name == name and not results:
            results.append(action())
        return original(store, selection, recorded, before_lock)

    monkeypatch.setattr(partitions, "finish_mariadb", finish)
    return results


def _buckets_seen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The buckets of every digest the server takes (in a snapshot or under the lock)."""
    seen: list[int] = []
    original = partition_survey.joined_digest

    def spied(*args: Any) -> Any:
        seen.append(args[4] if len(args) > 4 else 1)
        return original(*args)

    monkeypatch.setattr(partition_survey, "joined_digest", spied)
    return seen


def _statements(url: str, *statements: str) -> str:
    """Run each statement in its own transaction from another session; return "done"."""
    for statement in statements:
        _update(url, statement)
    return "done"


def test_partitions_over_a_chunk_are_checked_in_buckets_and_dropped(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 3 keys: January (15 rows), February and March (10 each) are read in chunks,
    digested by the server in 5, 4 and 4 buckets in their snapshots and under their locks,
    and dropped whole, every key named once."""
    monkeypatch.setattr(partitions, "CHUNK", 3)
    seen = _buckets_seen(monkeypatch)
    create_events(mariadb_url)
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, RULE, audit_directory=audit)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert not [line for line in logs if line["event"] == "partition.kept"]
    assert not {"events_2024_01", "events_2024_02", "events_2024_03"} & _partitions(mariadb_url)
    assert sorted(seen) == [4, 4, 4, 4, 5, 5]
    assert _remaining(mariadb_url) == KEPT
    claimed = _claimed(audit)
    assert len(claimed) == len(set(claimed))
    key = _key(audit)
    assert set(claimed) == {record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE}
    _verified(audit)


@pytest.mark.parametrize("chunk", [3, partitions.CHUNK])
def test_keys_swapped_between_their_read_and_the_lock_keep_the_partition(
    chunk: int, mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows 12 and 13 of February deleted and two due rows inserted in their place once its
    keys are read and recorded, before its lock (the same count, all due): in buckets (chunks
    of 3) or as one string read ahead (one chunk), the digest under the lock differs. Nothing
    dropped unnamed: February is kept, its rows go by row batches, each named as it is."""
    monkeypatch.setattr(partitions, "CHUNK", chunk)
    create_events(mariadb_url)
    swap = _before_lock(
        monkeypatch,
        "events_2024_02",
        lambda: _statements(
            mariadb_url,
            f"DELETE FROM events WHERE id IN (12, 13) AND logged_at = '{FEBRUARY}'",
            f"INSERT INTO events (id, logged_at) VALUES (1012, '{FEBRUARY}'), (1013, '{FEBRUARY}')",
        ),
    )
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, RULE, audit_directory=audit)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert swap == ["done"]
    kept = [line for line in logs if line["event"] == "partition.kept"]
    assert [line["partition"] for line in kept] == ["events_2024_02"]
    assert "changed while its keys were recorded" in kept[0]["reason"]
    assert "events_2024_02" in _partitions(mariadb_url), "not dropped"
    assert not {"events_2024_01", "events_2024_03"} & _partitions(mariadb_url)
    rows = {i: at for i, at in ROWS.items() if i not in (12, 13)}
    rows |= {1012: ROWS[12], 1013: ROWS[13]}
    assert _remaining(mariadb_url) == KEPT
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, rows[i])) for i in set(rows) - KEPT
    )
    _verified(audit)


def _create_coded(url: str, rows: list[tuple[str, str]]) -> None:
    """``events`` keyed by (code varchar, logged_at), partitioned by month (January, February,
    the rest), holding the rows."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE events (code varchar(40) NOT NULL, logged_at datetime NOT NULL, "
                "PRIMARY KEY (code, logged_at)) PARTITION BY RANGE COLUMNS (logged_at) "
                "(PARTITION events_2024_01 VALUES LESS THAN ('2024-02-01'), "
                "PARTITION events_2024_02 VALUES LESS THAN ('2024-03-01'), "
                "PARTITION events_max VALUES LESS THAN (MAXVALUE))"
            )
        )
        connection.execute(
            text("INSERT INTO events (code, logged_at) VALUES (:code, :at)"),
            [{"code": code, "at": at} for code, at in rows],
        )
    engine.dispose()


def _joined_as_spelled(url: str) -> str:
    """February's keys joined as the server spells them, unencoded, in their index's order."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SET SESSION group_concat_max_len = 65536")
            return str(
                connection.execute(
                    text(
                        "SELECT GROUP_CONCAT(code, '/', logged_at ORDER BY code SEPARATOR ',') "
                        "FROM events PARTITION (events_2024_02)"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("chunk", [1, partitions.CHUNK])
def test_text_keys_holding_the_separators_cannot_pass_for_other_keys(
    chunk: int, mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """February's keys "a" and "b/<its time>,c" swapped before the lock for "a/<its time>,b" and
    "c": the same count and, joined unencoded, the very same string; each key's bytes as hex
    digits join differently, so February is kept (its new rows named), while January, whose
    keys hold "," and "/" too, is dropped whole (one bucket, or one per key)."""
    monkeypatch.setattr(partitions, "CHUNK", chunk)
    january = [("x,1", "2024-01-05 00:00:00"), ("y/2", "2024-01-06 00:00:00")]
    _create_coded(mariadb_url, [*january, ("a", FEBRUARY), (f"b/{FEBRUARY},c", FEBRUARY)])
    before = _joined_as_spelled(mariadb_url)

    def swapped() -> str:
        _statements(
            mariadb_url,
            f"DELETE FROM events PARTITION (events_2024_02) WHERE code IN ('a', 'b/{FEBRUARY},c')",
            f"INSERT INTO events (code, logged_at) VALUES ('a/{FEBRUARY},b', '{FEBRUARY}'), "
            f"('c', '{FEBRUARY}')",
        )
        return _joined_as_spelled(mariadb_url)

    swap = _before_lock(monkeypatch, "events_2024_02", swapped)
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, TEXT_RULE, audit_directory=audit)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert before == f"a/{FEBRUARY},b/{FEBRUARY},c/{FEBRUARY}"
    assert swap == [before], "unencoded, the keys swapped join as the same string"
    kept = [line for line in logs if line["event"] == "partition.kept"]
    assert [line["partition"] for line in kept] == ["events_2024_02"]
    assert "changed while its keys were recorded" in kept[0]["reason"]
    assert "events_2024_01" not in _partitions(mariadb_url), "dropped whole"
    key = _key(audit)
    named = [*january, (f"a/{FEBRUARY},b", FEBRUARY), ("c", FEBRUARY)]
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (code, datetime.fromisoformat(at))) for code, at in named
    )
    _verified(audit)


def test_a_joined_string_the_server_cut_fails_the_check(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's strings cut short (GROUP_CONCAT's limit made 8 bytes: the keys' snapshot
    and the lock would cut the same string alike, and their digests would match over keys
    never compared): the check fails, nothing is dropped whole, every row goes by row
    batches, each named."""
    monkeypatch.setattr(partition_keys_mariadb, "JOINED_LIMIT", 8)
    january = [(f"code-{i}", f"2024-01-{5 + i:02} 00:00:00") for i in range(4)]
    _create_coded(mariadb_url, [*january, ("a", FEBRUARY)])
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, TEXT_RULE, audit_directory=audit)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    kept = [line for line in logs if line["event"] == "partition.kept"]
    assert [line["partition"] for line in kept] == ["events_2024_01", "events_2024_02"]
    assert all("too long" in line["reason"] for line in kept)
    assert {"events_2024_01", "events_2024_02"} <= _partitions(mariadb_url), "not dropped"
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (code, datetime.fromisoformat(at)))
        for code, at in [*january, ("a", FEBRUARY)]
    )
    _verified(audit)
