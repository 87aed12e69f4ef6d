"""The trail writer resumes from its saved tail state instead of reading the whole trail, keeps a
Merkle frontier instead of every entry's hash, and falls back to reading the trail whenever the
saved state does not describe the trail's end exactly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from retention.audit import trail as trail_module
from retention.audit.entries import read_entries
from retention.audit.keys import PublicKey, Signer
from retention.audit.merkle import MerkleFrontier, leaf_hash, merkle_root, root_from_leaf_hashes
from retention.audit.tail_state import TAIL_STATE, tail_state_mac
from retention.audit.trail import TrailWriter
from retention.audit.verify import verify_trail

START = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


def _ticks() -> Iterator[datetime]:
    moment = START
    while True:
        moment += timedelta(seconds=1)
        yield moment


TICKS = _ticks()  # one clock for every writer: entry times only go forward


def _writer(directory: Path, signer: Signer) -> TrailWriter:
    return TrailWriter(directory, b"k" * 32, signer, lambda: next(TICKS))


def _session(directory: Path, signer: Signer, entries: int, digest: str) -> None:
    with _writer(directory, signer) as writer:
        writer.append("run.started", _started(digest))
        for _number in range(entries):
            writer.append("config.changed", {"run_id": digest, "digest": digest})
        writer.checkpoint()


def _started(digest: str) -> dict[str, object]:
    return {"run_id": digest, "plan_id": digest, "rules": [], "config_digest": digest}


def _keys(signer: Signer) -> tuple[PublicKey, ...]:
    return (PublicKey(signer.key_id, signer.public_raw, START - timedelta(days=1), None),)


def _refuse_full_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_directory: Path) -> Iterator[object]:
        raise AssertionError("the writer read the whole trail")

    monkeypatch.setattr(trail_module, "read_entries", refuse)


def test_the_frontier_gives_the_root_of_every_prefix_and_resumes_from_its_state() -> None:
    leaves = [bytes([number]) * 32 for number in range(37)]
    frontier = MerkleFrontier()
    for size, leaf in enumerate(leaves, start=1):
        frontier.add(leaf_hash(leaf))
        assert frontier.root() == merkle_root(leaves[:size])
        resumed = MerkleFrontier(frontier.size, frontier.subtrees)
        assert resumed.root() == frontier.root()
    with pytest.raises(ValueError, match="complete subtrees"):
        MerkleFrontier(5, frontier.subtrees[:1])


def test_a_reopened_writer_resumes_without_reading_the_trail(
    tmp_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _session(tmp_path, signer, 6, "first")
    with monkeypatch.context() as patched:
        _refuse_full_reads(patched)
        with _writer(tmp_path, signer) as writer:
            assert writer.last_config_digest == "first"
            assert writer.next_seq == writer.size == 8
            writer.append("run.started", _started("second"))
            writer.checkpoint()
    stored = list(read_entries(tmp_path))
    checkpoint = stored[-1].content
    assert (checkpoint["seq"], checkpoint["size"]) == (9, 9)
    assert (
        checkpoint["root"]
        == root_from_leaf_hashes([leaf_hash(entry.raw) for entry in stored[:-1]]).hex()
    )
    result = verify_trail(tmp_path, _keys(signer))
    assert result.valid, result.problem


@pytest.mark.parametrize(
    "spoil",
    [
        "missing",
        "not json",
        "behind the trail",
        "wrong prev",
        "wrong seq",
        "bad frontier",
    ],
)
def test_a_tail_state_that_does_not_describe_the_trail_is_rebuilt_from_it(
    tmp_path: Path, signer: Signer, spoil: str
) -> None:
    _session(tmp_path, signer, 3, "first")
    state_path = tmp_path / TAIL_STATE
    saved = state_path.read_text()
    _session(tmp_path, signer, 2, "second")
    state = json.loads(state_path.read_text())
    if spoil == "missing":
        state_path.unlink()
    elif spoil == "not json":
        state_path.write_text("{")
    elif spoil == "behind the trail":
        state_path.write_text(saved)  # a state saved before the last session's appends
    else:
        if spoil == "wrong prev":
            state["prev"] = "0" * 64
        elif spoil == "wrong seq":
            state["next_seq"] += 1
        else:
            state["subtrees"] = state["subtrees"][1:]
        state_path.write_text(json.dumps(state))

    with _writer(tmp_path, signer) as writer:
        assert writer.last_config_digest == "second"
        writer.checkpoint()
    checkpoint = list(read_entries(tmp_path))[-1].content
    assert checkpoint["size"] == 9
    assert bytes.fromhex(checkpoint["root"]) == root_from_leaf_hashes(
        [leaf_hash(entry.raw) for entry in list(read_entries(tmp_path))[:-1]]
    )
    result = verify_trail(tmp_path, _keys(signer))
    assert result.valid, result.problem


@pytest.mark.parametrize(
    "forge",
    ["a subtree", "a subtree and the size", "no mac (an older version's state)", "another key"],
)
def test_a_forged_frontier_is_not_trusted_and_the_next_checkpoint_verifies(
    tmp_path: Path, signer: Signer, forge: str
) -> None:
    """The state carries an HMAC under the audit key over everything in it: an edited Merkle
    frontier does not check, so the writer reads the trail instead of signing a wrong root."""
    _session(tmp_path, signer, 4, "first")
    state_path = tmp_path / TAIL_STATE
    state = json.loads(state_path.read_text())
    if forge == "a subtree":
        state["subtrees"][0] = "ab" * 32
    elif forge == "a subtree and the size":
        state["subtrees"] = [*state["subtrees"], "ab" * 32]
        state["size"] = state["size"] + 2 ** (len(state["subtrees"]) - 1)
    elif forge == "no mac (an older version's state)":
        state["subtrees"][0] = "ab" * 32
        del state["mac"]
    else:
        state["subtrees"][0] = "ab" * 32
        state["mac"] = tail_state_mac(b"x" * 32, state)
    state_path.write_text(json.dumps(state))
    with _writer(tmp_path, signer) as writer:
        writer.checkpoint()
    *before, checkpoint = list(read_entries(tmp_path))
    assert bytes.fromhex(checkpoint.content["root"]) == root_from_leaf_hashes(
        [leaf_hash(entry.raw) for entry in before]
    )
    result = verify_trail(tmp_path, _keys(signer))
    assert result.valid, result.problem
    # And the state saved after that append serves the next writer again.
    assert json.loads(state_path.read_text())["subtrees"] != state["subtrees"]


def test_a_torn_last_line_is_dropped_and_the_tail_state_still_serves(
    tmp_path: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _session(tmp_path, signer, 2, "first")
    (segment,) = sorted((tmp_path / "trail").iterdir())
    with segment.open("ab") as handle:
        handle.write(b'{"v":1,"seq":')  # a crash in the middle of an append
    with monkeypatch.context() as patched:
        _refuse_full_reads(patched)
        with _writer(tmp_path, signer) as writer:
            assert writer.recovered_bytes == len(b'{"v":1,"seq":')
            writer.checkpoint()
    result = verify_trail(tmp_path, _keys(signer))
    assert result.valid, result.problem
    assert result.entries == 5


def test_a_tail_state_that_cannot_be_saved_does_not_stop_the_trail(
    tmp_path: Path, signer: Signer
) -> None:
    """The state is a cache: when it cannot be written (here a directory stands in its way),
    appends still succeed, and the next writer reads the trail instead."""
    (tmp_path / TAIL_STATE).mkdir(parents=True)
    _session(tmp_path, signer, 2, "first")
    _session(tmp_path, signer, 1, "second")
    result = verify_trail(tmp_path, _keys(signer))
    assert result.valid, result.problem
    assert result.entries == 7
