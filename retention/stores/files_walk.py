"""The walk of a backup folder's tree, safe against symlinks: every directory is reached through
descriptors opened component by component with O_NOFOLLOW from the root's own, so a symlink (to
a file or a directory, inside the root or out) is never followed, and a directory swapped for a
symlink after listing is not entered. Files come in code-point order of their root-relative
paths (a keyset order). Names that are not valid UTF-8, directories that cannot be listed, and
entries the glob matches that are no regular file (FIFOs, sockets, devices) are counted, not
yielded: nothing here opens an entry that is not a directory (a FIFO's open blocks until a
writer comes), it is looked at with lstat only."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retention.errors import StoreUnavailable
from retention.stores.files_glob import PathGlob
from retention.wording import is_text

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
EntryKind = Literal["directory", "file", "symlink", "other"]


@dataclass(frozen=True)
class Listed:
    """A regular file as the walk found it: its key, its lstat, and its place in the tree."""

    path: str
    status: os.stat_result

    @property
    def identity(self) -> tuple[int, int]:
        return self.status.st_dev, self.status.st_ino


@dataclass
class Tally:
    """What the walk passed over without yielding (reported in a survey's details)."""

    symlinks: int = 0
    unreadable_directories: int = 0
    undecodable_names: int = 0
    # FIFOs, sockets, block and character devices the glob matches (neither listed nor deleted).
    not_regular: int = 0


def walk_directory(
    descriptor: int,
    prefix: str,
    glob: PathGlob,
    after: str | None,
    tally: Tally,
    *,
    store: str,
    root: Path,
) -> Generator[Listed, None, None]:
    """Given an open directory (closed at the end), its path under the root (``prefix``, "" for
    the root), a glob and the last path already handled, yield the regular files under it that
    the glob matches, after ``after``, in path order; what is passed over is counted in
    ``tally``. ``store`` and ``root`` name the folder in the error raised when the root itself
    cannot be listed (StoreUnavailable).

    Its entries are visited by name, a directory's name followed by '/': that makes the walk's
    order the order of the paths themselves ("a.txt" before "a/b"). Example: a root holding
    ``a.txt``, ``a/b.tar`` and ``a0.tar`` yields them in that order for the glob ``**/*``.
    """
    try:
        try:
            entries = sorted_entries(descriptor)
        except OSError as error:
            if not prefix:
                raise StoreUnavailable(
                    f"store {store!r}: cannot list {root} ({os_reason(error)})"
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
                if glob.matches(path):
                    tally.not_regular += 1
                continue
            if not is_text(name):
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
                    if is_symlink_error(error):
                        continue
                    tally.unreadable_directories += 1
                    continue
                yield from walk_directory(
                    child, path + "/", glob, after, tally, store=store, root=root
                )
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
                yield Listed(path, status)
            elif not stat.S_ISDIR(status.st_mode) and not stat.S_ISLNK(status.st_mode):
                tally.not_regular += 1  # listed as a file, a FIFO or a socket by now
    finally:
        os.close(descriptor)


@contextmanager
def open_directory(root_descriptor: int, parts: Sequence[str]) -> Iterator[int]:
    """Given the root's descriptor and a directory's path components under it, yield that
    directory's descriptor, opened component by component without following symlinks (the
    root's own descriptor for no parts; any other is closed at the end). Example: ``with
    open_directory(root, ["nightly", "2026"]) as descriptor: os.stat("db.tar", dir_fd=descriptor,
    follow_symlinks=False)``."""
    current = root_descriptor
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise FileNotFoundError(f"not a path under the root: {part!r}")
            following = os.open(part, DIRECTORY_FLAGS, dir_fd=current)
            if current != root_descriptor:
                os.close(current)
            current = following
        yield current
    finally:
        if current != root_descriptor:
            os.close(current)


def sorted_entries(descriptor: int) -> list[tuple[str, EntryKind]]:
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


def is_symlink_error(error: OSError) -> bool:
    return error.errno == errno.ELOOP


def os_reason(error: OSError) -> str:
    """An OSError's reason without its file name (names can hold personal data)."""
    return error.strerror or type(error).__name__
