"""The globs of backup-folder rules, matched on root-relative posix paths segment by segment:
``**`` (a whole segment) matches any number of directories, ``*``, ``?`` and ``[...]`` never cross
``/``, and ``*`` also matches names that start with a dot."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class PathGlob:
    """A glob on root-relative posix paths, matched segment by segment. ``segments`` holds one
    compiled pattern per segment, None for ``**``: any number of directories, or at the end of
    the glob one or more segments (``logs/**`` reaches everything under ``logs/``, not a file
    named ``logs``)."""

    text: str
    segments: tuple[re.Pattern[str] | None, ...]

    def matches(self, path: str) -> bool:
        """Given a root-relative posix path, return whether the glob matches it.

        Example: ``path_glob("**/*.tar").matches("a/b/c.tar")`` and ``matches("c.tar")`` are
        True; ``path_glob("*.sql.gz").matches("old/db.sql.gz")`` is False.
        """
        return len(self.segments) in self._consume(path.split("/"))

    def may_reach_under(self, directory: str) -> bool:
        """Given a root-relative directory path, return whether a path under it could match.

        Example: ``path_glob("*.sql.gz").may_reach_under("old")`` is False (nothing below the
        top level matches); ``path_glob("**/*.tar").may_reach_under("old")`` is True.
        """
        return any(state < len(self.segments) for state in self._consume(directory.split("/")))

    def _consume(self, parts: Sequence[str]) -> set[int]:
        """The positions in the glob that ``parts`` can lead to (a small NFA: ``**`` both stays
        and moves on)."""
        states = self._closure({0})
        for part in parts:
            following: set[int] = set()
            for state in states:
                if state == len(self.segments):
                    continue
                segment = self.segments[state]
                if segment is None:
                    following.update((state, state + 1))
                elif segment.match(part):
                    following.add(state + 1)
            states = self._closure(following)
            if not states:
                break
        return states

    def _closure(self, states: set[int]) -> set[int]:
        closed = set(states)
        pending = list(states)
        last = len(self.segments) - 1
        while pending:
            state = pending.pop()
            # A `**` matches zero directories too, except the last one (see the class).
            if state < last and self.segments[state] is None and state + 1 not in closed:
                closed.add(state + 1)
                pending.append(state + 1)
        return closed


@cache
def path_glob(text: str) -> PathGlob:
    """Given a glob such as ``nightly/**/*.tar``, return it compiled (empty and ``.`` segments
    are dropped). Example: ``path_glob("**/*.tar").matches("x/y.tar")`` is True."""
    segments = tuple(
        None if part == "**" else re.compile(fnmatch.translate(part))
        for part in text.split("/")
        if part not in ("", ".")
    )
    return PathGlob(text, segments)
