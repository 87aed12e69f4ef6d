"""Work done in a forked child process while this one does its own: `config validate` checks its
S3 stores there (botocore's import, S3's service model, the clients) while the parent checks the
other stores (SQLAlchemy's import, the reflection), each on a core of its own. Both are CPU work
that one interpreter would do one after the other (docs/performance.md, start-up).

The child hands back its result, or the expected error (RetentionError) it raised, pickled
through a pipe; any other exception comes back as its traceback, raised as ChildFailed. It never
outlives the parent: it ends when its parent dies (a second pipe reaches end of file) and is
killed when the parent abandons it (an error, Ctrl-C). Ctrl-C reaches both, one process group:
the child dies of it, the parent raises KeyboardInterrupt as it would have alone.

A child started with ``forked_awaiting`` can begin before its input exists (its imports, say)
and then wait for it: the parent sends it once (``Forked.send``), pickled through a third pipe.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Generic, NoReturn, TypeVar

from retention.errors import RetentionError

Result = TypeVar("Result")
Input = TypeVar("Input")


class ChildFailed(Exception):
    """The child raised something other than a RetentionError (a bug: the message holds its
    traceback), or ended without handing back a result."""


class Forked(Generic[Result]):
    """A child process doing some work; ``result`` waits for what it found; ``send`` hands a
    child of ``forked_awaiting`` its input."""

    def __init__(self, pid: int, results: int, lifeline: int, doing: str, inbox: int = -1) -> None:
        self.pid = pid
        self._results = results
        self._lifeline = lifeline
        self._inbox = inbox
        self._doing = doing
        self._reaped = False

    def send(self, value: object) -> None:
        """Hand the child its input (once): ``value``, pickled (read-only mappings as dicts that
        the child turns back into read-only mappings)."""
        inbox, self._inbox = self._inbox, -1
        with open(inbox, "wb") as pipe:
            pipe.write(_pickled(value))

    def result(self) -> Result:
        """Wait for the child; return its result, or raise the RetentionError it raised
        (ChildFailed for anything else, or when it died without a result)."""
        results, self._results = self._results, -1
        with open(results, "rb") as pipe:
            data = pipe.read()
        _pid, status = os.waitpid(self.pid, 0)
        self._reaped = True
        self._close_lifeline()
        if not data:
            raise ChildFailed(f"{self._doing}, in a child process, {_ending(status)}")
        # Written by this process's own child, through a pipe only the two of them hold.
        kind, payload = pickle.loads(data)  # noqa: S301
        if kind == "result":
            return payload  # type: ignore[no-any-return]
        if kind == "error":
            raise payload
        raise ChildFailed(f"{self._doing}, in a child process, failed:\n{payload}")

    def abandon(self) -> None:
        """End the child if it was not waited for (its result is no longer wanted), and reap
        it."""
        if not self._reaped:
            # Killed, not asked: it is only ever abandoned because the parent has failed.
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self._reaped = True
        for name in ("_results", "_inbox"):
            if getattr(self, name) >= 0:
                os.close(getattr(self, name))
                setattr(self, name, -1)
        self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1


def can_fork() -> bool:
    """Whether a child process can do work beside this one: the platform forks, the process
    may run on two CPUs or more, and no other thread runs (a thread holding a lock at the fork
    would leave it held in the child for ever)."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return False
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) > 1
    return (os.cpu_count() or 1) > 1


@contextmanager
def forked(work: Callable[[], Result], doing: str) -> Iterator[Forked[Result] | None]:
    """Given some work and what it does (for messages), start it in a child process and yield
    the child (None where ``can_fork`` says no: then do the work here). A child whose result
    was not waited for when the block ends is killed."""
    with _started(work, doing, awaits=False) as child:
        yield child


@contextmanager
def forked_awaiting(
    work: Callable[[Callable[[], Any]], Result], doing: str
) -> Iterator[Forked[Result] | None]:
    """As ``forked``, for work that can start before its input exists: the child calls
    ``work(receive)``, and ``receive()`` waits for what the parent hands it with
    ``Forked.send`` (it raises ChildFailed in the child if the parent closes without
    sending)."""
    with _started(work, doing, awaits=True) as child:
        yield child


@contextmanager
def _started(
    work: Callable[..., Result], doing: str, *, awaits: bool
) -> Iterator[Forked[Result] | None]:
    if not can_fork():
        yield None
        return
    results_read, results_write = os.pipe()
    lifeline_read, lifeline_write = os.pipe()
    inbox_read, inbox_write = os.pipe() if awaits else (-1, -1)
    # What the parent buffered would otherwise be written twice, once by each process.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(results_read)
        os.close(lifeline_write)
        if not awaits:
            _child(work, results_write, lifeline_read)
        os.close(inbox_write)
        _child(lambda: work(lambda: _received(inbox_read)), results_write, lifeline_read)
    os.close(results_write)
    os.close(lifeline_read)
    if awaits:
        os.close(inbox_read)
    child: Forked[Result] = Forked(pid, results_read, lifeline_write, doing, inbox_write)
    try:
        yield child
    finally:
        child.abandon()


def _mapping_proxy(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(mapping)


def _pickled(value: object) -> bytes:
    """``value`` pickled, its read-only mappings (frozen value objects hold them) included."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.dispatch_table = {
        **copyreg.dispatch_table,
        MappingProxyType: lambda mapping: (_mapping_proxy, (dict(mapping),)),
    }
    pickler.dump(value)
    return buffer.getvalue()


def _received(inbox: int) -> Any:
    with open(inbox, "rb") as pipe:
        data = pipe.read()
    if not data:
        raise ChildFailed("the parent closed without handing the child its input")
    # Written by this process's parent, through a pipe only the two of them hold.
    return pickle.loads(data)  # noqa: S301


def _child(work: Callable[[], object], results: int, lifeline: int) -> NoReturn:
    """Do ``work`` and write its outcome to ``results``; exit without running the parent's
    exit handlers or flushing its buffers (they are the parent's to write)."""
    code = 1
    try:
        # Ctrl-C ends the child at once (the parent reports it); a signal the parent ignores
        # (a background job's SIGINT, say) the child ignores too.
        for number in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(number) is not signal.SIG_IGN:
                signal.signal(number, signal.SIG_DFL)
        threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
        try:
            outcome: tuple[str, object] = ("result", work())
        except RetentionError as error:
            outcome = ("error", error)
        except BaseException:
            outcome = ("failed", traceback.format_exc())
        try:
            data = pickle.dumps(outcome)
        except Exception:
            data = pickle.dumps(("failed", traceback.format_exc()))
        with open(results, "wb") as pipe:
            pipe.write(data)
        code = 0
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def _exit_with_parent(lifeline: int) -> None:
    # Nothing is ever written to the lifeline: the read returns at end of file, when the
    # parent's end closes (the parent died, or is done with this child).
    os.read(lifeline, 1)
    os._exit(1)


def _ending(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was ended by {signal.Signals(os.WTERMSIG(status)).name} before it finished"
    return f"exited with status {os.waitstatus_to_exitcode(status)} without a result"
