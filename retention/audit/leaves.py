"""A record's leaf in the trail: the keyed hash of its locator (``store/dataset/key``), made
once per purged record, and the Merkle root a batch's sorted leaves give.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from itertools import islice, repeat
from operator import eq
from typing import Any, overload

from retention.anonymise import record_locator
from retention.audit.entries import FORMAT_VERSION, leaves_per_chunk
from retention.audit.merkle import chunked_root, packed_chunked_root
from retention.errors import AuditFailure
from retention.wording import counted

try:
    from retention.audit import _leaves as _native
except ImportError:  # not compiled (setup.py): the same leaves, hashed from Python
    _native = None  # type: ignore[assignment]

# Format 3's record leaf: keyed BLAKE2s-256, personalised so that its bytes can never be those
# of another use of the audit key. BLAKE2s takes a key of at most 32 bytes: its key is derived
# from the audit key (of any length) by HMAC-SHA256 over a label of its own.
LEAF_PERSON = b"rtnleaf3"
KEY_LABEL = b"retention record leaf key, format 3"
# What a record's leaf is, by the format version of the entry that holds it.
LEAF_FUNCTIONS = {1: "HMAC-SHA256", 2: "HMAC-SHA256", 3: "keyed BLAKE2s-256"}


def leaf_key(hmac_key: bytes) -> bytes:
    """Given the audit HMAC key, return the 32-byte key of format 3's record leaves.

    Example: ``leaf_key(k)`` is HMAC-SHA256(k, "retention record leaf key, format 3"), for a
    key of any length.
    """
    return hmac.digest(hmac_key, KEY_LABEL, "sha256")


def record_leaf(
    hmac_key: bytes,
    store: str,
    dataset: str,
    key: Sequence[object],
    version: int = FORMAT_VERSION,
) -> bytes:
    """Given the audit HMAC key, a record's locator and a trail format version (that of the
    entry whose leaves hold it; by default the format written now), return its 32-byte leaf.

    Example: ``record_leaf(k, "app", "clients", (42,), 2)`` is HMAC-SHA256(k,
    "app/clients/42"); in format 3 it is BLAKE2s-256("app/clients/42") keyed with
    ``leaf_key(k)``, personalisation ``rtnleaf3``. ValueError for an unknown version.
    """
    locator = record_locator(store, dataset, key).encode()
    if version == 3:
        return hashlib.blake2s(locator, key=leaf_key(hmac_key), person=LEAF_PERSON).digest()
    if version in (1, 2):
        return hmac.digest(hmac_key, locator, "sha256")
    raise ValueError(f"no record leaf is defined for trail format {version!r}")


# Every leaf's size, in every format (SHA-256 or BLAKE2s-256).
LEAF_SIZE = 32


class PackedLeaves(Sequence[bytes]):
    """A batch's sorted leaves held as one bytes object, ``LEAF_SIZE`` bytes each: a whole
    partition's leaves (about 85,000) go from their hash to their root and their file
    without an object per leaf (making, sorting, joining and checking those cost more than
    hashing them). As a sequence, each leaf is its 32 bytes."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        if len(data) % LEAF_SIZE:
            raise ValueError(f"leaves of {LEAF_SIZE} bytes each")
        self.data = data

    def __len__(self) -> int:
        return len(self.data) // LEAF_SIZE

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[position] for position in range(*index.indices(len(self)))]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(index)
        return self.data[index * LEAF_SIZE : (index + 1) * LEAF_SIZE]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedLeaves):
            return self.data == other.data
        if isinstance(other, Sequence) and not isinstance(other, bytes | str):
            return len(other) == len(self) and all(map(eq, self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def leaves_root(leaves: Sequence[bytes], version: int = FORMAT_VERSION) -> str:
    """Given a batch's sorted leaves and the format of the entry that records them, return its
    hex leaves_root: the RFC 6962 root over single leaves in format 1, over chunks of
    ``LEAVES_PER_CHUNK`` leaves since format 2."""
    per_chunk = leaves_per_chunk({"v": version})
    if isinstance(leaves, PackedLeaves):
        return packed_chunked_root(leaves.data, LEAF_SIZE, per_chunk).hex()
    return chunked_root(leaves, per_chunk).hex()


def subject_digest(hmac_key: bytes, subject: str) -> str:
    """Given the audit HMAC key and an erasure request's subject, return the hex HMAC that
    stands for that person in the trail: whoever holds the key can check that a request for
    that subject was carried out; nobody else learns who it was.

    Example: ``subject_digest(k, "alice@example.com")`` is HMAC-SHA256(k,
    "erasure-subject:alice@example.com"), in hex.
    """
    return hmac.digest(hmac_key, f"erasure-subject:{subject}".encode(), "sha256").hex()


class RecordHasher:
    """The leaves of many record locators under one key, the same bytes as ``record_leaf`` of
    the same format version.

    This runs once per purged record, before the COMMIT: keying a hash for each record costs more
    than the hash itself, so the keyed state is made once and copied: format 3's keyed BLAKE2s
    state, or the keyed inner and outer SHA-256 states of HMAC (RFC 2104) in formats 1 and 2.
    """

    def __init__(self, hmac_key: bytes, version: int = FORMAT_VERSION) -> None:
        self.version = version
        self._outer: Any = None
        self._key = leaf_key(hmac_key)
        if version == 3:
            self._state: Any = hashlib.blake2s(key=self._key, person=LEAF_PERSON)
        elif version in (1, 2):
            block = hmac_key if len(hmac_key) <= 64 else hashlib.sha256(hmac_key).digest()
            block = block.ljust(64, b"\x00")
            self._state = hashlib.sha256(bytes(byte ^ 0x36 for byte in block))
            self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in block))
        else:
            raise ValueError(f"no record leaf is defined for trail format {version!r}")

    def leaves(
        self,
        store: str,
        dataset: str,
        keys: Sequence[Sequence[object]],
        lines: bytes | None = None,
    ) -> list[bytes]:
        """Given a store, a dataset and record keys (and, if the caller has them already,
        their ``integer_key_lines``), return their leaves, sorted."""
        if not keys:
            return []
        prefix = f"{store}/{dataset}/"
        if self._outer is None:
            return self._format3_leaves(prefix, store, dataset, keys, lines)
        copy, outer = self._state.copy, self._outer.copy
        leaves: list[bytes] = []
        append = leaves.append
        for locator in _locators(prefix, store, dataset, keys):
            inner = copy()
            inner.update(locator)
            state = outer()
            state.update(inner.digest())
            append(state.digest())
        leaves.sort()
        return leaves

    def _format3_leaves(
        self,
        prefix: str,
        store: str,
        dataset: str,
        keys: Sequence[Sequence[object]],
        lines: bytes | None = None,
    ) -> list[bytes]:
        """Given the locators' prefix, store, dataset and the records' keys (at least one),
        return their format 3 leaves, sorted.

        The compiled module (``_leaves.c``) hashes and sorts the whole batch in one call, from
        the prefix and each locator's rest, joined by newlines: a locator holds none (its key
        parts are percent-encoded) unless a store or table name does. Without it, or with
        such a name, each record is hashed from a copy of the keyed state that took the
        prefix once.
        """
        head = prefix.encode()
        if lines is None:
            lines = integer_key_lines(keys)
        rests: list[bytes] | None = None
        if lines is None:
            head, rests = b"", _locators(prefix, store, dataset, keys)
            lines = b"\n".join(rests)
        if _native is not None and b"\n" not in head and lines.count(b"\n") == len(keys) - 1:
            return _native.blake2s_leaves(self._key, LEAF_PERSON, head, lines)
        if rests is None:
            rests = lines.split(b"\n")
        state = self._state.copy()
        state.update(head)
        kind = type(state)
        # map over the hash type's own methods: three calls per record without a Python frame.
        states = list(map(kind.copy, repeat(state, len(rests))))
        deque(map(kind.update, states, rests), maxlen=0)
        leaves = list(map(kind.digest, states))
        leaves.sort()
        return leaves

    def spelled_leaves(self, store: str, dataset: str, pieces: Iterable[bytes]) -> Sequence[bytes]:
        """Given a store, a dataset and record keys spelled as the ends of their locators (what
        follows ``store/dataset/``), in pieces of lines joined by newlines, return their leaves,
        sorted (``PackedLeaves`` where the compiled module hashes them). Each piece is hashed
        as it comes, while its store reads the next (the compiled module lets go of the GIL as
        it hashes and sorts)."""
        head = f"{store}/{dataset}/".encode()
        if self._outer is None and _native is not None and b"\n" not in head:
            hashed = [
                _native.blake2s_packed(self._key, LEAF_PERSON, head, piece) for piece in pieces
            ]
            return PackedLeaves(_native.sorted_leaves(b"".join(hashed)))
        leaves: list[bytes] = []
        state = self._state.copy()
        state.update(head)
        for piece in pieces:
            rests = piece.split(b"\n")
            if self._outer is None:
                kind = type(state)
                states = list(map(kind.copy, repeat(state, len(rests))))
                deque(map(kind.update, states, rests), maxlen=0)
                leaves += map(kind.digest, states)
                continue
            for rest in rests:
                inner = state.copy()
                inner.update(rest)
                outer = self._outer.copy()
                outer.update(inner.digest())
                leaves.append(outer.digest())
        leaves.sort()
        return leaves


def _locators(
    prefix: str, store: str, dataset: str, keys: Sequence[Sequence[object]]
) -> list[bytes]:
    """Given the locators' prefix (``store/dataset/``), store, dataset and records' keys,
    return each record's locator in bytes."""
    return [
        # The usual integer id, spelled as record_locator spells it, without its loop.
        f"{prefix}{key[0]}".encode()
        if len(key) == 1 and type(key[0]) is int
        else _locator(prefix, store, dataset, key)
        for key in keys
    ]


def integer_key_lines(keys: Sequence[Sequence[object]]) -> bytes | None:
    """Given record keys, return their locators' key parts joined by newlines if every key is a
    single plain integer (the usual id), else None: one join for the batch instead of a string
    per key. Example: ``integer_key_lines([(4,), (17,)]) == b"4\\n17"``; the same digits,
    comma-separated in brackets, are the keys' JSON array."""
    if _native is not None:
        # The usual list or tuple of 1-tuples of 64-bit ints, spelled in one pass of C: a
        # tenth of the time of the lines below (1.56 ms for 10,000 keys, issue 17).
        lines = _native.integer_lines(keys)
        if lines is not None:
            return lines
    try:
        values = [value for (value,) in keys]
    except ValueError:
        return None
    if set(map(type, values)) != {int}:
        return None
    # The list's repr spells every int as str() does, ", " between them: one C call for the
    # batch, half the time of a str() per key (issue 17).
    return repr(values)[1:-1].replace(", ", "\n").encode()


def _locator(prefix: str, store: str, dataset: str, key: Sequence[object]) -> bytes:
    """Given a record's key (and its locator's prefix), return its locator's bytes."""
    if len(key) == 2 and type(key[0]) is int and _plain_time(key[1]):
        # An id and a naive time (a partitioned table's key): str() of either holds only
        # digits, "-", ".", " " and ":", which record_locator's quote() spells so.
        time_text = str(key[1]).replace(" ", "%20").replace(":", "%3A")
        return f"{prefix}{key[0]}/{time_text}".encode()
    return record_locator(store, dataset, key).encode()


def leaves_text(leaves: Sequence[bytes]) -> bytes:
    """Given leaves, return the leaves file's bytes: each in hex on its own line."""
    joined = leaves.data if isinstance(leaves, PackedLeaves) else b"".join(leaves)
    if len(joined) == 32 * len(leaves):
        # One hex conversion for the whole batch instead of one per leaf.
        return binascii.hexlify(joined, b"\n", 32) + b"\n" if leaves else b""
    return "".join(f"{leaf.hex()}\n" for leaf in leaves).encode()


def _plain_time(value: object) -> bool:
    kind = type(value)
    return kind is date or (kind is datetime and value.tzinfo is None)  # type: ignore[attr-defined]


def refuse_repeated(seq: int, leaves: Sequence[bytes]) -> None:
    """AuditFailure when a batch's sorted leaves repeat one (one record twice in a batch)."""
    if isinstance(leaves, PackedLeaves) and _native is not None:
        repeated = _native.repeated_leaves(leaves.data)
    else:
        repeated = sum(map(eq, leaves, islice(leaves, 1, None)))
    if repeated:
        raise AuditFailure(
            f"the leaves of entry {seq} repeat {counted(repeated, 'record')}: "
            "a batch names each record once"
        )
