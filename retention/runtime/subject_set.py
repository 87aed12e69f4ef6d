"""The subjects a cross-store rule finished listing in one run, kept on disk.

A first run over an old database can visit a million subjects; their keys go to a temporary
SQLite database (deleted when closed) instead of a Python set, so that memory does not grow with
the number of subjects.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from retention.selection import KeyValues

# SQLite allows at most 999 bound parameters per statement in old builds.
CHUNK = 500


def _text(key: KeyValues) -> str:
    return json.dumps(list(key), default=str, ensure_ascii=False)


class SubjectsOnDisk:
    """A SubjectSet (executor.py) in a temporary SQLite database."""

    def __init__(self) -> None:
        # An empty path: a private temporary database on disk, removed when closed.
        self._database = sqlite3.connect("")
        self._database.execute("CREATE TABLE visited (key TEXT PRIMARY KEY) WITHOUT ROWID")

    def add(self, subjects: Sequence[KeyValues]) -> None:
        """Given subject keys, remember them."""
        with self._database:
            self._database.executemany(
                "INSERT OR IGNORE INTO visited (key) VALUES (?)",
                [(_text(subject),) for subject in subjects],
            )

    def among(self, keys: Sequence[KeyValues]) -> set[KeyValues]:
        """Given keys, return those that were added."""
        by_text = {_text(key): key for key in keys}
        texts = list(by_text)
        found: set[KeyValues] = set()
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            placeholders = ", ".join("?" * len(chunk))
            rows = self._database.execute(
                f"SELECT key FROM visited WHERE key IN ({placeholders})", chunk
            )
            found.update(by_text[row[0]] for row in rows)
        return found

    def close(self) -> None:
        self._database.close()
