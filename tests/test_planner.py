"""Unit tests of the pure parts of retention.planner: selections and sample pseudonyms."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from retention.config import Rule, parse_config
from retention.planner import sample_hash
from retention.rules import Expired
from retention.selection import make_selection

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
UTC_ZONE = ZoneInfo("UTC")
KEY = b"sample-key"

CONFIG = """
[stores.app]
kind = "sql"
url = "sqlite://"

[[rules]]
name = "campaigns"
store = "app"
table = "campaigns"
key = "id"
clock = "sent_at"
period = "10y"
period_column = "retention_period"
action = "delete"
"""


def campaign_rule(period_unit: str | None = None) -> Rule:
    text = CONFIG + (f'period_unit = "{period_unit}"\n' if period_unit else "")
    return parse_config(text.encode()).rules[0]


def cutoffs(overrides: tuple[tuple[object, Expired], ...]) -> dict[object, datetime]:
    return {value: expired.cutoff for value, expired in overrides}


def test_selection_without_period_values_uses_the_rule_period() -> None:
    selection = make_selection(campaign_rule(), AS_OF, UTC_ZONE)

    assert selection.default.cutoff == datetime(2016, 11, 23, 12, tzinfo=UTC)
    assert selection.default.last_date == date(2016, 11, 22)
    assert selection.overrides == ()
    assert selection.invalid_period_values == ()
    assert (selection.as_of, selection.zone) == (AS_OF, UTC_ZONE)


def test_each_period_value_gets_its_own_cutoff_on_the_policy_calendar() -> None:
    selection = make_selection(campaign_rule(), AS_OF, PARIS, ["1y", "18mo", "P2Y"])

    assert cutoffs(selection.overrides) == {
        "1y": datetime(2025, 11, 23, 12, tzinfo=UTC),
        "18mo": datetime(2025, 5, 23, 11, tzinfo=UTC),
        "P2Y": datetime(2024, 11, 23, 12, tzinfo=UTC),
    }
    assert [value for value, _ in selection.overrides] == ["1y", "18mo", "P2Y"]
    assert selection.overrides[1][1].last_date == date(2025, 5, 22)
    assert selection.default.cutoff == datetime(2016, 11, 23, 12, tzinfo=UTC)
    assert selection.invalid_period_values == ()


def test_invalid_period_values_are_kept_apart_sorted_and_never_expire_anything() -> None:
    selection = make_selection(
        campaign_rule(), AS_OF, UTC_ZONE, ["forever", "1y", "7", 7, "", "7m", "-1y"]
    )

    assert cutoffs(selection.overrides) == {"1y": datetime(2025, 11, 23, 12, tzinfo=UTC)}
    assert selection.invalid_period_values == ("", "-1y", "7", "7", "7m", "forever")


def test_with_a_period_unit_whole_numbers_are_counted_in_that_unit() -> None:
    selection = make_selection(campaign_rule("mo"), AS_OF, UTC_ZONE, [6, 24, "3"])

    assert cutoffs(selection.overrides) == {
        6: datetime(2026, 5, 23, 12, tzinfo=UTC),
        24: datetime(2024, 11, 23, 12, tzinfo=UTC),
        "3": datetime(2026, 8, 23, 12, tzinfo=UTC),
    }
    assert selection.invalid_period_values == ()


def test_with_a_period_unit_in_days_the_values_are_days() -> None:
    selection = make_selection(campaign_rule("d"), AS_OF, UTC_ZONE, [0, 90])

    assert cutoffs(selection.overrides) == {
        0: AS_OF,
        90: AS_OF - timedelta(days=90),
    }


def test_with_a_period_unit_anything_but_a_whole_number_is_invalid() -> None:
    selection = make_selection(
        campaign_rule("mo"), AS_OF, UTC_ZONE, [-6, 6.5, "forever", "1y", True]
    )

    assert selection.overrides == ()
    assert selection.invalid_period_values == ("-6", "1y", "6.5", "True", "forever")


def test_make_selection_refuses_a_naive_as_of() -> None:
    with pytest.raises(ValueError, match="as_of must be timezone-aware"):
        make_selection(campaign_rule(), datetime(2026, 11, 23, 12), UTC_ZONE)


def test_the_same_instant_in_another_offset_gives_the_same_selection() -> None:
    elsewhere = AS_OF.astimezone(timezone(timedelta(hours=-5)))

    first = make_selection(campaign_rule(), AS_OF, PARIS, ["18mo"])
    second = make_selection(campaign_rule(), elsewhere, PARIS, ["18mo"])

    assert first.default == second.default
    assert first.overrides == second.overrides


# --- sample_hash --------------------------------------------------------------------------------


def test_sample_hash_is_stable_for_the_same_record_and_key() -> None:
    assert sample_hash(KEY, "app", "users", (42,)) == sample_hash(KEY, "app", "users", (42,))


def test_sample_hash_is_16_lower_case_hex_digits() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", sample_hash(KEY, "app", "users", (42,)))


@pytest.mark.parametrize(
    ("store", "table", "key", "hash_key"),
    [
        ("app", "users", (43,), KEY),
        ("other", "users", (42,), KEY),
        ("app", "clients", (42,), KEY),
        ("app", "users", (42, 1), KEY),
        ("app", "users", (42,), b"another-key"),
    ],
)
def test_sample_hash_differs_for_another_record_or_key(
    store: str, table: str, key: tuple[object, ...], hash_key: bytes
) -> None:
    assert sample_hash(hash_key, store, table, key) != sample_hash(KEY, "app", "users", (42,))


def test_sample_hash_depends_on_the_order_of_a_composite_key() -> None:
    assert sample_hash(KEY, "app", "t", (1, 2)) != sample_hash(KEY, "app", "t", (2, 1))


@pytest.mark.parametrize(
    "key",
    [(123456,), ("alice@example.com",), ("FR76-3000-6000",), (20240229, "x")],
)
def test_sample_hash_never_shows_the_raw_key(key: tuple[object, ...]) -> None:
    pseudonym = sample_hash(KEY, "app", "users", key)

    for part in key:
        assert str(part) not in pseudonym


def test_sample_hash_keeps_key_parts_apart() -> None:
    assert sample_hash(b"k" * 32, "app", "t", ("a/b",)) != sample_hash(
        b"k" * 32, "app", "t", ("a", "b")
    )
