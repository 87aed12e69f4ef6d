"""Unit tests of retention.anonymise: strategies and the keyed hash."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from retention.anonymise import (
    STRATEGY_KINDS,
    Strategy,
    anonymise_value,
    keyed_hash,
    mask_email,
    parse_strategy,
    truncate_ip,
    year_only,
)

KEY = b"test-key"
OTHER_KEY = b"another-key"


def anonymised(strategy: Strategy, value: object, hash_key: bytes | None = KEY) -> object:
    return anonymise_value(strategy, value, hash_key=hash_key)


# --- parse_strategy -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["null", "hash", "mask_email", "truncate_ip", "year_only"])
def test_parse_strategy_accepts_each_named_strategy(kind: str) -> None:
    assert parse_strategy(kind) == Strategy(kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["Client anonymisé", "", 0, 42, -1, 1.5, True, False])
def test_parse_strategy_accepts_a_fixed_scalar(value: object) -> None:
    strategy = parse_strategy({"fixed": value})

    assert strategy == Strategy("fixed", value)  # type: ignore[arg-type]
    assert type(strategy.value) is type(value)


@pytest.mark.parametrize(
    "raw",
    [
        "fixed",
        "NULL",
        "Hash",
        "scramble",
        "",
        None,
        5,
        ["null"],
        {},
        {"fixed": None},
        {"fixed": [1]},
        {"fixed": {"a": 1}},
        {"fixed": date(2020, 1, 1)},
        {"fixed": "x", "also": "y"},
        {"hash": "x"},
    ],
)
def test_parse_strategy_refuses_and_lists_the_strategies(raw: object) -> None:
    with pytest.raises(ValueError, match="unknown anonymise strategy") as caught:
        parse_strategy(raw)

    message = str(caught.value)
    for kind in STRATEGY_KINDS:
        assert kind in message
    assert "{ fixed = <value> }" in message


# --- null and fixed -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["jane@example.com", 42, date(1984, 7, 14), ""])
def test_null_strategy_erases_any_value(value: object) -> None:
    assert anonymised(Strategy("null"), value) is None


@pytest.mark.parametrize("fixed", ["Client anonymisé", 0, 7, False, True, 2.5])
def test_fixed_strategy_replaces_any_value(fixed: str | int | bool | float) -> None:
    result = anonymised(Strategy("fixed", fixed), "Jane Doe")

    assert result == fixed
    assert type(result) is type(fixed)


@pytest.mark.parametrize(
    "strategy",
    [
        Strategy("null"),
        Strategy("fixed", "n/a"),
        Strategy("fixed", 0),
        Strategy("hash"),
        Strategy("mask_email"),
        Strategy("truncate_ip"),
        Strategy("year_only"),
    ],
    ids=lambda strategy: f"{strategy.kind}-{strategy.value!r}",
)
@pytest.mark.parametrize("hash_key", [KEY, None], ids=["key", "no-key"])
def test_null_stays_null_for_every_strategy(strategy: Strategy, hash_key: bytes | None) -> None:
    assert anonymised(strategy, None, hash_key) is None


# --- hash ---------------------------------------------------------------------------------------


def test_hash_strategy_is_hmac_sha256_hex_of_the_text() -> None:
    expected = hmac.new(KEY, b"+33 6 12 34 56 78", hashlib.sha256).hexdigest()

    assert anonymised(Strategy("hash"), "+33 6 12 34 56 78") == expected
    assert keyed_hash(KEY, "+33 6 12 34 56 78") == expected


def test_hash_strategy_hashes_the_text_of_a_non_string_value() -> None:
    expected = hmac.new(KEY, b"42", hashlib.sha256).hexdigest()

    assert anonymised(Strategy("hash"), 42) == expected


def test_hash_strategy_encodes_text_as_utf8() -> None:
    expected = hmac.new(KEY, "Zoë".encode(), hashlib.sha256).hexdigest()

    assert keyed_hash(KEY, "Zoë") == expected


def test_hash_is_stable_and_depends_on_key_and_text() -> None:
    first = keyed_hash(KEY, "app/users/42")

    assert keyed_hash(KEY, "app/users/42") == first
    assert keyed_hash(OTHER_KEY, "app/users/42") != first
    assert keyed_hash(KEY, "app/users/43") != first
    assert len(first) == 64
    assert set(first) <= set("0123456789abcdef")


@pytest.mark.parametrize("length", [8, 16, 40, 64])
def test_a_truncated_hash_keeps_the_first_n_hex_characters(length: int) -> None:
    strategy = parse_strategy(f"hash:{length}")

    assert strategy == Strategy("hash", hash_length=length)
    assert strategy.describe() == ("hash" if length == 64 else f"hash:{length}")
    assert anonymised(strategy, "+33 6") == keyed_hash(KEY, "+33 6")[:length]


@pytest.mark.parametrize("raw", ["hash:7", "hash:65", "hash:0", "hash:", "hash:x", "hash:١٦"])
def test_a_truncated_hash_of_a_length_out_of_8_to_64_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="8 to 64 hex characters"):
        parse_strategy(raw)


def test_hash_is_not_a_plain_sha256() -> None:
    assert keyed_hash(KEY, "42") != hashlib.sha256(b"42").hexdigest()


def test_hash_strategy_without_a_key_refuses_to_run() -> None:
    with pytest.raises(ValueError, match="hash key"):
        anonymised(Strategy("hash"), "+33 6 12 34 56 78", hash_key=None)


# --- mask_email ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("jane.doe@example.com", "j***@example.com"),
        ("  jane.doe@example.com ", "j***@example.com"),
        ("Zoë@exemple.fr", "Z***@exemple.fr"),
        ("j@example.com", "j***@example.com"),
        ("a@b@example.com", "a***@example.com"),
        ('"odd@local"@example.com', '"***@example.com'),
        ("not an address", "***"),
        ("", "***"),
        ("@example.com", "***"),
        ("jane@", "***"),
        ("@", "***"),
    ],
)
def test_mask_email(value: str, expected: str) -> None:
    assert mask_email(value) == expected
    assert anonymised(Strategy("mask_email"), value) == expected


def test_mask_email_never_keeps_more_than_one_character_of_the_local_part() -> None:
    masked = mask_email("secret.name@example.com")

    assert "secret" not in masked
    assert "ecret" not in masked
    assert masked.endswith("@example.com")


# --- truncate_ip --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("192.0.2.77", "192.0.2.0"),
        ("192.0.2.255", "192.0.2.0"),
        (" 10.1.2.3 ", "10.1.2.0"),
        ("2001:db8:1:2::5", "2001:db8:1::"),
        ("2001:0db8:0001:ffff:ffff:ffff:ffff:ffff", "2001:db8:1::"),
        ("::1", "::"),
    ],
)
def test_truncate_ip_keeps_the_ipv4_24_or_ipv6_48_network(value: str, expected: str) -> None:
    assert truncate_ip(value) == expected
    assert anonymised(Strategy("truncate_ip"), value) == expected


def test_truncate_ip_of_an_ipv4_mapped_address_keeps_no_host_bits() -> None:
    result = truncate_ip("::ffff:192.0.2.77")

    assert result is not None
    assert "77" not in result
    assert "4d" not in result


def test_truncate_ip_of_an_ipv4_mapped_address_keeps_its_ipv4_24_network() -> None:
    assert truncate_ip("::ffff:192.0.2.77") in {"192.0.2.0", "::ffff:192.0.2.0", "::ffff:c000:200"}


@pytest.mark.parametrize(
    "value", ["", "garbage", "256.1.1.1", "192.0.2", "192.0.2.77/24", "2001:db8::g", "1.2.3.4.5"]
)
def test_truncate_ip_turns_anything_but_an_address_into_null(value: str) -> None:
    assert truncate_ip(value) is None
    assert anonymised(Strategy("truncate_ip"), value) is None


# --- year_only ----------------------------------------------------------------------------------


def test_year_only_of_a_date_is_the_first_of_january() -> None:
    assert year_only(date(1984, 7, 14)) == date(1984, 1, 1)
    assert anonymised(Strategy("year_only"), date(2024, 2, 29)) == date(2024, 1, 1)


@pytest.mark.parametrize(
    "zone", [None, UTC, timezone(timedelta(hours=2))], ids=["naive", "utc", "plus-2"]
)
def test_year_only_of_a_datetime_is_midnight_on_the_first_of_january_in_the_same_zone(
    zone: timezone | None,
) -> None:
    result = year_only(datetime(1984, 7, 14, 13, 45, 12, 345, tzinfo=zone))

    assert result == datetime(1984, 1, 1, tzinfo=zone)
    assert isinstance(result, datetime)
    assert result.tzinfo is zone


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1984-07-14", "1984-01-01"),
        (" 1984-07-14 ", "1984-01-01"),
        ("1984-07-14T13:45:00+02:00", "1984-01-01"),
        ("1984", "1984-01-01"),
    ],
)
def test_year_only_of_iso_text_is_iso_text(value: str, expected: str) -> None:
    assert year_only(value) == expected
    assert anonymised(Strategy("year_only"), value) == expected


@pytest.mark.parametrize("value", ["", "garbage", "84-07-14", "July 1984", "198"])
def test_year_only_of_text_without_a_year_is_null(value: str) -> None:
    assert year_only(value) is None
    assert anonymised(Strategy("year_only"), value) is None


@pytest.mark.parametrize("value", [1984, 1984.5, b"1984-07-14"])
def test_year_only_strategy_turns_values_that_are_not_dates_into_null(value: object) -> None:
    assert anonymised(Strategy("year_only"), value) is None
