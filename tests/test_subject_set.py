"""The subjects a cross-store rule visited, on disk: the same answers as a plain set."""

from __future__ import annotations

from datetime import date

from retention.run_ports import SubjectsInMemory
from retention.runtime.subject_set import SubjectsOnDisk
from retention.selection import KeyValues


def test_on_disk_answers_as_the_plain_set_for_every_key_shape() -> None:
    visited: list[KeyValues] = [(number,) for number in range(0, 3000, 3)]
    visited += [("ané/x",), ("tenant-1", 7), (date(2026, 1, 1),), ("",)]
    asked: list[KeyValues] = [(number,) for number in range(1500)]
    asked += [("ané/x",), ("ane/x",), ("tenant-1", 7), ("tenant-1", 8), (date(2026, 1, 1),)]
    asked += [("",), ("6",)]
    on_disk, in_memory = SubjectsOnDisk(), SubjectsInMemory()
    try:
        for start in range(0, len(visited), 400):
            on_disk.add(visited[start : start + 400])
            in_memory.add(visited[start : start + 400])
        on_disk.add(visited[:10])  # twice: no error, no change
        expected = in_memory.among(asked)
        assert on_disk.among(asked) == expected
        assert len(expected) == 500 + 4
        assert (6,) in expected
        assert ("6",) not in expected  # a string is not the integer 6
        assert on_disk.among([]) == set()
    finally:
        on_disk.close()
        in_memory.close()
