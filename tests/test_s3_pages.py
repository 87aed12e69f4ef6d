"""A listing's next request goes out while botocore still parses this page (s3_pages): the same
pages as one request after the other, and an early request that the parsed page contradicts is
not used."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from retention.planner import make_selection
from retention.stores import s3_listing
from retention.stores.s3_pages import PageChain, on_raw_response, raw_fields, register
from tests.test_s3_store import (  # the fixtures bucket, versioned and s3_store_of, too
    UTC_ZONE,
    Bucket,
    bucket,
    make_s3_config,
    s3_rule,
    s3_store_of,
    versioned,
)

__all__ = ["bucket", "s3_store_of", "versioned"]


def test_the_next_list_request_is_sent_before_this_page_is_parsed(
    bucket: Bucket, tmp_path: Any, s3_store_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 2 keys. Each truncated page's parse waits (up to 5 s) for the next request to
    be sent: one request after the other, it never is, and the order below fails."""
    monkeypatch.setattr(s3_listing, "LIST_PAGE_SIZE", 2)
    keys = [f"exports/{index:02d}.csv" for index in range(9)]
    bucket.put(*keys, "other/x.csv")
    config = make_s3_config(bucket, s3_rule(), tmp_path)
    store = s3_store_of(bucket)
    events: list[str] = []
    state = threading.Condition()
    counts = {"sent": 0, "parsing": 0}

    def sent(**_: Any) -> None:
        with state:
            counts["sent"] += 1
            events.append("sent")
            state.notify_all()

    def hold_parse(response_dict: dict[str, Any], **_: Any) -> None:
        if b"<IsTruncated>true</IsTruncated>" not in response_dict["body"]:
            return
        with state:
            counts["parsing"] += 1
            page = counts["parsing"]
            state.wait_for(lambda: counts["sent"] > page, timeout=5)

    def parsed(**_: Any) -> None:
        with state:
            events.append("parsed")

    store.client.meta.events.register("before-call.s3.ListObjectsV2", sent)
    store.client.meta.events.register("before-parse.s3.ListObjectsV2", hold_parse)
    store.client.meta.events.register("after-call.s3.ListObjectsV2", parsed)
    as_of = bucket.last_modified(keys[-1])
    survey = store.survey(make_selection(config.rules[0], as_of, UTC_ZONE), 3)
    assert survey.in_scope == 9
    # Five pages, each next one sent before the one before it was parsed; none sent twice.
    assert events.count("sent") == events.count("parsed") == 5
    sent_at = [index for index, what in enumerate(events) if what == "sent"]
    parsed_at = [index for index, what in enumerate(events) if what == "parsed"]
    assert all(sent_at[page] < parsed_at[page - 1] for page in range(1, 5))


def test_a_versioned_listing_read_ahead_gives_every_version_once(
    versioned: Bucket, tmp_path: Any, s3_store_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 2 entries: a key's versions span pages, and the next request names the
    version where the page stopped (VersionIdMarker), read from the raw response too."""
    monkeypatch.setattr(s3_listing, "LIST_PAGE_SIZE", 2)
    for round_ in range(3):
        versioned.put("exports/a.csv", "exports/b.csv", body=f"v{round_}".encode())
    versioned.client.delete_object(Bucket=versioned.name, Key="exports/b.csv")
    store = s3_store_of(versioned)
    pool = ThreadPoolExecutor(2)
    try:
        listed = [
            (entry.key, entry.version_id, entry.marker)
            for page in s3_listing.version_pages(
                store.client, versioned.name, "exports/", None, pool
            )
            for entry in page
        ]
    finally:
        pool.shutdown()
    assert sorted(listed) == versioned.versions("exports/")
    assert len(listed) == len(set(listed)) == 7


class FakeClient:
    """Answers ListObjectsV2 as botocore would, the raw body first to the before-parse hook:
    pages of one key, whose raw continuation token can be made to lie."""

    def __init__(self, keys: list[str], raw_token: Any) -> None:
        self.keys = keys
        self.raw_token = raw_token
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def list_objects_v2(self, **arguments: Any) -> dict[str, Any]:
        with self.lock:
            self.calls.append(arguments)
        index = int(arguments.get("ContinuationToken") or 0)
        if index >= len(self.keys):  # a token that no page of ours gave
            return {"Contents": [], "IsTruncated": False}
        truncated = index + 1 < len(self.keys)
        parsed = {
            "Contents": [{"Key": self.keys[index]}],
            "IsTruncated": truncated,
            "NextContinuationToken": str(index + 1) if truncated else None,
        }
        raw = b"<IsTruncated>" + (b"true" if truncated else b"false") + b"</IsTruncated>"
        if truncated:
            token = self.raw_token(index + 1).encode()
            raw += b"<NextContinuationToken>" + token + b"</NextContinuationToken>"
        on_raw_response({"status_code": 200, "body": raw})
        return parsed


def listed_keys(client: FakeClient) -> tuple[list[str], PageChain]:
    with ThreadPoolExecutor(2) as pool:
        chain = PageChain(client, "ListObjectsV2", pool)
        keys = [
            item["Key"]
            for response in chain.pages({"Bucket": "b", "Prefix": "p/"})
            for item in response["Contents"]
        ]
    return keys, chain


def test_early_requests_are_used_when_the_parsed_page_agrees() -> None:
    client = FakeClient(["p/a", "p/b", "p/c", "p/d"], raw_token=str)
    keys, chain = listed_keys(client)
    assert keys == ["p/a", "p/b", "p/c", "p/d"]
    assert len(client.calls) == 4
    assert chain.used_ahead == 3


def test_an_early_request_the_parsed_page_contradicts_is_not_used() -> None:
    """The raw body names another token than the parsed page: that early request is dropped
    (its answer unread) and the request the parsed page names is sent; no page is lost or
    read twice."""
    client = FakeClient(["p/a", "p/b", "p/c"], raw_token=lambda index: f"{index + 1}")
    keys, chain = listed_keys(client)
    assert keys == ["p/a", "p/b", "p/c"]
    assert chain.used_ahead == 0
    tokens = [call.get("ContinuationToken") for call in client.calls]
    assert {None, "1", "2"} <= set(tokens)


def test_raw_fields_read_what_botocore_would() -> None:
    body = (
        b"<ListVersionsResult><IsTruncated>true</IsTruncated>"
        b"<NextKeyMarker>a &amp; b&#39;s &lt;key&gt;</NextKeyMarker>"
        b"<NextVersionIdMarker>v1</NextVersionIdMarker></ListVersionsResult>"
    )
    assert raw_fields("ListObjectVersions", body) == {
        "IsTruncated": True,
        "NextKeyMarker": "a & b's <key>",
        "NextVersionIdMarker": "v1",
    }
    assert raw_fields("ListObjectsV2", b"<IsTruncated>false</IsTruncated>") == {
        "IsTruncated": False
    }
    assert raw_fields("ListObjectsV2", b"<Error><Code>SlowDown</Code></Error>") is None


def test_other_requests_of_the_client_are_left_alone(bucket: Bucket) -> None:
    """A client with the hook registered, listing by itself (not through a PageChain): one
    request per page, none sent ahead."""
    register(bucket.client)
    sent: list[str] = []
    bucket.client.meta.events.register(
        "before-call.s3.ListObjectsV2", lambda **_: sent.append("sent")
    )
    bucket.put("exports/a.csv", "exports/b.csv", "exports/c.csv")
    pages = bucket.client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket.name, PaginationConfig={"PageSize": 1}
    )
    assert sum(len(page.get("Contents", [])) for page in pages) == 3
    assert len(sent) == 3
