"""A batch's leaves, hashed in one call by the compiled module (retention/audit/_leaves.c) or
record by record from Python, are the leaves docs/audit.md specifies for each record."""

from __future__ import annotations

import hashlib
import os
import random
from datetime import date, datetime
from decimal import Decimal
from types import ModuleType
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.audit import leaves as leaves_module
from retention.audit.leaves import LEAF_PERSON, RecordHasher, leaf_key, record_leaf

AUDIT_KEY = b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


def _expected(version: int, store: str, dataset: str, keys: list[tuple[object, ...]]) -> list:
    return sorted(record_leaf(AUDIT_KEY, store, dataset, key, version) for key in keys)


@pytest.fixture(params=["compiled", "python"])
def hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the compiled module and without it (as where it was not built)."""
    if request.param == "compiled":
        _compiled()
    else:
        monkeypatch.setattr(leaves_module, "_native", None)
    return str(request.param)


def _compiled() -> ModuleType:
    """The compiled module; where it was not built, skip with what to run, except under
    ``CI=true`` (as for the database servers): a missing compiler would otherwise fall back
    silently to the slower Python hashing."""
    try:
        from retention.audit import _leaves
    except ImportError:
        message = "retention/audit/_leaves.c is not built: run make setup (gcc, Python headers)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return _leaves


def test_the_compiled_module_is_built_by_setup() -> None:
    _leaves = _compiled()
    leaf = _leaves.blake2s_leaves(leaf_key(AUDIT_KEY), LEAF_PERSON, b"app/clients/", b"42")
    # docs/audit.md's test vector.
    assert [item.hex() for item in leaf] == [
        "622eb8eb8aba94100b4c75a70450e280bef3b22bfb494d655fd0f79351e90e8a"
    ]


@pytest.mark.parametrize(
    "keys",
    [
        [(42,)],
        [(value,) for value in range(-3, 5000, 7)],
        [(2**80,), (-(2**70),), (0,)],
        [(True,), (1,), (False,)],
        [("a/b",), ("a", "b"), ("héllo wörld",), ("line\nbreak",), ("100%",)],
        [(1, datetime(2026, 1, 2, 3, 4, 5, 6)), (2, date(2026, 1, 2)), (3, "x")],
        [(Decimal("1.50"),), (UUID(int=7),), (b"\x00\xff",)],
        [(1,), ("1",), (1.5,)],
    ],
)
def test_a_batch_holds_each_records_leaf_sorted(
    hashing: str, keys: list[tuple[object, ...]]
) -> None:
    hasher = RecordHasher(AUDIT_KEY, 3)
    assert hasher.leaves("app", "clients", keys) == _expected(3, "app", "clients", keys)


@pytest.mark.parametrize("dataset", ["odd\ntable", "t" * 100, ""])
def test_names_of_any_length_and_a_newline_in_a_table_name(hashing: str, dataset: str) -> None:
    keys: list[tuple[object, ...]] = [(1,), (22,), ("a\nb",), (3, 4)]
    for version in (1, 2, 3):
        hasher = RecordHasher(AUDIT_KEY, version)
        assert hasher.leaves("db", dataset, keys) == _expected(version, "db", dataset, keys)


def test_no_keys_no_leaves(hashing: str) -> None:
    assert RecordHasher(AUDIT_KEY, 3).leaves("db", "t", []) == []


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=1, max_size=32),
    person=st.binary(max_size=8),
    prefix=st.binary(max_size=200).map(lambda data: data.replace(b"\n", b" ")),
    lines=st.lists(
        st.binary(max_size=200).map(lambda data: data.replace(b"\n", b" ")),
        min_size=1,
        max_size=8,
    ),
)
def test_the_compiled_blake2s_is_hashlibs_across_block_boundaries(
    key: bytes, person: bytes, prefix: bytes, lines: list[bytes]
) -> None:
    _leaves = _compiled()
    expected = sorted(
        hashlib.blake2s(prefix + line, key=key, person=person).digest() for line in lines
    )
    assert _leaves.blake2s_leaves(key, person, prefix, b"\n".join(lines)) == expected


def test_the_compiled_module_refuses_a_key_blake2s_cannot_take() -> None:
    _leaves = _compiled()
    with pytest.raises(ValueError, match="key"):
        _leaves.blake2s_leaves(b"k" * 33, LEAF_PERSON, b"", b"1")
    with pytest.raises(ValueError, match="key"):
        _leaves.blake2s_leaves(b"", LEAF_PERSON, b"", b"1")
    with pytest.raises(ValueError, match="person"):
        _leaves.blake2s_leaves(b"k", b"123456789", b"", b"1")


@pytest.mark.parametrize("count", [1, 2, 3, 300, 5000])
def test_the_compiled_sort_orders_leaves_that_share_their_first_bytes(count: int) -> None:
    """Its radix sort orders leaves by their first 8 bytes; leaves that share them (2^-64 for
    hashes, made here on purpose) are put in order by the full comparison after it."""
    _leaves = _compiled()
    generator = random.Random(count)
    leaves = [generator.randbytes(32) for _ in range(count)]
    # Leaves sharing their first 8 bytes and differing after, given in the wrong order.
    shared = generator.randbytes(8)
    leaves += [shared + bytes([255 - tail]) * 24 for tail in range(3)]
    leaves += leaves[: count // 3]  # and repeats
    data = _leaves.sorted_leaves(b"".join(leaves))
    assert [data[index : index + 32] for index in range(0, len(data), 32)] == sorted(leaves)


@given(
    key=st.binary(min_size=1, max_size=32),
    prefix=st.binary(max_size=80).filter(lambda prefix: b"\n" not in prefix),
    lines=st.lists(
        st.binary(max_size=140).filter(lambda line: b"\n" not in line), min_size=1, max_size=8
    ),
)
@settings(max_examples=60, deadline=None)
def test_the_compiled_packed_leaves_are_the_leaves_in_the_lines_order(
    key: bytes, prefix: bytes, lines: list[bytes]
) -> None:
    """``blake2s_packed`` gives hashlib's leaves in the lines' order, joined; sorted by
    ``sorted_leaves`` they are ``blake2s_leaves``'s."""
    _leaves = _compiled()
    joined = b"\n".join(lines)
    packed = _leaves.blake2s_packed(key, LEAF_PERSON, prefix, joined)
    expected = [
        hashlib.blake2s(prefix + line, key=key, person=LEAF_PERSON).digest() for line in lines
    ]
    assert packed == b"".join(expected)
    sorted_packed = _leaves.sorted_leaves(packed)
    assert sorted_packed == b"".join(_leaves.blake2s_leaves(key, LEAF_PERSON, prefix, joined))
    with pytest.raises(ValueError, match="key"):
        _leaves.blake2s_packed(b"", LEAF_PERSON, prefix, joined)


@pytest.mark.parametrize("count", [0, 1, 2, 65, 300])
def test_the_compiled_module_counts_the_repeated_leaves(count: int) -> None:
    _leaves = _compiled()
    generator = random.Random(count)
    leaves = sorted(generator.randbytes(32) for _ in range(count))
    assert _leaves.repeated_leaves(b"".join(leaves)) == 0
    if count:
        twice = sorted(leaves + leaves[: (count + 1) // 2])
        assert _leaves.repeated_leaves(b"".join(twice)) == (count + 1) // 2
    with pytest.raises(ValueError, match="32 bytes"):
        _leaves.repeated_leaves(b"x" * 33)


@given(st.lists(st.integers(), min_size=1, max_size=50))
def test_integer_keys_are_spelled_as_str_spells_them(values: list[int]) -> None:
    keys = [(value,) for value in values]
    spelled = "\n".join(str(value) for value in values).encode()
    assert leaves_module.integer_key_lines(keys) == spelled
    assert leaves_module.integer_key_lines([*keys, (True,)]) is None
    assert leaves_module.integer_key_lines([*keys, (1, 2)]) is None
