"""The compiled leaves (retention/audit/_leaves.c) against hashlib, which defines them: every
entry point, every count around its 8 lanes, every line length around BLAKE2s's 64-byte
block, keys of 1 to 32 bytes; a writable buffer changed by another thread while it hashes
(it lets go of the GIL); and a module built on one machine loads on one without AVX2."""

from __future__ import annotations

import hashlib
import platform
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from retention.audit.leaves import LEAF_PERSON, RecordHasher
from tests.test_audit_leaf_batches import _compiled

COUNTS = [0, 1, 7, 8, 9, 15, 16, 17, 1000]
# Around the block: a line that fills it with the prefix (exactly 64), one past it, two blocks.
LENGTHS = [0, 1, 31, 32, 55, 56, 63, 64, 65, 127, 128, 129, 200]
HEADS = [b"", b"a/", b"db/events/", b"h" * 63, b"h" * 64, b"h" * 65, b"\xc3\xa9t\xc3\xa9/" * 9]


def _truth(key: bytes, person: bytes, head: bytes, lines: list[bytes]) -> list[bytes]:
    return [hashlib.blake2s(head + line, key=key, person=person).digest() for line in lines]


def _every_entry_point(
    native: ModuleType, key: bytes, person: bytes, head: bytes, lines: list[bytes]
) -> None:
    """Each entry point gives hashlib's leaves of head + each line (joined by newlines)."""
    joined = b"\n".join(lines)
    expected = _truth(key, person, head, lines)
    packed = native.blake2s_packed(key, person, head, joined)
    assert packed == b"".join(expected)
    assert native.blake2s_leaves(key, person, head, joined) == sorted(expected)
    assert native.sorted_leaves(packed) == b"".join(sorted(expected))
    assert native.repeated_leaves(b"".join(sorted(expected))) == len(lines) - len(set(lines))


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("head", HEADS)
def test_every_count_and_line_length_is_hashlibs(count: int, head: bytes) -> None:
    """Lines of every length around the block, in every mix of the lanes (short lines) and
    the one-record path (long ones), so that each lane's leaf lands at its own line."""
    native = _compiled()
    generator = random.Random(count * 1000 + len(head))
    lines = [
        bytes(generator.randrange(256) for _ in range(generator.choice(LENGTHS))).replace(
            b"\n", b"\xff"
        )
        for _ in range(count)
    ]
    if count == 0:
        lines = [b""]  # no bytes at all is one empty line, as b"".split(b"\n") says
    for key_length in (1, 16, 31, 32):
        key = bytes(range(7, 7 + key_length))
        _every_entry_point(native, key, LEAF_PERSON, head, lines)


@pytest.mark.parametrize("length", range(0, 201))
def test_each_line_length_alone_and_in_a_full_lane(length: int) -> None:
    native = _compiled()
    line = bytes((index * 37 + length) % 256 for index in range(length)).replace(b"\n", b"~")
    for head in (b"", b"db/t/", b"x" * 60):
        _every_entry_point(native, b"k" * 32, LEAF_PERSON, head, [line])
        # Nine: one full set of eight lanes and one record in the last, sparely filled.
        _every_entry_point(
            native, b"k" * 32, LEAF_PERSON, head, [line + bytes([n]) for n in range(9)]
        )


@pytest.mark.parametrize(
    "joined",
    [
        b"",
        b"\n",
        b"\n\n",
        b"1\n",
        b"\n1",
        b"1\n\n2",
        b"\xe2\x82\xac\n\x00\n\xff",
        b"a" * 64 + b"\n",
    ],
)
def test_empty_lines_and_a_trailing_newline_are_records(joined: bytes) -> None:
    """Each newline ends a record: a trailing one is a last, empty record (as split says)."""
    native = _compiled()
    for person in (LEAF_PERSON, b"", b"p"):
        _every_entry_point(native, b"key", person, b"db/t/", joined.split(b"\n"))


def test_a_seeded_random_batch_of_every_shape_is_hashlibs() -> None:
    native = _compiled()
    generator = random.Random(20261204)
    for _ in range(300):
        key = generator.randbytes(generator.randint(1, 32))
        person = generator.randbytes(generator.randint(0, 8))
        head = generator.randbytes(generator.randint(0, 140)).replace(b"\n", b"")
        lines = [
            generator.randbytes(generator.choice((0, 1, 9, 40, 64, 65, 128, 190))).replace(
                b"\n", b""
            )
            for _ in range(generator.choice((1, 2, 7, 8, 9, 16, 17, 40)))
        ]
        _every_entry_point(native, key, person, head, lines)


# int64's ends and the values around each power of ten's spelling change, both signs.
_EDGES = [0, 1, -1, 9, 10, -10, 2**31, -(2**31), 2**63 - 1, -(2**63)] + [
    sign * (10**power + shift) for power in range(19) for shift in (-1, 0) for sign in (1, -1)
]


def test_integer_lines_spell_every_int64_as_str_does() -> None:
    native = _compiled()
    generator = random.Random(20261204)
    values = _EDGES + [generator.randint(-(2**63), 2**63 - 1) for _ in range(5000)]
    for keys in ([(value,) for value in values], tuple((value,) for value in values)):
        assert native.integer_lines(keys) == "\n".join(map(str, values)).encode()
    for value in _EDGES:
        assert native.integer_lines([(value,)]) == str(value).encode()


@pytest.mark.parametrize(
    "keys",
    [
        [],
        [(2**63,)],
        [(5,), (-(2**63) - 1,)],
        [(True,)],
        [(5,), (1.0,)],
        [(5,), ("6",)],
        [(5, 6)],
        [()],
        [[5]],
        [(5,), None],
        iter([(5,)]),
        {(5,)},
    ],
    ids=[
        "empty",
        "past-int64",
        "below-int64",
        "a-bool",
        "a-float",
        "a-text",
        "two-columns",
        "no-column",
        "a-list-key",
        "not-a-key",
        "an-iterator",
        "a-set",
    ],
)
def test_integer_lines_leave_every_other_keys_to_python(keys: object) -> None:
    """Anything but a list or tuple of 1-tuples of 64-bit ints is None: the Python spelling
    (integer_key_lines) then decides, as it did before the compiled one."""
    assert _compiled().integer_lines(keys) is None


def test_integer_key_lines_are_the_same_with_and_without_the_compiled_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from retention.audit import leaves

    _compiled()
    batches: list[list[tuple[object, ...]]] = [
        [(4,), (17,)],
        [(value,) for value in _EDGES],
        [(2**70,), (-(2**70),), (3,)],
        [(True,)],
        [(4,), ("x",)],
        [],
    ]
    compiled = [leaves.integer_key_lines(keys) for keys in batches]
    monkeypatch.setattr(leaves, "_native", None)
    assert [leaves.integer_key_lines(keys) for keys in batches] == compiled
    assert compiled[0] == b"4\n17"
    assert compiled[2] == f"{2**70}\n{-(2**70)}\n3".encode()


def test_the_record_hasher_with_the_compiled_module_is_record_leaf() -> None:
    """Through the leaves the trail records: spelled pieces and integer keys."""
    _compiled()
    hasher = RecordHasher(b"audit key", 3)
    lines = [str(value).encode() for value in range(-20, 1000, 3)]
    pieces = [b"\n".join(lines[start : start + 17]) for start in range(0, len(lines), 17)]
    expected = sorted(_truth(hasher._key, LEAF_PERSON, b"db/t/", lines))
    assert list(hasher.spelled_leaves("db", "t", pieces)) == expected
    keys = [(int(line),) for line in lines]
    assert hasher.leaves("db", "t", keys) == expected


_RACE = textwrap.dedent(
    """
    import hashlib, sys, threading
    from retention.audit import _leaves

    key, person, head = b"k" * 32, b"rtnleaf3", b"db/t/"
    many = b"\\n".join(b"%d" % n for n in range(60000))
    few = many.replace(b"\\n", b"-")  # the same length, one line
    lines = bytearray(many)
    expected = {
        _leaves.blake2s_packed(key, person, head, many),
        _leaves.blake2s_packed(key, person, head, few),
    }
    stop = False

    def flip():
        while not stop:
            lines[:] = few  # the same length: allowed while the buffer is lent
            lines[:] = many

    thread = threading.Thread(target=flip)
    thread.start()
    wrong = 0
    try:
        for _ in range(150):
            wrong += _leaves.blake2s_packed(key, person, head, lines) not in expected
    finally:
        stop = True
        thread.join()
    print(wrong)
    sys.exit(1 if wrong else 0)
    """
)


def test_a_writable_buffer_changed_by_another_thread_is_hashed_as_one_state() -> None:
    """The module lets go of the GIL while it hashes only what no one can change meanwhile
    (bytes): a bytearray another thread rewrites (its length cannot change while lent) is
    hashed with the GIL held, as it was before or after a change, and never read past its
    end (before: its newlines counted once and looked for again without the GIL, a line
    gone meanwhile sent it past the buffer's end: wrong leaves or a crash)."""
    _compiled()
    done = subprocess.run(
        [sys.executable, "-c", _RACE], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])


def _functions_with_vex(library: Path) -> set[str]:
    """The functions of a shared library with an AVX (VEX-encoded) instruction."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: set[str] = set()
    function = ""
    for line in listing.splitlines():
        if line.endswith(">:"):
            function = line.split("<", 1)[1][:-2]
        elif "%ymm" in line or ("\tv" in line and "%xmm" in line):
            found.add(function)
    return found


@pytest.mark.skipif(
    platform.machine() != "x86_64" or shutil.which("objdump") is None,
    reason="x86-64 with objdump only",
)
def test_avx2_is_chosen_as_the_module_loads_and_nothing_else_needs_it() -> None:
    """Built with AVX2 where the compiler has it, the module must still load and hash on a
    CPU without it (SIGILL otherwise): the 8-lane compression is cloned (target_clones, one
    for AVX2, one default) and the clone chosen as the module loads by CPU detection; no
    other function holds an AVX instruction (setup.py passes no -mavx2 nor -march)."""
    native = _compiled()
    library = Path(native.__file__ or "")
    with_vex = _functions_with_vex(library)
    assert with_vex <= {"compress_lanes.avx2"}, with_vex
    symbols = subprocess.run(["nm", str(library)], capture_output=True, text=True).stdout
    assert "compress_lanes.default" in symbols
    assert "compress_lanes.resolver" in symbols
