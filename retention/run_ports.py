"""What a run needs from outside the core: the audit trail, a log, a progress display and a
set of subjects (``SubjectsInMemory`` is the plain one). Protocols only, and that plain set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from retention.planner import RulePlan
from retention.selection import KeyValues
from retention.store_protocol import NO_DETAIL, Batch, IntentDetail, Keys, RecordStore


class Audit(Protocol):
    """Where batches are recorded (audit/recorder.py). ``intent`` must be durable before it
    returns: it is called before anything the batch writes is committed."""

    def intent(
        self,
        rule_plan: RulePlan,
        keys: Keys,
        partition: str | None = None,
        detail: IntentDetail = NO_DETAIL,
    ) -> int: ...

    def result(
        self, intent: int, rule_plan: RulePlan, status: str, batch: Batch | None
    ) -> None: ...

    def not_done(self, intent: int, keys: tuple[KeyValues, ...]) -> None:
        """Record durably, before the batch of ``intent`` commits, its keys that it will not
        have purged (the store's ``before_commit``)."""

    def unresolved(self, intent: int, store: RecordStore) -> None: ...


class SubjectSet(Protocol):
    """The subjects a cross-store rule finished listing in this run: its subjects' rule may
    delete only their rows. runtime/subject_set.py keeps them on disk; ``SubjectsInMemory``
    is the plain set."""

    def add(self, subjects: Sequence[KeyValues]) -> None: ...

    def among(self, keys: Sequence[KeyValues]) -> set[KeyValues]: ...

    def close(self) -> None: ...


class SubjectsInMemory:
    """A SubjectSet in a Python set (tests, small runs)."""

    def __init__(self) -> None:
        self._subjects: set[KeyValues] = set()

    def add(self, subjects: Sequence[KeyValues]) -> None:
        self._subjects.update(subjects)

    def among(self, keys: Sequence[KeyValues]) -> set[KeyValues]:
        return {key for key in keys if key in self._subjects}

    def close(self) -> None:
        self._subjects.clear()


class Progress(Protocol):
    """Told how far each rule got, batch by batch (a terminal's progress display)."""

    def rule_started(self, rule: str, due: int) -> None: ...

    def rule_advanced(self, rule: str, done: int) -> None: ...

    def rule_finished(self, rule: str) -> None: ...


class Logger(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...

    def error(self, event: str, **fields: Any) -> Any: ...
