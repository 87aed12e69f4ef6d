"""A connection kept between uses (stores/sql_held.py): reused while in use, given back to the
pool once idle too long or once a use failed."""

from __future__ import annotations

from typing import Any

import pytest

from retention.stores import sql_held
from retention.stores.sql_held import HeldConnection


class _Connection:
    def __init__(self, opened: list[_Connection]) -> None:
        self.closed = False
        opened.append(self)

    def close(self) -> None:
        self.closed = True


def _held() -> tuple[HeldConnection, list[_Connection]]:
    opened: list[_Connection] = []
    held = HeldConnection(lambda: _Connection(opened))  # type: ignore[arg-type, return-value]
    return held, opened


def test_one_connection_serves_use_after_use_until_closed() -> None:
    held, opened = _held()
    for _ in range(3):
        with held.use() as connection:
            assert connection is opened[0]
    assert len(opened) == 1
    assert not opened[0].closed
    held.close()
    assert opened[0].closed


def test_a_connection_idle_too_long_is_given_back_and_another_checked_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(sql_held.time, "monotonic", lambda: clock[0])
    held, opened = _held()
    with held.use():
        pass
    clock[0] += sql_held.HELD_IDLE_SECONDS / 2
    with held.use():
        pass
    assert len(opened) == 1
    clock[0] += sql_held.HELD_IDLE_SECONDS + 0.1
    with held.use() as connection:
        assert connection is opened[1]
    assert opened[0].closed
    assert not opened[1].closed


def test_a_connection_whose_use_failed_is_given_back() -> None:
    held, opened = _held()
    with pytest.raises(RuntimeError), held.use():
        raise RuntimeError("the statement failed")
    assert opened[0].closed
    with held.use() as connection:
        assert connection is opened[1]
    held.close()
    held.close()
    assert opened[1].closed


def test_a_connection_that_cannot_even_close_is_dropped_quietly() -> None:
    def refuse() -> Any:
        raise OSError("gone")

    held, opened = _held()
    with held.use() as connection:
        connection.close = refuse  # type: ignore[method-assign]
    held.close()
    assert len(opened) == 1
