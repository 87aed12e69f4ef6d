"""While a batch's DeleteObjects requests are in flight, the listing of the next batch goes on:
read only, and each version still goes after its own batch's intent."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from retention.selection import make_selection
from retention.stores import s3_listing
from tests.test_s3_store import (  # the fixtures bucket and s3_store_of, too
    DAY,
    UTC_ZONE,
    Bucket,
    bucket,
    make_s3_config,
    s3_rule,
    s3_store_of,
)

__all__ = ["bucket", "s3_store_of"]


def test_the_next_batchs_pages_are_listed_while_this_ones_deletes_are_in_flight(
    bucket: Bucket, tmp_path: Any, s3_store_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_listing, "LIST_PAGE_SIZE", 1)
    keys = [f"exports/{index}.csv" for index in range(8)]
    bucket.put(*keys)
    config = make_s3_config(bucket, s3_rule(), tmp_path)
    as_of = bucket.last_modified(keys[-1]) + 2 * DAY
    selection = make_selection(config.rules[0], as_of, UTC_ZONE)
    store = s3_store_of(bucket)
    lists = 0
    listed = threading.Condition()
    seen_during_deletes: list[int] = []
    intents: list[tuple[Any, ...]] = []

    def count_list(**_: Any) -> None:
        nonlocal lists
        with listed:
            lists += 1
            listed.notify_all()

    def hold_delete(**_: Any) -> None:
        # The first batch read pages 1-3 (the third shows where key 2's versions end) and had
        # the fourth on its way: a fifth list request can only come from looking ahead.
        with listed:
            listed.wait_for(lambda: lists >= 5, timeout=10)
            seen_during_deletes.append(lists)

    store.client.meta.events.register("before-call.s3.ListObjectsV2", count_list)
    store.client.meta.events.register("before-call.s3.DeleteObjects", hold_delete)
    batch = store.purge_batch(
        selection,
        after=None,
        limit=2,
        dry_run=False,
        now=datetime.now(UTC),
        hash_key=None,
        before_write=lambda batch_keys, *_: intents.append(batch_keys),
    )
    assert batch.keys == ((keys[0], "null"), (keys[1], "null"))
    assert batch.done == 2
    assert seen_during_deletes == [5]
    # What was listed ahead is deleted by the next batches, each after its own intent.
    after = batch.next_after
    while batch.more:
        batch = store.purge_batch(
            selection,
            after=after,
            limit=2,
            dry_run=False,
            now=datetime.now(UTC),
            hash_key=None,
            before_write=lambda batch_keys, *_: intents.append(batch_keys),
        )
        after = batch.next_after
    assert [key for batch_keys in intents for key, _version in batch_keys] == keys
    assert bucket.keys() == []
