"""A record's leaf in the trail: the keyed hash of its locator (``store/dataset/key``), made
once per purged record, and the Merkle root a batch's sorted leaves give.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import date, datetime

from retention.anonymise import record_locator
from retention.audit.entries import LEAVES_PER_CHUNK
from retention.audit.merkle import chunked_root


def record_leaf(hmac_key: bytes, store: str, dataset: str, key: Sequence[object]) -> bytes:
    """Given the audit HMAC key and a record's locator, return its 32-byte leaf.

    Example: ``record_leaf(k, "app", "clients", (42,))`` is HMAC-SHA256(k, "app/clients/42").
    """
    return hmac.digest(hmac_key, record_locator(store, dataset, key).encode(), "sha256")


def leaves_root(leaves: Sequence[bytes]) -> str:
    """Given a batch's sorted leaves, return the hex leaves_root an entry written now records."""
    return chunked_root(leaves, LEAVES_PER_CHUNK).hex()


def subject_digest(hmac_key: bytes, subject: str) -> str:
    """Given the audit HMAC key and an erasure request's subject, return the hex HMAC that
    stands for that person in the trail: whoever holds the key can check that a request for
    that subject was carried out; nobody else learns who it was.

    Example: ``subject_digest(k, "alice@example.com")`` is HMAC-SHA256(k,
    "erasure-subject:alice@example.com"), in hex.
    """
    return hmac.digest(hmac_key, f"erasure-subject:{subject}".encode(), "sha256").hex()


class RecordHasher:
    """HMAC-SHA256 of many record locators under one key, the same bytes as ``record_leaf``.

    This runs once per purged record, before the DELETE: re-keying HMAC for each record costs
    more than the hash itself, so the keyed inner and outer SHA-256 states (RFC 2104) are made
    once and copied.
    """

    def __init__(self, hmac_key: bytes) -> None:
        block = hmac_key if len(hmac_key) <= 64 else hashlib.sha256(hmac_key).digest()
        block = block.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in block))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in block))

    def leaves(self, store: str, dataset: str, keys: Sequence[Sequence[object]]) -> list[bytes]:
        """Given a store, a dataset and record keys, return their leaves, sorted."""
        inner, outer = self._inner, self._outer
        prefix = f"{store}/{dataset}/"
        leaves = []
        for key in keys:
            message = inner.copy()
            if len(key) == 1 and type(key[0]) is int:
                # The usual integer id, spelled as record_locator spells it, without its loop.
                message.update(f"{prefix}{key[0]}".encode())
            elif len(key) == 2 and type(key[0]) is int and _plain_time(key[1]):
                # An id and a naive time (a partitioned table's key): str() of either holds only
                # digits, "-", ".", " " and ":", which record_locator's quote() spells so.
                time_text = str(key[1]).replace(" ", "%20").replace(":", "%3A")
                message.update(f"{prefix}{key[0]}/{time_text}".encode())
            else:
                message.update(record_locator(store, dataset, key).encode())
            digest = outer.copy()
            digest.update(message.digest())
            leaves.append(digest.digest())
        leaves.sort()
        return leaves


def leaves_text(leaves: Sequence[bytes]) -> bytes:
    """Given leaves, return the leaves file's bytes: each in hex on its own line."""
    joined = b"".join(leaves)
    if len(joined) == 32 * len(leaves):
        # One hex conversion for the whole batch instead of one per leaf.
        return (joined.hex("\n", 32) + "\n").encode() if leaves else b""
    return "".join(f"{leaf.hex()}\n" for leaf in leaves).encode()


def _plain_time(value: object) -> bool:
    kind = type(value)
    return kind is date or (kind is datetime and value.tzinfo is None)  # type: ignore[attr-defined]
