"""The compiled spelling of PostgreSQL's binary key arrays (retention/stores/_keys.c) against the
text path, which defines it: every element type it spells at its extremes, the server's own
arrays it refuses (NULLs, no elements, two dimensions, another element type), and hostile
buffers fed to it directly: each a clean ValueError or TypeError, never a read past a buffer,
a huge allocation or a crash (run under valgrind in the review of 2026-12-04)."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from types import ModuleType

import pytest
from sqlalchemy import create_engine, text

from retention.anonymise import record_locator
from retention.errors import BatchConflict
from retention.stores import partition_keys_postgres
from tests.test_partition_spelling import _keys_compiled, _pieces

INT2, INT4, INT8, DATE, TIMESTAMP = 21, 23, 20, 1082, 1114
REFUSED = r"key columns|cannot be spelled exactly"


def _native() -> ModuleType:
    _keys_compiled()
    return partition_keys_postgres._native  # type: ignore[no-any-return]


def _array(element_type: int, values: list[bytes | None], dims: int = 1, nulls: int = 0) -> bytes:
    """An array as array_send writes it: dimensions, has-nulls, element type, each dimension's
    length and lower bound, then each element's length (-1: NULL) and bytes."""
    head = struct.pack(">iiI", dims, nulls, element_type)
    head += struct.pack(">ii", len(values), 1) * dims
    return head + b"".join(
        struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value
        for value in values
    )


def _int8s(*values: int) -> bytes:
    return _array(INT8, [struct.pack(">q", value) for value in values])


GOOD = _int8s(1, -9223372036854775808, 9223372036854775807)


def test_the_compiled_spelling_of_a_hand_made_array() -> None:
    native = _native()
    assert native.spelled_arrays((GOOD,)) == b"1\n-9223372036854775808\n9223372036854775807"
    stamps = _array(TIMESTAMP, [struct.pack(">q", -1), struct.pack(">q", 86400 * 10**6 * 60)])
    days = _array(DATE, [struct.pack(">i", -1), struct.pack(">i", 59)])
    assert native.spelled_arrays((stamps, days)) == (
        b"1999-12-31%2023%3A59%3A59.999999/1999-12-31\n2000-03-01%2000%3A00%3A00/2000-02-29"
    )


def _every_cut(data: bytes) -> Iterator[bytes]:
    for length in range(len(data)):
        yield data[:length]


@pytest.mark.parametrize(
    "arrays",
    [
        *((cut,) for cut in _every_cut(GOOD)),  # truncated anywhere
        (GOOD + b"\x00",),  # a byte after the last element
        (GOOD, _int8s(1, 2)),  # columns of different lengths
        (_array(INT8, [struct.pack(">q", 1)], dims=2),),  # two dimensions
        (_array(INT8, [struct.pack(">q", 1)], dims=0),),
        (_array(INT8, [struct.pack(">q", 1)], nulls=1),),
        (_array(INT8, [None]),),  # a NULL without the flag
        (_array(INT8, [struct.pack(">i", 1)]),),  # an int8 of 4 bytes
        (_array(INT4, [struct.pack(">q", 1)]),),
        (_array(INT2, [b"\x00"]),),
        (_array(DATE, [b""]),),
        (_array(TIMESTAMP, [struct.pack(">q", 2**63 - 1)]),),  # infinity
        (_array(TIMESTAMP, [struct.pack(">q", -(2**63))]),),  # -infinity
        (_array(TIMESTAMP, [struct.pack(">q", -(2**62))]),),  # far before the year 1
        (_array(DATE, [struct.pack(">i", 2**31 - 1)]),),  # far after 9999
        (_array(DATE, [struct.pack(">i", -(2**31))]),),
        # an element's length negative, past the end, or past any size
        (struct.pack(">iiIiii", 1, 0, INT8, 1, 1, -2) + b"\x00" * 8,),
        (struct.pack(">iiIiii", 1, 0, INT8, 1, 1, 9) + b"\x00" * 8,),
        (struct.pack(">iiIiii", 1, 0, INT8, 1, 1, 2**31 - 1) + b"\x00" * 8,),
        # element counts a buffer cannot hold: negative, and far more than its bytes
        (struct.pack(">iiIii", 1, 0, INT8, -1, 1),),
        (struct.pack(">iiIii", 1, 0, INT8, 2**31 - 1, 1) + b"\x00" * 12,),
        (struct.pack(">iiIii", 1, 0, INT2, 2**31 - 1, 1),) * 32,
        (struct.pack(">iiIii", 1, 0, INT8, 40_000_000, 1),),
        (),  # no column
        (GOOD,) * 33,  # more columns than a key has
    ],
)
def test_a_malformed_array_is_a_value_error(arrays: tuple[bytes, ...]) -> None:
    native = _native()
    with pytest.raises(ValueError, match=REFUSED):
        native.spelled_arrays(arrays)


@pytest.mark.parametrize(
    "arrays",
    [
        (_array(25, [b"text"]),),  # text
        (_array(2950, [b"\x00" * 16]),),  # uuid
        (_array(1184, [struct.pack(">q", 0)]),),  # timestamptz
        (_array(1700, [b"\x00" * 8]),),  # numeric
        (GOOD, _array(26, [b"\x00" * 4] * 3)),  # oid beside an int8
    ],
)
def test_an_element_type_it_does_not_spell_is_a_type_error(arrays: tuple[bytes, ...]) -> None:
    """TypeError: the caller reads that range, and the rest, as text."""
    native = _native()
    with pytest.raises(TypeError):
        native.spelled_arrays(arrays)


@pytest.mark.parametrize("given", [None, "text", 17, [GOOD]])
def test_what_is_not_a_tuple_of_buffers_is_a_type_error(given: object) -> None:
    native = _native()
    with pytest.raises(TypeError):
        native.spelled_arrays(given if isinstance(given, list) else (given,))


def test_a_large_count_is_refused_before_any_allocation() -> None:
    """A count no buffer of that size holds is refused as malformed, not met with a
    MemoryError (which the caller does not take for a key it cannot spell) after an attempt
    to allocate 33 bytes a value for 2^31 values."""
    native = _native()
    huge = struct.pack(">iiIii", 1, 0, INT8, 2**31 - 1, 1) + struct.pack(">iq", 8, 5)
    with pytest.raises(ValueError, match="do not match"):
        native.spelled_arrays((huge,))


def test_a_bytearray_or_view_is_spelled_as_its_bytes() -> None:
    native = _native()
    expected = native.spelled_arrays((GOOD,))
    assert native.spelled_arrays((bytearray(GOOD),)) == expected
    assert native.spelled_arrays((memoryview(GOOD),)) == expected


_RACE = textwrap.dedent(
    """
    import struct, sys, threading
    from retention.stores import _keys

    count = 200000
    def array(value):
        head = struct.pack(">iiIii", 1, 0, 20, count, 1)
        return head + struct.pack(">iq", 8, value) * count
    one, other = array(1), array(-7777777)
    expected = {_keys.spelled_arrays((one,)), _keys.spelled_arrays((other,))}
    data = bytearray(one)
    stop = False

    def flip():
        while not stop:
            data[:] = other
            data[:] = one

    thread = threading.Thread(target=flip)
    thread.start()
    wrong = 0
    try:
        for _ in range(100):
            wrong += _keys.spelled_arrays((data,)) not in expected
    finally:
        stop = True
        thread.join()
    print(wrong)
    sys.exit(1 if wrong else 0)
    """
)


def test_a_writable_buffer_changed_by_another_thread_is_spelled_as_one_state() -> None:
    """The GIL is let go only over bytes: a bytearray another thread rewrites is spelled with
    the GIL held (before: spelled half before, half after a change, keys of neither)."""
    _native()
    done = subprocess.run(
        [sys.executable, "-c", _RACE], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])


def _server_arrays(url: str, queries: list[str]) -> list[bytes | None]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [connection.execute(text(query)).scalar_one() for query in queries]
    finally:
        engine.dispose()


def test_the_servers_own_arrays_it_refuses(postgres_url: str) -> None:
    """No elements (array_send of '{}' has no dimension), two dimensions, a NULL: ValueError;
    a type it does not spell (text, uuid, timestamptz, numeric): TypeError."""
    native = _native()
    refused = _server_arrays(
        postgres_url,
        [
            "SELECT array_send('{}'::int8[])",
            "SELECT array_send('{{1,2},{3,4}}'::int4[])",
            "SELECT array_send(ARRAY[1, NULL]::int4[])",
            "SELECT array_send(ARRAY[DATE '2024-01-01', NULL])",
        ],
    )
    for array in refused:
        with pytest.raises(ValueError, match=REFUSED):
            native.spelled_arrays((array,))
    other_types = _server_arrays(
        postgres_url,
        [
            "SELECT array_send(ARRAY['a/b%c'])",
            "SELECT array_send(ARRAY[gen_random_uuid()])",
            "SELECT array_send(ARRAY[now()])",
            "SELECT array_send(ARRAY[1.5::numeric])",
        ],
    )
    for array in other_types:
        with pytest.raises(TypeError):
            native.spelled_arrays((array,))


TIMES = [
    datetime(1, 1, 1),
    datetime(1, 1, 1, 0, 0, 0, 1),
    datetime(4, 2, 29, 12),  # a leap day of the first centuries
    datetime(1900, 3, 1),
    datetime(1969, 12, 31, 23, 59, 59, 999999),
    datetime(1970, 1, 1),
    datetime(1999, 12, 31, 23, 59, 59, 999999),
    datetime(2000, 1, 1),
    datetime(2000, 2, 29, 0, 0, 0, 10),
    datetime(2024, 2, 29, 23, 59, 59, 100000),
    datetime(2100, 3, 1, 1, 2, 3),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
]


@pytest.mark.parametrize("compiled", [True, False])
def test_extremes_spelled_from_binary_arrays_or_text_are_their_values_locators(
    postgres_url: str, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every type the module spells at its extremes, and every day of a span around two leap
    days, give the same lines both ways: record_locator's of the values psycopg reads."""
    if compiled:
        _native()
    else:
        monkeypatch.setattr(partition_keys_postgres, "_native", None)
    days = [date(1899, 12, 1) + timedelta(days=step) for step in range(100)]
    days += [date(2023, 12, 31) + timedelta(days=step) for step in range(400)]
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE keyed (a smallint NOT NULL, b integer NOT NULL, c bigint NOT NULL, "
                "d date NOT NULL, t timestamp NOT NULL)"
            )
        )
        connection.execute(
            text("INSERT INTO keyed VALUES (:a, :b, :c, :d, :t)"),
            [
                {
                    "a": (-32768, 32767, 0, -1, 1)[index % 5],
                    "b": (-2147483648, 2147483647, 0, -10)[index % 4],
                    "c": (-9223372036854775808, 9223372036854775807, 0, 10**18)[index % 4],
                    "d": days[index % len(days)],
                    "t": TIMES[index % len(TIMES)],
                }
                for index in range(len(days))
            ],
        )
        read = [tuple(row) for row in connection.execute(text("SELECT * FROM keyed"))]
    engine.dispose()
    expected = sorted(record_locator("db", "t", key)[len("db/t/") :] for key in read)
    pieces = _pieces(postgres_url, "keyed", ["a", "b", "c", "d", "t"])
    assert sorted(line.decode() for line in b"\n".join(pieces).split(b"\n")) == expected


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("timestamp", "4713-01-01 00:00:00 BC"),
        ("timestamp", "294276-12-31 23:59:59.999999"),
        ("timestamp", "10000-01-01 00:00:00"),
        ("timestamp", "0001-12-31 23:59:59.999999 BC"),
        ("date", "4713-01-01 BC"),
        ("date", "5874897-12-31"),
        ("date", "10000-01-01"),
        ("date", "infinity"),
        ("date", "-infinity"),
    ],
)
def test_a_value_python_cannot_hold_is_refused_both_ways(
    postgres_url: str, compiled: bool, column: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's extremes (4713 BC, 294276 AD, a year after 9999, the infinities) are no
    date or datetime: the partition's keys are refused (BatchConflict) by the compiled path
    and by the text path alike."""
    if compiled:
        _native()
    else:
        monkeypatch.setattr(partition_keys_postgres, "_native", None)
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE keyed (id bigint NOT NULL, t {column} NOT NULL)"))
        connection.execute(
            text(f"INSERT INTO keyed VALUES (1, '2024-01-05'), (2, CAST(:value AS {column}))"),
            {"value": value},
        )
    engine.dispose()
    with pytest.raises(BatchConflict, match="cannot be spelled exactly"):
        _pieces(postgres_url, "keyed", ["id", "t"])
