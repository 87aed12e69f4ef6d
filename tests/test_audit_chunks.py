"""Trail formats 2 and 3 (issue 17): a batch's leaves_root is the RFC 6962 root over chunks of
64 sorted leaves, so the tree costs one SHA-256 per 64 records; format 3's leaves are keyed
BLAKE2s. Trails of formats 1 (one tree leaf per record) and 2 still verify and prove, alone or
continued in a newer format."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from retention.audit import trail as trail_module
from retention.audit.bundle import check_bundle, make_bundle
from retention.audit.entries import LEAVES_PER_CHUNK, leaves_path, read_entries
from retention.audit.entry_checks import load_verification_keys
from retention.audit.leaves import (
    PackedLeaves,
    leaves_root,
    leaves_text,
    record_leaf,
    refuse_repeated,
)
from retention.audit.merkle import (
    chunked_inclusion_proof,
    chunked_root,
    merkle_root,
    packed_chunked_root,
    verify_chunked_inclusion,
)
from retention.audit.prove import prove_record
from retention.errors import AuditFailure
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


@pytest.mark.parametrize(("older", "newer"), [(1, 2), (1, 3), (2, 3)])
def test_a_trail_of_an_older_format_continued_in_a_newer_one_verifies_and_proves_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, older: int, newer: int
) -> None:
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=tmp_path / "audit")
    with monkeypatch.context() as old:
        # What a writer of the older format wrote: its v, its leaves (HMAC-SHA256 before
        # format 3) and its tree (one tree leaf per record in format 1).
        old.setattr(trail_module, "FORMAT_VERSION", older)
        first = plan_and_run(config, FIRST_RUN)[1]
    with monkeypatch.context() as new:
        new.setattr(trail_module, "FORMAT_VERSION", newer)
        second = plan_and_run(config, SECOND_RUN)[1]
    built = Trail(tmp_path, url, config, (first, second))
    entries = [stored.content for stored in read_entries(built.directory)]
    versions = {entry["v"] for entry in entries}
    assert versions == {older, newer}
    assert verify(built).valid, verify(built).problem

    keys = load_verification_keys(built.keys_file)
    proven_versions = set()
    for number in range(1, 40):
        code = customer_code(number)
        search = prove_record(built.directory, built.hmac_key, "db", "customers", [code])
        for proof in search.proofs:
            version = entries[proof.seq]["v"]
            proven_versions.add(version)
            assert proof.verified
            assert proof.version == version
            assert bool(proof.chunk) == (version >= 2)
            # The leaf is the one of the entry's format, and that is the one in its batch.
            assert proof.leaf == record_leaf(built.hmac_key, "db", "customers", (code,), version)
            checked = check_bundle(make_bundle(built.directory, search, proof), keys)
            assert checked.leaf == proof.leaf.hex()
    assert proven_versions == {older, newer}


@pytest.mark.parametrize("version", [2, 3])
def test_a_changed_leaf_of_a_chunked_batch_is_pinned_on_its_intent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=tmp_path / "audit")
    monkeypatch.setattr(trail_module, "FORMAT_VERSION", version)
    plan_and_run(config, FIRST_RUN)
    built = Trail(tmp_path, url, config, ())
    intent = next(
        stored.content
        for stored in read_entries(built.directory)
        if stored.content["type"] == "batch.intent" and stored.content["selected"] > 1
    )
    assert intent["v"] == version
    path = leaves_path(built.directory, intent["seq"])
    lines = path.read_bytes().splitlines()
    # A leaf swapped for another that keeps the file sorted: only the root can tell.
    last = bytes.fromhex(lines[-1].decode())
    lines[-1] = (int.from_bytes(last, "big") + 1).to_bytes(32, "big").hex().encode()
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    assert_invalid(verify(built), intent["seq"], "Merkle root of its leaves file")


def test_the_format_3_leaf_is_the_keyed_blake2s_that_docs_audit_md_specifies() -> None:
    """The test vector of docs/audit.md (checked there with OpenSSL alone), recomputed here from
    its definition: BLAKE2s-256 of the locator, keyed with HMAC-SHA256(K, label), personalised
    ``rtnleaf3``; formats 1 and 2 keep HMAC-SHA256."""
    import hmac

    from retention.audit.leaves import leaf_key

    audit_key = bytes(range(32)).hex().encode()
    label = b"retention record leaf key, format 3"
    derived = hmac.digest(audit_key, label, "sha256")
    leaf = hashlib.blake2s(b"app/clients/42", key=derived, person=b"rtnleaf3").digest()
    assert leaf_key(audit_key) == derived
    assert record_leaf(audit_key, "app", "clients", (42,), 3) == leaf
    assert record_leaf(audit_key, "app", "clients", (42,), 2) == hmac.digest(
        audit_key, b"app/clients/42", "sha256"
    )
    assert record_leaf(audit_key, "app", "clients", (42,), 1) == record_leaf(
        audit_key, "app", "clients", (42,), 2
    )
    documented = (Path(__file__).parent.parent / "docs" / "audit.md").read_text()
    for value in (audit_key.decode(), derived.hex(), leaf.hex()):
        assert value in documented
    assert hmac.digest(audit_key, b"app/clients/42", "sha256").hex() in documented
    # A long key and a short one both give a 32-byte BLAKE2s key.
    for key in (b"k" * 16, b"long" * 40):
        assert len(leaf_key(key)) == 32
        assert record_leaf(key, "app", "t", (1,), 3) != record_leaf(key, "app", "t", (1,), 2)
    with pytest.raises(ValueError, match="format 4"):
        record_leaf(audit_key, "app", "clients", (42,), 4)


def test_a_batch_entry_relabelled_to_another_format_is_caught(tmp_path: Path) -> None:
    """Its v says which function made its leaves: changing it (so that `prove` would look for
    another leaf) changes the entry's bytes, which the next entry's prev pins."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=tmp_path / "audit")
    plan_and_run(config, FIRST_RUN)
    built = Trail(tmp_path, url, config, ())
    intent = next(
        stored
        for stored in read_entries(built.directory)
        if stored.content["type"] == "batch.intent"
    )
    assert intent.content["v"] == 3
    content = intent.segment.read_bytes()
    relabelled = intent.raw.replace(b'"v":3', b'"v":2')
    intent.segment.write_bytes(content.replace(intent.raw, relabelled))
    assert_invalid(verify(built), intent.content["seq"], "altered")


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 129, 1000])
@pytest.mark.parametrize("per_chunk", [1, LEAVES_PER_CHUNK])
def test_packed_leaves_give_the_root_file_and_checks_of_the_same_leaves(
    size: int, per_chunk: int
) -> None:
    """A partition's leaves held as one bytes object (``PackedLeaves``) have the root, the
    leaves file and the repeat check of the same leaves as a list."""
    batch = leaves(size)
    packed = PackedLeaves(b"".join(batch))
    assert len(packed) == size
    assert list(packed) == batch
    assert packed == batch
    assert packed[-1:] == batch[-1:]
    assert packed_chunked_root(packed.data, 32, per_chunk) == chunked_root(batch, per_chunk)
    for version in (1, 2, 3):
        assert leaves_root(packed, version) == leaves_root(batch, version)
    assert leaves_text(packed) == leaves_text(batch)
    refuse_repeated(1, packed)
    if size:
        twice = PackedLeaves(b"".join(sorted(batch + batch[:1])))
        with pytest.raises(AuditFailure, match="repeat 1 record"):
            refuse_repeated(1, twice)
    with pytest.raises(ValueError, match="32 bytes"):
        PackedLeaves(b"x" * 33)
