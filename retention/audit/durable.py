"""Durable file writes for the trail: every byte written, fsynced, and the directory too (several
new files at once, their fsyncs overlapping); and the end of a segment read back without
reading it all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from contextlib import suppress
from pathlib import Path

from retention.runtime.ownership import hand_over


def ends_torn(path: Path) -> bool:
    """Whether a segment's last line lacks its newline (read from its last byte only)."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return False
        handle.seek(end - 1)
        return handle.read(1) != b"\n"


def last_line(path: Path) -> bytes | None:
    """Given a segment that ends with a newline, return its last line (without it), reading
    backwards from the end; None when the file is empty."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return None
        chunk_size, tail = 4096, b""
        position = end
        while position > 0:
            step = min(chunk_size, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
            newline = tail.rfind(b"\n", 0, len(tail) - 1)
            if newline >= 0:
                return tail[newline + 1 :].rstrip(b"\n")
        return tail.rstrip(b"\n")


def complete_lines_end(path: Path) -> int:
    """Given a segment, return where its last complete line ends (0: none does), reading
    backwards from the end in bounded pieces."""
    with path.open("rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        while position > 0:
            step = min(2**20, position)
            position -= step
            handle.seek(position)
            newline = handle.read(step).rfind(b"\n")
            if newline >= 0:
                return position + newline + 1
        return 0


def count_lines(path: Path) -> int:
    """Given a file, return how many newlines it holds, read in bounded pieces."""
    count = 0
    with path.open("rb") as handle:
        while piece := handle.read(2**20):
            count += piece.count(b"\n")
    return count


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_all(descriptor: int, content: bytes) -> None:
    """Write every byte: on a nearly full disk, write() may take only some of them."""
    view = memoryview(content)
    while view:
        view = view[os.write(descriptor, view) :]


def write_file(path: Path, content: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        hand_over(path, descriptor)
        write_all(descriptor, content)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_durably(path: Path, content: bytes) -> None:
    write_file(path, content)
    fsync_directory(path.parent)


def write_new_files(files: Sequence[tuple[Path, Callable[[], bytes]]], beside: Executor) -> None:
    """Given new files (each a path and what makes its bytes) and threads to wait on beside this
    one, write each whole and make it durable, its name included; return once all of it is.

    Every file is created first, so the fsync of each directory (which makes the new names
    durable) starts at once, beside the writing; each file's fsync starts as soon as its bytes
    are written; the bytes of the next file are made meanwhile (fsync releases the GIL). Raises
    the OSError of the first step that failed (naming the file), after every fsync started has
    ended; the files stay, for the caller to remove.
    """
    descriptors: list[int] = []
    waits: list[Future[None]] = []
    try:
        for path, _content in files:
            try:
                descriptors.append(
                    os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                )
                hand_over(path, descriptors[-1])
            except OSError as error:
                raise OSError(error.errno, error.strerror, str(path)) from error
        for directory in dict.fromkeys(path.parent for path, _content in files):
            waits.append(beside.submit(fsync_directory, directory))
        for (path, content), descriptor in zip(files, descriptors, strict=True):
            try:
                write_all(descriptor, content())
            except OSError as error:
                raise OSError(error.errno, error.strerror, str(path)) from error
            waits.append(beside.submit(_fsync, descriptor, path))
        for wait in waits:
            wait.result()
    finally:
        for wait in waits:
            with suppress(Exception):
                wait.result()
        for descriptor in descriptors:
            with suppress(OSError):
                os.close(descriptor)


def _fsync(descriptor: int, path: Path) -> None:
    try:
        os.fsync(descriptor)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from error
