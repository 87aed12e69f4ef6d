"""RFC 6962 Merkle trees: leaf hash SHA-256(0x00 || leaf), node hash SHA-256(0x01 || l || r).

A batch's records become sorted leaves (keyed hashes of their locators); the tree's root goes into
the trail, and an inclusion proof later shows that one record was in that batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (RFC 6962 section 2.1)."""
    return 1 << ((size - 1).bit_length() - 1)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Given leaves in order, return the RFC 6962 Merkle Tree Hash.

    Example: ``merkle_root([])`` is SHA-256 of the empty string; ``merkle_root([b"a"])`` is
    ``leaf_hash(b"a")``. Iterative, so a million leaves take about a second.
    """
    sha256 = hashlib.sha256
    return root_from_leaf_hashes([sha256(b"\x00" + leaf).digest() for leaf in leaves])


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Given the leaf hashes of a tree in order, return its RFC 6962 root."""
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    # Pairing left to right and carrying an odd last node up gives exactly the RFC 6962 tree.
    while len(level) > 1:
        sha256 = hashlib.sha256
        paired = [
            sha256(b"\x01" + level[index] + level[index + 1]).digest()
            for index in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Given the leaves and the index of one, return its audit path (RFC 6962 section 2.1.1)."""
    return hashed_inclusion_proof([leaf_hash(leaf) for leaf in leaves], index)


def hashed_inclusion_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Given the leaf hashes of a tree and the index of one, return its audit path.

    Example: ``hashed_inclusion_proof([leaf_hash(b"a"), leaf_hash(b"b")], 0)`` is
    ``[leaf_hash(b"b")]``.
    """
    if not 0 <= index < len(hashes):
        raise IndexError(index)
    path: list[bytes] = []
    start, end = 0, len(hashes)
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            path.append(root_from_leaf_hashes(hashes[middle:end]))
            end = middle
        else:
            path.append(root_from_leaf_hashes(hashes[start:middle]))
            start = middle
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Given a leaf, its index, the tree size, an audit path and a root, return whether the path
    proves the leaf is in the tree (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    node_index, last_index = index, size - 1
    computed = leaf_hash(leaf)
    for sibling in path:
        if last_index == 0:
            return False
        if node_index % 2 == 1 or node_index == last_index:
            computed = node_hash(sibling, computed)
            while node_index % 2 == 0 and node_index != 0:
                node_index >>= 1
                last_index >>= 1
        else:
            computed = node_hash(computed, sibling)
        node_index >>= 1
        last_index >>= 1
    return last_index == 0 and computed == root


class MerkleFrontier:
    """An RFC 6962 tree grown one leaf hash at a time, keeping only the roots of its complete
    subtrees (at most one per bit of the size), so the root of every prefix is at hand.

    Example: after ``add`` of ``leaf_hash(a)`` and ``leaf_hash(b)``, ``root()`` equals
    ``merkle_root([a, b])``.
    """

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        """An empty tree, or one resumed from a saved ``size`` and its ``subtrees`` roots."""
        if size < 0 or len(subtrees) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} complete subtrees")
        self.size = size
        self._subtrees: list[bytes] = list(subtrees)

    @property
    def subtrees(self) -> tuple[bytes, ...]:
        """The roots of the complete subtrees, largest first: with ``size``, the whole state."""
        return tuple(self._subtrees)

    def add(self, hashed: bytes) -> None:
        """Given the next leaf hash, add it (merging the complete subtrees it completes)."""
        count = self.size
        while count & 1:
            hashed = node_hash(self._subtrees.pop(), hashed)
            count >>= 1
        self._subtrees.append(hashed)
        self.size += 1

    def root(self) -> bytes:
        """Return the RFC 6962 root of the leaves added so far (SHA-256 of b"" when none)."""
        if not self._subtrees:
            return EMPTY_ROOT
        root = self._subtrees[-1]
        for subtree in reversed(self._subtrees[:-1]):
            root = node_hash(subtree, root)
        return root


def chunked_root(leaves: Sequence[bytes], per_chunk: int) -> bytes:
    """Given sorted leaves and how many make one tree leaf, return the RFC 6962 root over their
    chunks: each run of ``per_chunk`` leaves, concatenated, is one leaf of the tree (the last
    run may be shorter). One SHA-256 over a chunk costs about what one over a single leaf does,
    so the tree costs ``per_chunk`` times less per record.

    Example: ``chunked_root(leaves, 1)`` is ``merkle_root(leaves)``; ``chunked_root([a, b, c],
    2)`` is ``merkle_root([a + b, c])``.
    """
    if per_chunk == 1:
        return merkle_root(leaves)
    return merkle_root(_chunks(leaves, per_chunk))


def packed_chunked_root(packed: bytes, leaf_size: int, per_chunk: int) -> bytes:
    """Given sorted leaves of ``leaf_size`` bytes each, concatenated, and how many make one
    tree leaf, return ``chunked_root`` of them, hashing each chunk from its place in
    ``packed`` (no object per leaf, no chunk joined).

    Example: ``packed_chunked_root(a + b + c, 32, 2)`` is ``chunked_root([a, b, c], 2)``
    for leaves of 32 bytes.
    """
    view = memoryview(packed)
    step = leaf_size * per_chunk
    sha256 = hashlib.sha256
    hashes = []
    for start in range(0, len(packed), step):
        state = sha256(b"\x00")
        # A chunk of 2 KB or more is hashed without the GIL.
        state.update(view[start : start + step])
        hashes.append(state.digest())
    return root_from_leaf_hashes(hashes)


def _chunks(leaves: Sequence[bytes], per_chunk: int) -> list[bytes]:
    starts = range(0, len(leaves), per_chunk)
    return [b"".join(leaves[start : start + per_chunk]) for start in starts]


def chunked_inclusion_proof(
    leaves: Sequence[bytes], index: int, per_chunk: int
) -> tuple[tuple[bytes, ...], list[bytes]]:
    """Given sorted leaves, the index of one and how many make one tree leaf, return the leaves
    of its chunk and the audit path of that chunk (``verify_chunked_inclusion`` checks both)."""
    first = index - index % per_chunk
    chunk = tuple(leaves[first : first + per_chunk])
    return chunk, inclusion_proof(_chunks(leaves, per_chunk), index // per_chunk)


def verify_chunked_inclusion(
    leaf: bytes,
    index: int,
    size: int,
    chunk: Sequence[bytes],
    path: Sequence[bytes],
    root: bytes,
    per_chunk: int,
) -> bool:
    """Given a leaf, its index among ``size`` leaves, the leaves of its chunk, the chunk's audit
    path, a root and the chunk size, return whether they prove the leaf is in the tree.

    Example: with ``per_chunk`` 1 and ``chunk`` ``[leaf]`` this is ``verify_inclusion``.
    """
    if per_chunk < 1 or not 0 <= index < size:
        return False
    chunk_index, offset = divmod(index, per_chunk)
    expected = min(per_chunk, size - chunk_index * per_chunk)
    if len(chunk) != expected or chunk[offset] != leaf:
        return False
    chunks = (size + per_chunk - 1) // per_chunk
    return verify_inclusion(b"".join(chunk), chunk_index, chunks, path, root)
