"""The GIL handed over quickly while a store's statements run beside the calling thread.

A thread waiting on the database (psycopg lets go of the GIL) must take the GIL back to send
its next statement or read its rows; while another thread runs Python, it waits up to the
switch interval for it (sys.setswitchinterval; Python's default is 5 ms). PostgreSQL's probed
batches (stores/sql_probed.py) send each DELETE from such a thread while the calling thread
hashes and writes the batch's intent in Python: the DELETE, the batch's longest part, started
up to 5 ms late (issue 17). The same interval serves the partitions' read ahead
(stores/partition_session.py).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SWITCH_INTERVAL_SECONDS = 0.0005
_lock = threading.Lock()
_users = 0  # users in progress
_before = 0.0  # the interval before the first of them


@contextmanager
def quick_handovers() -> Iterator[None]:
    """Shorten the GIL's switch interval to SWITCH_INTERVAL_SECONDS (never lengthen it) until
    the last user that shortened it ends, then restore the one before."""
    global _users, _before
    with _lock:
        if _users == 0:
            _before = sys.getswitchinterval()
            sys.setswitchinterval(min(SWITCH_INTERVAL_SECONDS, _before))
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                sys.setswitchinterval(_before)
