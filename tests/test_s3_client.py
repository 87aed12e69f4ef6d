"""The S3 store's clients read the timestamps of S3's responses with the standard library where
they can (every LastModified of a listing), and get what botocore's own parser would give."""

from __future__ import annotations

import os
from datetime import UTC

import botocore  # type: ignore[import-untyped]
import pytest
from botocore.utils import parse_timestamp  # type: ignore[import-untyped]

from retention.stores.s3 import open_s3_store, s3_session
from retention.stores.s3_client import timestamp_of
from tests.test_s3_store import new_bucket, refuse_other_stores, store_config

FORMS = [
    "2026-12-03T03:59:06.000Z",  # S3's listings
    "2026-12-03T03:59:06Z",
    "2026-12-03T03:59:06.123456+02:00",
    "2026-12-03T03:59:06",  # no offset: botocore's reading (naive)
    "Thu, 03 Dec 2026 03:59:06 GMT",  # HTTP dates (headers)
    "1764734346",  # epoch seconds
    1764734346,
]


@pytest.mark.parametrize("value", FORMS, ids=[str(form) for form in FORMS])
def test_timestamp_of_reads_each_form_as_botocore_does(value: object) -> None:
    expected = parse_timestamp(value)
    parsed = timestamp_of(value)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


def test_a_stores_client_reads_a_listings_timestamps_with_timestamp_of(s3_server: str) -> None:
    bucket = new_bucket(s3_server)
    bucket.put("exports/a.csv")
    store = open_s3_store(store_config(bucket), read_only=True, store_for=refuse_other_stores)
    try:
        listed = store.client.list_objects_v2(Bucket=bucket.name)["Contents"][0]["LastModified"]
    finally:
        store.close()
    # botocore's parser gives dateutil's tzutc(); the standard library's gives datetime.UTC.
    assert listed.tzinfo is UTC
    assert (
        listed == bucket.client.list_objects_v2(Bucket=bucket.name)["Contents"][0]["LastModified"]
    )


def test_the_s3_stores_of_a_process_share_one_botocore_data_loader(s3_server: str) -> None:
    # Each session parsing S3's service model and endpoint rules again cost the second store
    # of the demo as much start-up time as the first (docs/performance.md, start-up).
    first = s3_session(store_config(new_bucket(s3_server)))
    second = s3_session(store_config(new_bucket(s3_server)))

    assert first is not second, "a session per store: their credentials are their own"
    assert first.get_component("data_loader") is second.get_component("data_loader")


def test_the_data_loader_looks_in_s3s_folders_alone_and_finds_its_models(
    s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore's own answer to "which services have a service model" listed the folders of
    # every service it knows (some 450, a listing and a few stats each) before it loaded S3's.
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str) -> list[str]:
        listed.append(os.path.relpath(path, os.path.dirname(botocore.__file__)))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    loader = s3_session(store_config(new_bucket(s3_server))).get_component("data_loader")
    loader._cache.clear()  # shared by every session of the process: start from nothing

    assert loader.list_available_services("service-2") == ["s3"]
    assert loader.list_available_services("endpoint-rule-set-1") == ["s3"]
    assert loader.list_available_services("no-such-kind-1") == []
    assert "s3" in loader.load_service_model("s3", "service-2")["metadata"]["endpointPrefix"]
    assert listed, "botocore's data folder was not read"
    assert all(path.startswith("data/s3") for path in listed if path.startswith("data")), listed
