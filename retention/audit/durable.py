"""Durable file writes for the trail: every byte written, fsynced, and the directory too; a
file replaced whole or not at all; and the end of a segment read back without reading it all.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path


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
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(descriptor, content)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_durably(path: Path, content: bytes) -> None:
    write_file(path, content)
    fsync_directory(path.parent)


def replace_durably(path: Path, content: bytes) -> None:
    """Write a file whole or not at all: a temporary file, fsynced, then renamed over ``path``
    (a full disk or a crash leaves at most the temporary, never a torn ``path``)."""
    temporary = path.with_name(f"{path.name}.tmp")
    try:
        write_file(temporary, content)
        os.replace(temporary, path)
    except OSError:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
