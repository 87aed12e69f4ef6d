"""Reading ahead in a thread (``ReadAhead``): an iterator that waits on the database at every
step is stepped ahead of its reader, so that the database reads while Python works."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import suppress
from queue import Empty, Queue
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ReadAhead(Generic[T]):
    """An iterator whose every step waits on the database, stepped in a thread from the start,
    up to ``depth`` items ahead of its reader: the database reads the next items while this
    one is handled. What the iterator holds (its connection, its transaction) is the thread's
    until it stops, which it does before ``close()`` returns (read to its end, or not); what
    it raises is raised to the reader."""

    def __init__(self, items: Iterator[T], depth: int = 1, name: str = "retention-read-ahead"):
        self._items = items
        self._queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set():
                    return
                self._queue.put((False, item))
            self._queue.put((True, None))
        except BaseException as error:  # handed to the reader, raised there
            self._queue.put((True, error))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        ended, item = self._queue.get()
        if ended:
            self._ended = True
            if item is not None:
                raise item
            raise StopIteration
        return item  # type: ignore[no-any-return]

    def wait(self) -> None:
        """Wait for the thread to end by itself: only when ``depth`` holds every item left
        and the end (else it would wait for a reader)."""
        self._thread.join()

    def close(self) -> None:
        """Stop the thread (after the step it is in) and wait for it to end."""
        self._ended = True
        self._stop.set()
        while self._thread.is_alive():
            # Room for an item being handed over, so that the thread sees the stop.
            with suppress(Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()


__all__ = ["ReadAhead"]
