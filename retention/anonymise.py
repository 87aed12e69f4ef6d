"""Pure anonymisation strategies, one per column, and the keyed hash used wherever a value must be
shown or kept without being revealed (plan samples, the ``hash`` strategy). No I/O here."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from urllib.parse import quote

StrategyKind = Literal["null", "fixed", "hash", "mask_email", "truncate_ip", "year_only"]
STRATEGY_KINDS: tuple[StrategyKind, ...] = (
    "null",
    "fixed",
    "hash",
    "mask_email",
    "truncate_ip",
    "year_only",
)
FixedValue = str | int | float | bool


HASH_LENGTH = 64
SHORTEST_HASH = 8


@dataclass(frozen=True)
class Strategy:
    """How one column is anonymised; ``value`` is only used by ``fixed``, ``hash_length`` (hex
    characters kept, 8 to 64) only by ``hash``."""

    kind: StrategyKind
    value: FixedValue | None = None
    hash_length: int = HASH_LENGTH

    def describe(self) -> str:
        """Given a strategy, return it as written in the config: ``"hash:16"``, ``"null"``."""
        if self.kind == "hash" and self.hash_length != HASH_LENGTH:
            return f"hash:{self.hash_length}"
        return self.kind


def parse_strategy(raw: object) -> Strategy:
    """Given a strategy as written in the config, return it; raise ValueError when it is unknown.

    Example: ``parse_strategy("mask_email")`` returns ``Strategy("mask_email")``,
    ``parse_strategy("hash:16")`` returns ``Strategy("hash", hash_length=16)`` and
    ``parse_strategy({"fixed": "n/a"})`` returns ``Strategy("fixed", "n/a")``.
    """
    if isinstance(raw, str):
        for kind in STRATEGY_KINDS:
            if raw == kind and kind != "fixed":
                return Strategy(kind)
        digits = raw.removeprefix("hash:")
        if digits != raw:
            if (
                digits.isascii()
                and digits.isdigit()
                and SHORTEST_HASH <= int(digits) <= HASH_LENGTH
            ):
                return Strategy("hash", hash_length=int(digits))
            raise ValueError(
                f"{raw!r}: a truncated hash keeps {SHORTEST_HASH} to {HASH_LENGTH} hex "
                'characters, such as "hash:16"'
            )
    if isinstance(raw, dict) and set(raw) == {"fixed"}:
        value = raw["fixed"]
        if isinstance(value, str | int | float | bool):
            return Strategy("fixed", value)
    raise ValueError(
        f"unknown anonymise strategy {raw!r}; use one of 'null', 'hash', 'hash:N', "
        "'mask_email', 'truncate_ip', 'year_only', or { fixed = <value> }"
    )


def keyed_hash(key: bytes, text: str) -> str:
    """Given a secret key and a text, return HMAC-SHA256 of the text as 64 hex digits.

    Example: ``keyed_hash(b"k", "app/users/42")`` returns a stable 64-character hex string that
    reveals nothing about ``42`` to someone without the key.
    """
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def record_locator(store: str, dataset: str, key: Sequence[object]) -> str:
    """Given a store, a dataset and a record's key, return the text that names the record.

    Key parts are percent-encoded, so ``("a/b",)`` and ``("a", "b")`` stay apart. Example:
    ``record_locator("app", "clients", (42,))`` returns ``"app/clients/42"``.
    """
    # Integers need no encoding (and this runs once per purged record).
    parts = (str(part) if isinstance(part, int) else quote(str(part), safe="") for part in key)
    return "/".join([store, dataset, *parts])


def mask_email(value: str) -> str:
    """Given an e-mail address, return it with the local part masked.

    Example: ``mask_email("jane.doe@example.com")`` returns ``"j***@example.com"``; a value that
    is not an address returns ``"***"``.
    """
    local, separator, domain = value.strip().rpartition("@")
    if not separator or not local or not domain:
        return "***"
    return f"{local[0]}***@{domain}"


def truncate_ip(value: str) -> str | None:
    """Given an IP address, return its network: IPv4 to /24, IPv6 to /48.

    Example: ``truncate_ip("192.0.2.77")`` returns ``"192.0.2.0"`` and
    ``truncate_ip("2001:db8:1:2::5")`` returns ``"2001:db8:1::"``; a value that is not an address
    returns None, since keeping it could keep personal data.
    """
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def year_only(value: date | datetime | str) -> date | datetime | str | None:
    """Given a date (or datetime, or ISO date text), return the first day of its year.

    Example: ``year_only(date(1984, 7, 14))`` returns ``date(1984, 1, 1)``.
    """
    if isinstance(value, datetime):
        return value.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if isinstance(value, date):
        return value.replace(month=1, day=1)
    text = value.strip()
    if len(text) >= 4 and text[:4].isdigit():
        return f"{text[:4]}-01-01"
    return None


def anonymise_value(strategy: Strategy, value: object, *, hash_key: bytes | None) -> object:
    """Given a strategy and a column's current value, return the value to store instead.

    NULL stays NULL. Example: ``anonymise_value(Strategy("truncate_ip"), "192.0.2.77",
    hash_key=None)`` returns ``"192.0.2.0"``.
    """
    if value is None or strategy.kind == "null":
        return None
    if strategy.kind == "fixed":
        return strategy.value
    if strategy.kind == "hash":
        if hash_key is None:
            raise ValueError("the hash strategy needs a hash key (settings.hash_key_file)")
        return keyed_hash(hash_key, str(value))[: strategy.hash_length]
    if strategy.kind == "mask_email":
        return mask_email(str(value))
    if strategy.kind == "truncate_ip":
        return truncate_ip(str(value))
    if isinstance(value, date | str):
        return year_only(value)
    return None
