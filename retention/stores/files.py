"""Local backup folders (``kind = "files"``): the regular files under one root directory.

A rule reaches the files whose path relative to the root matches its glob: ``**`` (a whole
segment) matches any number of directories, ``*``, ``?`` and ``[...]`` never cross ``/``, and
``*`` also matches names that start with a dot. A file's key is that path in posix form,
``("nightly/db.sql.gz",)``; files are visited in code-point order of their paths, so a path is
a keyset position (``after``) just as a primary key is in SQL.

Safety. The root is resolved once and held open by a file descriptor. Everything below it is
reached through directory descriptors opened component by component with O_NOFOLLOW: a symlink
(to a file or a directory, inside the root or out) is never followed nor deleted, and a
directory swapped for a symlink after listing is not entered. Right before its unlink, a file is
looked at again through those descriptors: still a regular file, the same inode as listed, its
clock still expired (a file touched since planning is kept). The look and the unlink are two
system calls: a file renamed over that name in between would be the one unlinked; no portable
call closes that gap, and the unlink never leaves the root either way.

Limits. A run walks the tree once: each batch of a rule goes on with the walk the previous
one left, which holds one open directory descriptor per level and one sorted directory listing
per level in memory (a directory of a million names costs those names while it is walked). A
file added to a directory already listed waits for the next run. A batch keeps only its own
keys. Names that are not valid UTF-8 are kept and counted (their keys could not be recorded in
the audit trail), and so are directories that cannot be listed.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Literal

from retention.config import FilesStoreConfig, Rule
from retention.errors import ConfigError, ConfigIssue, RetentionError, StoreUnavailable
from retention.holds import object_held
from retention.planner import (
    Batch,
    BeforeWrite,
    IntentDetail,
    KeyFilter,
    KeyValues,
    Selection,
    Survey,
)
from retention.rules import (
    DatePattern,
    compile_date_pattern,
    is_expired,
    is_future,
    read_date,
    wall_time_to_utc,
)
from retention.runtime.faults import crash_point

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DEFAULT_GLOB = "**/*"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Verdict = Literal["unmatched", "due", "held", "future", "kept"]
EntryKind = Literal["directory", "file", "symlink", "other"]


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


@cache
def _date_pattern(text: str) -> DatePattern:
    return compile_date_pattern(text)


@dataclass(frozen=True)
class _Listed:
    """A regular file as the walk found it: its key, its lstat, and its place in the tree."""

    path: str
    status: os.stat_result

    @property
    def identity(self) -> tuple[int, int]:
        return self.status.st_dev, self.status.st_ino


@dataclass
class _Tally:
    """What the walk passed over without yielding (reported in a survey's details)."""

    symlinks: int = 0
    unreadable_directories: int = 0
    undecodable_names: int = 0


@dataclass
class _Cursor:
    """A run's walk of one rule, kept between its batches: the walk itself, the last path a
    batch handed out, and the due file read past that batch's end (the next batch's first)."""

    rule: str
    walk: Generator[_Listed, None, None]
    position: str | None = None
    ahead: _Listed | None = None


def open_files_store(config: FilesStoreConfig, *, read_only: bool) -> FilesStore:
    """Given a files store's config, return the store, its root resolved and held open.

    A root that does not exist (or is not a directory, or cannot be opened) raises
    StoreUnavailable; a root that resolves to ``/`` (a symlink to it, say) raises ConfigError.
    Example: with ``root = "/srv/backups"`` (an existing directory), ``open_files_store(config,
    read_only=True).root`` is ``Path("/srv/backups")``.
    """
    try:
        root = config.root.resolve(strict=True)
    except FileNotFoundError:
        raise StoreUnavailable(
            f"store {config.name!r}: the folder {config.root} does not exist"
        ) from None
    except RuntimeError as error:  # how Python 3.11 reports a symlink loop
        raise StoreUnavailable(
            f"store {config.name!r}: cannot resolve {config.root} (symlink loop)"
        ) from error
    except OSError as error:
        raise StoreUnavailable(
            f"store {config.name!r}: cannot resolve {config.root} ({_reason(error)})"
        ) from error
    if root == Path(root.anchor):
        raise ConfigError(
            [
                ConfigIssue(
                    f"stores.{config.name}.root",
                    f"{config.root} resolves to /: refusing the whole machine as a root; "
                    "name the backup folder itself",
                )
            ]
        )
    try:
        root_descriptor = os.open(root, DIRECTORY_FLAGS)
    except NotADirectoryError:
        raise StoreUnavailable(f"store {config.name!r}: {config.root} is not a directory") from None
    except OSError as error:
        raise StoreUnavailable(
            f"store {config.name!r}: cannot open {config.root} ({_reason(error)})"
        ) from error
    return FilesStore(config, root, root_descriptor, read_only=read_only)


class FilesStore:
    """A local folder of backups holding the files of some rules."""

    def __init__(
        self, config: FilesStoreConfig, root: Path, root_descriptor: int, *, read_only: bool
    ) -> None:
        self.config = config
        self.root = root
        self.read_only = read_only
        self._root_descriptor = root_descriptor
        self._cursor: _Cursor | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def ping(self) -> None:
        """Raise StoreUnavailable unless the root is still an open directory."""
        try:
            status = os.fstat(self._root_descriptor)
        except OSError as error:
            raise StoreUnavailable(
                f"store {self.name!r}: {self.config.root} is gone ({_reason(error)})"
            ) from error
        if not stat.S_ISDIR(status.st_mode):
            raise StoreUnavailable(f"store {self.name!r}: {self.config.root} is not a directory")

    def close(self) -> None:
        self._drop_cursor()
        if self._root_descriptor >= 0:
            os.close(self._root_descriptor)
            self._root_descriptor = -1

    # --- schema ---------------------------------------------------------------------------

    def check_rule(self, rule: Rule) -> list[ConfigIssue]:
        """Given a rule, return every way it does not fit this folder (empty: it fits): a rule
        that is not a files rule, a root that cannot be listed."""
        issues: list[ConfigIssue] = []
        if rule.objects is None or rule.objects.clock not in ("mtime", "name_date"):
            issues.append(ConfigIssue(rule.path, f"store {self.name!r} holds files, not rows"))
        try:
            with self._directory(()) as descriptor, os.scandir(descriptor) as entries:
                next(entries, None)
        except OSError as error:
            issues.append(
                ConfigIssue(
                    f"stores.{self.name}.root",
                    f"{self.config.root}: cannot list it ({_reason(error)})",
                )
            )
        return issues

    def period_values(self, rule: Rule) -> tuple[object, ...]:
        """Files have no period column: always ``()``."""
        return ()

    # --- selection ------------------------------------------------------------------------

    def survey(self, selection: Selection, sample_size: int) -> Survey:
        """Given a Selection, return in one walk of the root: files due (and their bytes), held,
        with a future clock, in scope (matching the glob, with a clock), the oldest due clock
        and the first ``sample_size`` due paths."""
        tally = _Tally()
        counts: Counter[Verdict] = Counter()
        due_bytes = 0
        oldest: datetime | date | None = None
        samples: list[KeyValues] = []
        with closing(self._walk(selection.rule, None, tally)) as listed_files:
            for listed in listed_files:
                verdict, clock = self._judge(selection, listed)
                counts[verdict] += 1
                if verdict != "due" or clock is None:
                    continue
                due_bytes += listed.status.st_size
                if oldest is None or _earlier(clock, oldest):
                    oldest = clock
                if len(samples) < sample_size:
                    samples.append((listed.path,))
        details = [("files", counts["due"]), ("bytes", due_bytes)]
        details += [
            (name, value)
            for name, value in (
                ("unmatched", counts["unmatched"]),
                ("symlinks_skipped", tally.symlinks),
                ("unreadable_directories", tally.unreadable_directories),
                ("undecodable_names", tally.undecodable_names),
            )
            if value
        ]
        return Survey(
            due=counts["due"],
            oldest=self._instant(oldest),
            sample_keys=tuple(samples),
            in_scope=counts.total() - counts["unmatched"],
            held=counts["held"],
            future=counts["future"],
            details=tuple(details),
        )

    def _judge(
        self, selection: Selection, listed: _Listed
    ) -> tuple[Verdict, datetime | date | None]:
        """A file's clock and what it is: unmatched (no date in its name), due, held, future
        or kept."""
        clock = self._clock(selection.rule, listed.path, listed.status)
        if clock is None:
            return "unmatched", None
        zone = self.config.timezone
        if is_expired(clock, selection.default, zone):
            if object_held(selection.holds, listed.path):
                return "held", clock
            return "due", clock
        if is_future(clock, selection.as_of, zone):
            return "future", clock
        return "kept", clock

    def _clock(self, rule: Rule, path: str, status: os.stat_result) -> datetime | date | None:
        scope = rule.objects
        assert scope is not None, "a files rule has objects"
        if scope.clock == "name_date":
            assert scope.date_pattern is not None, "name_date comes with date_pattern"
            return read_date(_date_pattern(scope.date_pattern), path)
        # Rounded up to the microsecond: a clock read late never expires a file early.
        return EPOCH + timedelta(microseconds=-(-status.st_mtime_ns // 1000))

    def _instant(self, value: datetime | date | None) -> datetime | date | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            return wall_time_to_utc(value, self.config.timezone, upper=False)
        return value

    def _walk(self, rule: Rule, after: str | None, tally: _Tally) -> Generator[_Listed, None, None]:
        """The regular files the rule's glob matches, after ``after``, in path order."""
        glob = path_glob(rule.objects.glob if rule.objects and rule.objects.glob else DEFAULT_GLOB)
        try:
            top = os.open(".", DIRECTORY_FLAGS, dir_fd=self._root_descriptor)
        except OSError as error:
            raise StoreUnavailable(
                f"store {self.name!r}: cannot open {self.config.root} ({_reason(error)})"
            ) from error
        yield from self._walk_directory(top, "", glob, after, tally)

    def _walk_directory(
        self, descriptor: int, prefix: str, glob: PathGlob, after: str | None, tally: _Tally
    ) -> Generator[_Listed, None, None]:
        """Walk one directory (its descriptor is closed at the end). Its entries are visited by
        name, a directory's name followed by '/': that makes the walk's order the order of the
        paths themselves ("a.txt" before "a/b")."""
        try:
            try:
                entries = _sorted_entries(descriptor)
            except OSError as error:
                if not prefix:
                    raise StoreUnavailable(
                        f"store {self.name!r}: cannot list {self.config.root} ({_reason(error)})"
                    ) from error
                tally.unreadable_directories += 1
                return
            for name, kind in entries:
                path = prefix + name
                if kind == "symlink":
                    if glob.matches(path) or glob.may_reach_under(path):
                        tally.symlinks += 1
                    continue
                if kind == "other":
                    continue
                if not _is_utf8(name):
                    tally.undecodable_names += 1
                    continue
                if kind == "directory":
                    if _before(path + "/", after) or not glob.may_reach_under(path):
                        continue
                    try:
                        child = os.open(name, DIRECTORY_FLAGS, dir_fd=descriptor)
                    except (FileNotFoundError, NotADirectoryError):
                        continue  # gone or replaced since the listing: not entered
                    except OSError as error:
                        if _is_symlink_error(error):
                            continue
                        tally.unreadable_directories += 1
                        continue
                    yield from self._walk_directory(child, path + "/", glob, after, tally)
                    continue
                if (after is not None and path <= after) or not glob.matches(path):
                    continue
                try:
                    status = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError:
                    tally.unreadable_directories += 1
                    continue
                if stat.S_ISREG(status.st_mode):
                    yield _Listed(path, status)
        finally:
            os.close(descriptor)

    # --- purge ----------------------------------------------------------------------------

    def purge_batch(
        self,
        selection: Selection,
        *,
        after: KeyValues | None,
        limit: int,
        dry_run: bool,
        now: datetime,
        hash_key: bytes | None,
        before_write: BeforeWrite | None = None,
        only: KeyFilter | None = None,
    ) -> Batch:
        """Given a Selection and the last path already handled, delete the next ``limit`` due
        files in path order.

        ``before_write`` gets their keys first (the audit intent: if it raises, nothing is
        deleted). Each file is then looked at again right before its unlink (see the module) and
        kept if it changed; one that cannot be deleted counts in ``failed`` (``errors`` says
        why, without its path) and the others go on. Directories the batch left empty are
        removed, never the root. ``dry_run`` selects the same files and deletes nothing.
        ``only`` is for SQL stores (subjects' rules) and must be None here.
        """
        assert only is None, "backup folders purge every due file of their scope"
        if self.read_only and not dry_run:
            raise RetentionError(f"store {self.name!r} was opened read-only: nothing deleted")
        chosen, more = self._next_due(selection, str(after[0]) if after else None, limit)
        keys = tuple((listed.path,) for listed in chosen)
        if not keys:
            return Batch((), 0, more=False)
        if dry_run:
            return Batch(keys, 0, resume_after=keys[-1], more=more)
        started = time.monotonic()
        if before_write is not None:
            before_write(
                keys, IntentDetail(sizes=tuple(listed.status.st_size for listed in chosen))
            )
        deleted = 0
        failures: Counter[tuple[str, str]] = Counter()
        parents: set[tuple[str, ...]] = set()
        not_done: list[KeyValues] = []
        for listed in chosen:
            try:
                removed = self._delete_if_still_due(selection, listed)
            except OSError as error:
                failures[(type(error).__name__, _reason(error))] += 1
                not_done.append((listed.path,))
                continue
            if not removed:
                not_done.append((listed.path,))
            else:
                deleted += 1
                parents.add(tuple(listed.path.split("/")[:-1]))
                if deleted == 1:
                    crash_point("mid_batch")
        self._remove_emptied(parents - {()})
        crash_point("after_commit")
        return Batch(
            keys,
            done=deleted,
            transaction_seconds=time.monotonic() - started,
            resume_after=keys[-1],
            more=more,
            failed=failures.total(),
            not_done_keys=tuple(not_done),
            errors=tuple(
                f"{kind}: {count} ({reason})" for (kind, reason), count in sorted(failures.items())
            ),
        )

    def _next_due(
        self, selection: Selection, start: str | None, limit: int
    ) -> tuple[list[_Listed], bool]:
        """Given a Selection and the last path handled, return the next ``limit`` due files and
        whether there are more. The walk goes on from where the previous batch of the same rule
        stopped, so a run lists each directory once, not once per batch (a flat folder of n
        files would cost n²/batch_size names); any other start begins a new walk."""
        cursor = self._cursor
        if cursor is None or cursor.rule != selection.rule.name or cursor.position != start:
            self._drop_cursor()
            cursor = self._cursor = _Cursor(
                selection.rule.name, self._walk(selection.rule, start, _Tally())
            )
        chosen: list[_Listed] = []
        if cursor.ahead is not None and self._judge(selection, cursor.ahead)[0] == "due":
            chosen.append(cursor.ahead)
        cursor.ahead = None
        try:
            for listed in cursor.walk:
                if self._judge(selection, listed)[0] != "due":
                    continue
                if len(chosen) == limit:
                    cursor.ahead = listed
                    break
                chosen.append(listed)
        except BaseException:
            self._drop_cursor()
            raise
        if cursor.ahead is None:
            self._drop_cursor()  # the walk is over
        elif chosen:
            cursor.position = chosen[-1].path
        return chosen, cursor.ahead is not None

    def _drop_cursor(self) -> None:
        if self._cursor is not None:
            self._cursor.walk.close()
            self._cursor = None

    def _delete_if_still_due(self, selection: Selection, listed: _Listed) -> bool:
        """Unlink one listed file if it is still what was listed and still due; False when it
        changed or went (kept, or already gone). Other OSErrors pass."""
        *directories, name = listed.path.split("/")
        try:
            with self._directory(directories) as descriptor:
                status = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
                now_listed = _Listed(listed.path, status)
                if (
                    not stat.S_ISREG(status.st_mode)
                    or now_listed.identity != listed.identity
                    or self._judge(selection, now_listed)[0] != "due"
                ):
                    return False
                os.unlink(name, dir_fd=descriptor)
                return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as error:
            if _is_symlink_error(error):
                return False  # a directory on the way became a symlink: not followed
            raise

    def _remove_emptied(self, directories: set[tuple[str, ...]]) -> None:
        """Remove the directories the batch left empty, deepest first, then their parents when
        that left them empty too; the root is never one of them."""
        pending = set(directories)
        while pending:
            depth = max(len(directory) for directory in pending)
            level = sorted(directory for directory in pending if len(directory) == depth)
            pending.difference_update(level)
            for directory in level:
                if self._remove_if_empty(directory) and len(directory) > 1:
                    pending.add(directory[:-1])

    def _remove_if_empty(self, directory: tuple[str, ...]) -> bool:
        *parents, name = directory
        try:
            with self._directory(parents) as descriptor:
                os.rmdir(name, dir_fd=descriptor)
        except OSError:
            return False  # not empty (or not ours to remove): it stays
        return True

    @contextmanager
    def _directory(self, parts: Sequence[str]) -> Iterator[int]:
        """The descriptor of a directory under the root, opened component by component without
        following symlinks (the root's own descriptor for no parts)."""
        current = self._root_descriptor
        try:
            for part in parts:
                if part in ("", ".", ".."):
                    raise FileNotFoundError(f"not a path under the root: {part!r}")
                following = os.open(part, DIRECTORY_FLAGS, dir_fd=current)
                if current != self._root_descriptor:
                    os.close(current)
                current = following
            yield current
        finally:
            if current != self._root_descriptor:
                os.close(current)

    def existing_keys(
        self,
        table_name: str,
        key_columns: Sequence[str],
        keys: Sequence[KeyValues],
        marker_column: str | None = None,
    ) -> set[KeyValues]:
        """Given the root (a rule's dataset), its key column and paths, return the paths still
        there. A path that cannot be looked at counts as there: a deletion is never claimed
        that may not have happened."""
        if table_name not in (str(self.config.root), str(self.root)):
            raise RetentionError(f"store {self.name!r} has no folder {table_name!r}")
        return {tuple(key) for key in keys if self._exists(str(key[0]))}

    def _exists(self, path: str) -> bool:
        *directories, name = path.split("/")
        if name in ("", ".", ".."):
            return True
        try:
            with self._directory(directories) as descriptor:
                os.stat(name, dir_fd=descriptor, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return True


def _sorted_entries(descriptor: int) -> list[tuple[str, EntryKind]]:
    """A directory's names and kinds, sorted as the paths they lead to sort (the descriptor
    stays open: the caller's)."""
    entries: list[tuple[str, EntryKind]] = []
    with os.scandir(descriptor) as listing:
        for entry in listing:
            kind: EntryKind
            if entry.is_symlink():
                kind = "symlink"
            elif entry.is_dir(follow_symlinks=False):
                kind = "directory"
            elif entry.is_file(follow_symlinks=False):
                kind = "file"
            else:
                kind = "other"
            entries.append((entry.name, kind))
    entries.sort(key=lambda item: item[0] + "/" if item[1] == "directory" else item[0])
    return entries


def _before(prefix: str, after: str | None) -> bool:
    """Whether every path starting with ``prefix`` comes before ``after`` (a subtree to skip)."""
    return after is not None and prefix < after and not after.startswith(prefix)


def _earlier(value: datetime | date, than: datetime | date) -> bool:
    # One rule's clocks are all of one kind: aware datetimes, naive ones, or dates.
    return value < than


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_symlink_error(error: OSError) -> bool:
    return error.errno == errno.ELOOP


def _reason(error: OSError) -> str:
    """An OSError's reason without its file name (names can hold personal data)."""
    return error.strerror or type(error).__name__


__all__ = ["FilesStore", "PathGlob", "open_files_store", "path_glob"]
