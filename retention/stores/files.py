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
the audit trail), and so are directories that cannot be listed, and FIFOs, sockets and devices
(never opened: a FIFO's open would wait for a writer; never deleted: only regular files are
backups).
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Literal

from retention.config import FilesStoreConfig, Rule
from retention.errors import ConfigError, ConfigIssue, RetentionError, StoreUnavailable
from retention.holds import object_held
from retention.rules import (
    DatePattern,
    compile_date_pattern,
    is_expired,
    is_future,
    read_date,
    wall_time_to_utc,
)
from retention.runtime.faults import crash_point
from retention.selection import KeyValues, Selection
from retention.store_protocol import (
    Batch,
    BeforeCommit,
    BeforeWrite,
    IntentDetail,
    KeyFilter,
    Survey,
)
from retention.stores.files_glob import path_glob
from retention.stores.files_walk import (
    DIRECTORY_FLAGS,
    Listed,
    Tally,
    is_symlink_error,
    open_directory,
    os_reason,
    walk_directory,
)

DEFAULT_GLOB = "**/*"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Verdict = Literal["unmatched", "due", "held", "future", "kept"]


@cache
def _date_pattern(text: str) -> DatePattern:
    return compile_date_pattern(text)


@dataclass
class _Cursor:
    """A run's walk of one rule, kept between its batches: the walk itself, the last path a
    batch handed out, and the due file read past that batch's end (the next batch's first)."""

    rule: str
    walk: Generator[Listed, None, None]
    position: str | None = None
    ahead: Listed | None = None


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
            f"store {config.name!r}: cannot resolve {config.root} ({os_reason(error)})"
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
            f"store {config.name!r}: cannot open {config.root} ({os_reason(error)})"
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
                f"store {self.name!r}: {self.config.root} is gone ({os_reason(error)})"
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
            with (
                open_directory(self._root_descriptor, ()) as descriptor,
                os.scandir(descriptor) as entries,
            ):
                next(entries, None)
        except OSError as error:
            issues.append(
                ConfigIssue(
                    f"stores.{self.name}.root",
                    f"{self.config.root}: cannot list it ({os_reason(error)})",
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
        tally = Tally()
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
                ("not_regular_files", tally.not_regular),
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
        self, selection: Selection, listed: Listed
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

    def _walk(self, rule: Rule, after: str | None, tally: Tally) -> Generator[Listed, None, None]:
        """The regular files the rule's glob matches, after ``after``, in path order."""
        glob = path_glob(rule.objects.glob if rule.objects and rule.objects.glob else DEFAULT_GLOB)
        try:
            top = os.open(".", DIRECTORY_FLAGS, dir_fd=self._root_descriptor)
        except OSError as error:
            raise StoreUnavailable(
                f"store {self.name!r}: cannot open {self.config.root} ({os_reason(error)})"
            ) from error
        yield from walk_directory(
            top, "", glob, after, tally, store=self.name, root=self.config.root
        )

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
        before_commit: BeforeCommit | None = None,
    ) -> Batch:
        """Given a Selection and the last path already handled, delete the next ``limit`` due
        files in path order.

        ``before_write`` gets their keys first (the audit intent: if it raises, nothing is
        deleted). Each file is then looked at again right before its unlink (see the module) and
        kept if it changed; one that cannot be deleted counts in ``failed`` (``errors`` says
        why, without its path) and the others go on. Directories the batch left empty are
        removed, never the root. ``dry_run`` selects the same files and deletes nothing.
        ``only`` is for SQL stores (subjects' rules) and must be None here; ``before_commit``
        is never called (no transaction commits a batch of files).
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
                failures[(type(error).__name__, os_reason(error))] += 1
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
    ) -> tuple[list[Listed], bool]:
        """Given a Selection and the last path handled, return the next ``limit`` due files and
        whether there are more. The walk goes on from where the previous batch of the same rule
        stopped, so a run lists each directory once, not once per batch (a flat folder of n
        files would cost n²/batch_size names); any other start begins a new walk."""
        cursor = self._cursor
        if cursor is None or cursor.rule != selection.rule.name or cursor.position != start:
            self._drop_cursor()
            cursor = self._cursor = _Cursor(
                selection.rule.name, self._walk(selection.rule, start, Tally())
            )
        chosen: list[Listed] = []
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

    def _delete_if_still_due(self, selection: Selection, listed: Listed) -> bool:
        """Unlink one listed file if it is still what was listed and still due; False when it
        changed or went (kept, or already gone). Other OSErrors pass."""
        *directories, name = listed.path.split("/")
        try:
            with open_directory(self._root_descriptor, directories) as descriptor:
                status = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
                now_listed = Listed(listed.path, status)
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
            if is_symlink_error(error):
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
            with open_directory(self._root_descriptor, parents) as descriptor:
                os.rmdir(name, dir_fd=descriptor)
        except OSError:
            return False  # not empty (or not ours to remove): it stays
        return True

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
            with open_directory(self._root_descriptor, directories) as descriptor:
                os.stat(name, dir_fd=descriptor, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return True


def _earlier(value: datetime | date, than: datetime | date) -> bool:
    # One rule's clocks are all of one kind: aware datetimes, naive ones, or dates.
    return value < than


__all__ = ["FilesStore", "open_files_store"]
