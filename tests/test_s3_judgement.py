"""The judgement of listed S3 versions, without a server: a key listed with a single version or
delete marker (every key of an unversioned bucket) takes a shorter path, which must come to the
very verdict the general one does."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from retention.config import parse_config
from retention.holds import Hold
from retention.rules import compile_date_pattern
from retention.selection import Selection, make_selection
from retention.stores.s3_judgement import verdict_of, verdict_of_many, verdict_of_one
from retention.stores.s3_listing import Entry, Group, Item, Scope

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")

CONFIG = """
[settings]
timezone = "UTC"

[stores.content]
kind = "s3"
bucket = "content"
endpoint_url = "http://127.0.0.1:1"
region = "us-east-1"

[audit]
enabled = false

[state]
url = "sqlite:///state.sqlite"

[[rules]]
name = "exports"
store = "content"
prefix = "exports/"
period = "7d"
{clock}
"""


def selection_for(clock: str, holds: tuple[Hold, ...]) -> Selection:
    config = parse_config(CONFIG.format(clock=clock).encode())
    selection = make_selection(config.rules[0], AS_OF, UTC_ZONE)
    return Selection(**{**vars(selection), "holds": holds})


def hold_on(key: str) -> Hold:
    return Hold(
        id=1,
        rule="exports",
        kind="prefix",
        reason="case 7",
        created_at=AS_OF - timedelta(days=1),
        created_by="test",
        prefix=key,
    )


KEYS = ("exports/2026-11-01.csv", "exports/2026-11-22.csv", "exports/2026-12-30.csv", "exports/x")
MODIFIED = (AS_OF - timedelta(days=30), AS_OF - timedelta(days=1), AS_OF + timedelta(days=3))


@pytest.mark.parametrize("key_date", [False, True], ids=["last-modified", "key-date"])
def test_a_key_with_one_version_or_marker_gets_the_general_verdict(key_date: bool) -> None:
    clock = 'clock = "key_date"\ndate_pattern = "%Y-%m-%d"' if key_date else ""
    pattern = compile_date_pattern("%Y-%m-%d") if key_date else None
    scope = Scope(prefix="exports/", relative_from=0, pattern=pattern, cross=False)
    compared = 0
    for key, modified, marker, latest, locked, held in itertools.product(
        KEYS, MODIFIED, (False, True), (False, True), (False, True), (False, True)
    ):
        entry = Entry(key, "v1", modified, marker, latest, 10, '"etag"')
        item = Item(
            "group",
            ("key", key),
            Group(key, (entry,)),
            locked=frozenset({"v1"}) if locked and not marker else frozenset(),
        )
        selection = selection_for(clock, (hold_on(key),) if held else ())
        assert verdict_of_one(selection, scope, item, UTC_ZONE) == verdict_of_many(
            selection, scope, item, UTC_ZONE
        ), (key, modified, marker, latest, locked, held)
        compared += 1
    assert compared == len(KEYS) * len(MODIFIED) * 16


def test_a_key_with_several_versions_takes_the_general_path() -> None:
    scope = Scope(prefix="exports/", relative_from=0, pattern=None, cross=False)
    old = AS_OF - timedelta(days=30)
    entries = (
        Entry("exports/a", "v2", old, True, True),
        Entry("exports/a", "v1", old, False, False, 10, '"etag"'),
    )
    item = Item("group", ("key", "exports/a"), Group("exports/a", entries))
    verdict = verdict_of(selection_for("", ()), scope, item, UTC_ZONE)
    assert (verdict.due, verdict.in_scope) == (list(entries), 2)
