"""Trail format 2 (issue 17): a batch's leaves_root is the RFC 6962 root over chunks of 64
sorted leaves, so the tree costs one SHA-256 per 64 records. Trails of format 1 (one tree leaf
per record) still verify and prove, alone or continued in format 2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from retention.audit import leaves as leaves_module
from retention.audit import trail as trail_module
from retention.audit.bundle import check_bundle, make_bundle
from retention.audit.entries import LEAVES_PER_CHUNK, leaves_path, read_entries
from retention.audit.entry_checks import load_verification_keys
from retention.audit.merkle import (
    chunked_inclusion_proof,
    chunked_root,
    merkle_root,
    verify_chunked_inclusion,
)
from retention.audit.prove import prove_record
from tests.support import plan_and_run
from tests.test_audit_verify import (
    FIRST_RUN,
    RULES,
    SECOND_RUN,
    Trail,
    assert_invalid,
    create_database,
    customer_code,
    make_config,
    verify,
)


def leaves(count: int) -> list[bytes]:
    return sorted(hashlib.sha256(str(number).encode()).digest() for number in range(count))


@pytest.mark.parametrize("size", [1, 2, 63, 64, 65, 128, 129, 200])
def test_every_leaf_of_a_chunked_tree_has_a_proof_that_verifies(size: int) -> None:
    batch = leaves(size)
    root = chunked_root(batch, LEAVES_PER_CHUNK)
    chunks = [b"".join(batch[start : start + 64]) for start in range(0, size, 64)]
    assert root == merkle_root(chunks)
    for index in range(size):
        chunk, path = chunked_inclusion_proof(batch, index, LEAVES_PER_CHUNK)
        assert batch[index] in chunk
        assert verify_chunked_inclusion(batch[index], index, size, chunk, path, root, 64)
        assert not verify_chunked_inclusion(b"\x00" * 32, index, size, chunk, path, root, 64)
    if size > 1:
        chunk, path = chunked_inclusion_proof(batch, 0, LEAVES_PER_CHUNK)
        altered = (chunk[0], b"\x01" * 32, *chunk[2:])
        assert not verify_chunked_inclusion(batch[0], 0, size, altered, path, root, 64)
        assert not verify_chunked_inclusion(batch[0], 0, size, chunk[:-1], path, root, 64)


def test_one_leaf_per_chunk_is_format_1() -> None:
    batch = leaves(77)
    assert chunked_root(batch, 1) == merkle_root(batch)
    assert chunked_root(batch, 64) != merkle_root(batch)


def test_a_trail_of_format_1_continued_in_format_2_verifies_and_proves_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=tmp_path / "audit")
    with monkeypatch.context() as old:
        # What a writer of format 1 wrote: v 1, one tree leaf per record.
        old.setattr(trail_module, "FORMAT_VERSION", 1)
        old.setattr(leaves_module, "LEAVES_PER_CHUNK", 1)
        first = plan_and_run(config, FIRST_RUN)[1]
    second = plan_and_run(config, SECOND_RUN)[1]
    built = Trail(tmp_path, url, config, (first, second))
    entries = [stored.content for stored in read_entries(built.directory)]
    versions = {entry["v"] for entry in entries}
    assert versions == {1, 2}
    assert verify(built).valid, verify(built).problem

    keys = load_verification_keys(built.keys_file)
    proven_versions = set()
    for number in range(1, 40):
        search = prove_record(
            built.directory, built.hmac_key, "db", "customers", [customer_code(number)]
        )
        for proof in search.proofs:
            version = entries[proof.seq]["v"]
            proven_versions.add(version)
            assert proof.verified
            assert bool(proof.chunk) == (version == 2)
            checked = check_bundle(make_bundle(built.directory, search, proof), keys)
            assert checked.leaf == proof.leaf.hex()
    assert proven_versions == {1, 2}


def test_a_changed_leaf_of_a_format_2_batch_is_pinned_on_its_intent(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=tmp_path / "audit")
    plan_and_run(config, FIRST_RUN)
    built = Trail(tmp_path, url, config, ())
    intent = next(
        stored.content
        for stored in read_entries(built.directory)
        if stored.content["type"] == "batch.intent" and stored.content["selected"] > 1
    )
    assert intent["v"] == 2
    path = leaves_path(built.directory, intent["seq"])
    lines = path.read_bytes().splitlines()
    # A leaf swapped for another that keeps the file sorted: only the root can tell.
    last = bytes.fromhex(lines[-1].decode())
    lines[-1] = (int.from_bytes(last, "big") + 1).to_bytes(32, "big").hex().encode()
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    assert_invalid(verify(built), intent["seq"], "Merkle root of its leaves file")
