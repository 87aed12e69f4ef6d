"""A connection a SQL store keeps checked out between uses: PostgreSQL's probed batches
(stores/sql_probed.py) use one for their DELETEs and one for their probes, batch after batch.

Checked out of the pool for every batch, each cost a pre-ping (a round trip, the DELETE's on
the batch's critical path), the pool's check-out and reset, about 1.5 ms of CPU a statement
(issue 17). Held, a connection is pinged only where the pool would have found it stale: one
unused for HELD_IDLE_SECONDS goes back to the pool, and the next use checks one out afresh
(pre-pinged). One whose use failed goes back too, so that a batch that follows starts on a
connection the pool has checked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

# Past this idle time a held connection is given back rather than trusted: the pool's pre-ping
# then checks the next one (a server restarted between two runs of a daemon, say).
HELD_IDLE_SECONDS = 5.0


class HeldConnection:
    """One connection, kept between uses, for one user at a time."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._connection: Connection | None = None
        self._last_used = 0.0
        self._lock = threading.Lock()

    @contextmanager
    def use(self) -> Iterator[Connection]:
        """Yield the held connection (checked out now if none is held, or the one held has been
        idle too long); the block must leave no transaction open. If the block raises, the
        connection goes back to the pool."""
        with self._lock:
            connection = self._connection
            if connection is not None and time.monotonic() - self._last_used > HELD_IDLE_SECONDS:
                self._connection = None
                _give_back(connection)
                connection = None
            if connection is None:
                connection = self._connect()
                self._connection = connection
            try:
                yield connection
            except BaseException:
                self._connection = None
                _give_back(connection)
                raise
            finally:
                self._last_used = time.monotonic()

    def close(self) -> None:
        """Give the held connection back to the pool, if one is held."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            _give_back(connection)


def _give_back(connection: Connection) -> None:
    # A connection whose server went away cannot even be rolled back: the pool drops it.
    with suppress(Exception):
        connection.close()
