"""Verify an audit trail without trusting the host that wrote it.

One pass over every segment, in order, checks for each entry: its bytes are the canonical JSON
(RFC 8785) of what they hold, ``seq`` counts from 0, ``prev`` is the SHA-256 of the previous line
(``GENESIS`` for the first), its type is known and its fields have their types; the leaves file of
each ``batch.intent`` / ``batch.reconciled`` hashes to the entry's ``leaves_root`` (RFC 6962) and
holds ``selected`` / ``done`` leaves, none twice; each ``batch.result`` / ``batch.reconciled``
settles an earlier intent of the same rule, once; and each checkpoint covers exactly the entries
before it (``size``, RFC 6962 ``root`` over their exact bytes) with an Ed25519 signature by a key
whose window covers its time. Checked against anchored checkpoints (copies kept elsewhere), it also
catches a truncated tail or a rewritten history.

Memory holds a few hashes per Merkle tree and one small record per batch, never the leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retention.audit.batch_detail import children_count, detail_problem, versions_problem
from retention.audit.durable import count_lines, ends_torn
from retention.audit.entries import (
    FORMAT_VERSIONS,
    GENESIS,
    LONGEST_ENTRY_BYTES,
    StoredEntry,
    canonical,
    entry_hash,
    leaves_path,
    leaves_per_chunk,
    read_entries,
    require_trail,
    segments,
)
from retention.audit.entry_checks import (
    ENTRY_FIELDS,
    field_problem,
    json_object,
    leaves_summary,
    parse_time,
    signature_problem,
)
from retention.audit.entry_shape import shape_problem
from retention.audit.keys import PublicKey
from retention.audit.merkle import MerkleFrontier, leaf_hash
from retention.errors import AuditFailure
from retention.wording import counted, shown_path

BATCH_STATUSES = ("committed", "rolled_back")


@dataclass(frozen=True)
class Problem:
    """Why a trail is invalid, and the first entry that shows it."""

    segment: Path | None
    line: int | None
    seq: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{shown_path(self.segment)} line {self.line}" if self.segment else "the trail"
        return f"{where} (seq {self.seq}): {self.reason}"


@dataclass(frozen=True)
class Anchor:
    """A checkpoint kept outside the host: its exact bytes, where it came from, what it says."""

    source: str
    raw: bytes
    content: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.content["seq"])


@dataclass
class Verification:
    """What one pass over a trail found: a summary, and the first problem if any."""

    entries: int = 0
    segments: int = 0
    runs: int = 0
    batches: int = 0
    records_purged: int = 0
    last_checkpoint: StoredEntry | None = None
    anchors: list[Anchor] = field(default_factory=list)
    problem: Problem | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None

    @property
    def unsigned(self) -> int:
        """How many entries come after the last checkpoint (not yet covered by a signature)."""
        if self.last_checkpoint is None:
            return self.entries
        return self.entries - int(self.last_checkpoint.content["seq"]) - 1


def _load_anchor(source: str, raw: bytes, keys: Sequence[PublicKey]) -> Anchor:
    """Given where an anchor came from and its bytes, return it; AuditFailure unless it is one
    canonical, validly signed checkpoint line."""
    line = raw[:-1] if raw.endswith(b"\n") else raw
    try:
        content = json_object(line)
        valid_canonical = canonical(content) == line
    except ValueError:
        content, valid_canonical = {}, False
    if not valid_canonical or content.get("type") != "checkpoint" or field_problem(content):
        raise AuditFailure(f"anchor {source}: not one checkpoint entry in canonical JSON")
    if not isinstance(content.get("seq"), int):
        raise AuditFailure(f"anchor {source}: its seq is not an integer")
    problem = signature_problem(content, keys)
    if problem:
        raise AuditFailure(f"anchor {source}: {problem}")
    return Anchor(source, line, content)


@dataclass
class _Intent:
    """An intent seen so far: its run and rule, how many records it selected, which entry
    settled it."""

    run_id: str
    rule: str
    selected: int
    settled_by: int | None = None
    # The child rows it names (None: its rule has no children, or an older trail).
    children: int | None = None


class _Walker:
    """The state of one verification pass: what the next entry must look like."""

    def __init__(
        self,
        directory: Path,
        keys: Sequence[PublicKey],
        anchors: Sequence[Anchor],
        torn: tuple[Path, int] | None,
    ):
        self.directory = directory
        self.keys = keys
        self.torn = torn
        self.anchors: dict[int, list[Anchor]] = {}
        for anchor in anchors:
            self.anchors.setdefault(anchor.seq, []).append(anchor)
        self.result = Verification(anchors=list(anchors))
        self.frontier = MerkleFrontier()
        self.prev = GENESIS
        self.previous: StoredEntry | None = None
        self.intents: dict[int, _Intent] = {}
        # Runs started, and those finished: nothing of a run may come after its run.finished.
        self.started: set[str] = set()
        self.finished: set[str] = set()

    def walk(self, entries: Iterable[StoredEntry]) -> Verification:
        """Given the entries in order, return the verification."""
        for stored in entries:
            problem = self._check(stored)
            if problem is not None:
                self.result.problem = problem
                return self.result
            if stored.content["type"] == "checkpoint":
                self.result.last_checkpoint = stored
            self.frontier.add(leaf_hash(stored.raw))
            self.prev = entry_hash(stored.raw)
            self.previous = stored
            self.result.entries += 1
        self._check_anchors_reached()
        return self.result

    def _problem(self, stored: StoredEntry, reason: str) -> Problem:
        """Given the entry being checked and why it is bad, return the Problem naming it."""
        return Problem(stored.segment, stored.line, self.frontier.size, reason)

    def _check(self, stored: StoredEntry) -> Problem | None:
        """Given the next entry, return the first problem it shows, or None."""
        content, expected = stored.content, self.frontier.size
        if self.torn == (stored.segment, stored.line):
            return self._problem(
                stored, "no newline at the end: a torn write (the next run drops it)"
            )
        if stored.too_long:
            return self._problem(
                stored, f"longer than {LONGEST_ENTRY_BYTES // 2**20} MiB: not an entry (not read)"
            )
        if not content:
            return self._problem(stored, "not a JSON object")
        try:
            is_canonical = canonical(content) == stored.raw
        except ValueError as error:
            return self._problem(stored, f"not representable as canonical JSON: {error}")
        if not is_canonical:
            return self._problem(stored, "not canonical JSON (RFC 8785): re-serialised or edited")
        if content.get("v") not in FORMAT_VERSIONS or isinstance(content.get("v"), bool):
            return self._problem(stored, f"unknown format version {content.get('v')!r}")
        seq = content.get("seq")
        if seq != expected or isinstance(seq, bool):
            return self._problem(
                stored,
                f"seq is {seq!r} where {expected} was expected: an entry is missing, inserted "
                "or out of order",
            )
        if content.get("prev") != self.prev:
            return self._broken_link(stored)
        entry_type = content.get("type")
        # Not hashed first: a forged type of [] or {} is no key of ENTRY_FIELDS either.
        if not isinstance(entry_type, str) or entry_type not in ENTRY_FIELDS:
            return self._problem(stored, f"unknown entry type {entry_type!r}")
        reason = (
            shape_problem(content) or self._check_type(content, seq) or self._check_anchor(stored)
        )
        return self._problem(stored, reason) if reason else None

    def _broken_link(self, stored: StoredEntry) -> Problem:
        """Given an entry whose prev is not the hash of the previous line, return the problem, named
        on the previous entry (whose bytes no longer hash to what was recorded)."""
        previous = self.previous
        if previous is None:
            return self._problem(stored, "prev of the first entry is not GENESIS (64 zeros)")
        return Problem(
            previous.segment,
            previous.line,
            self.frontier.size - 1,
            f"altered: its SHA-256 is not the prev recorded by the next entry (seq "
            f"{self.frontier.size}, {stored.segment.name} line {stored.line})",
        )

    def _check_type(self, content: dict[str, Any], seq: int) -> str | None:
        """Given a well-formed entry and its seq, run the checks of its type; return why it fails,
        or None."""
        entry_type = content["type"]
        run_problem = self._check_run(content)
        if run_problem is not None:
            return run_problem
        if entry_type == "run.started":
            self.result.runs += 1
        elif entry_type == "batch.intent":
            return self._check_intent(content, seq)
        elif entry_type in ("batch.result", "batch.reconciled"):
            return self._check_settlement(content, seq)
        elif entry_type == "checkpoint":
            return self._check_checkpoint(content, seq)
        return None

    def _check_run(self, content: dict[str, Any]) -> str | None:
        """Given an entry, check it against the life of its run: a run starts once and finishes
        once; its batches come between the two (a reconciliation may come before its start,
        never after its end). Return why not, or None."""
        entry_type, run_id = content["type"], content.get("run_id")
        if entry_type == "run.started":
            if run_id in self.started:
                return f"run {run_id} was already started"
            self.started.add(str(run_id))
        elif entry_type in ("batch.intent", "batch.result", "run.finished") and (
            run_id not in self.started
        ):
            return f"run {run_id} has no earlier run.started"
        if (
            run_id in self.finished
            and entry_type in ENTRY_FIELDS
            and entry_type
            not in (
                "config.changed",
                "checkpoint",
            )
        ):
            return f"run {run_id} had already finished: nothing of it can come after"
        if entry_type == "run.finished":
            self.finished.add(str(run_id))
        return None

    def _check_leaves(self, content: dict[str, Any], seq: int, count_field: str) -> str | None:
        """Given an intent or reconciled entry, return why its leaves file does not match its
        leaves_root and count field, or None."""
        summary = leaves_summary(leaves_path(self.directory, seq), leaves_per_chunk(content))
        if isinstance(summary, str):
            return summary
        count, root = summary
        if root.hex() != content["leaves_root"]:
            return f"the Merkle root of its leaves file is {root.hex()}, not leaves_root"
        children = children_count(content)
        if count != content[count_field] + children:
            named = f" + {children} child rows" if children else ""
            return (
                f"{count_field} is {content[count_field]}{named} but its leaves file holds {count}"
            )
        return detail_problem(content) or versions_problem(self.directory, seq, content)

    def _check_intent(self, content: dict[str, Any], seq: int) -> str | None:
        """Given a batch.intent, remember it and check its leaves; return why it fails, or None."""
        self.intents[seq] = _Intent(
            content["run_id"],
            content["rule"],
            content["selected"],
            children=children_count(content) if "children" in content else None,
        )
        self.result.batches += 1
        return self._check_leaves(content, seq, "selected")

    def _check_settlement(self, content: dict[str, Any], seq: int) -> str | None:
        """Given a batch.result or batch.reconciled, check that it settles an earlier intent of its
        rule once, with plausible counts; return why not, or None."""
        intent = self.intents.get(content["intent"])
        if intent is None or intent.rule != content["rule"]:
            return (
                f"settles intent {content['intent']}, which is no earlier batch.intent of rule "
                f"{content['rule']!r}"
            )
        if intent.settled_by is not None:
            return f"intent {content['intent']} was already settled by seq {intent.settled_by}"
        if content["type"] == "batch.result" and content["run_id"] != intent.run_id:
            return (
                f"a result of run {content['run_id']} settles intent {content['intent']} of run "
                f"{intent.run_id}"
            )
        intent.settled_by = seq
        done = content["done"]
        if content["type"] == "batch.reconciled":
            if done + content["not_done"] != intent.selected:
                return (
                    f"done + not_done is {done + content['not_done']}, but intent "
                    f"{content['intent']} selected {intent.selected}"
                )
            if intent.children is not None and children_count(content) > intent.children:
                return f"it claims more child rows than intent {content['intent']} named"
            self.result.records_purged += done
            return self._check_leaves(content, seq, "done")
        if content["status"] not in BATCH_STATUSES:
            return f"unknown batch status {content['status']!r}"
        if content["status"] != "committed" and done:
            return f"a {content['status']} batch claims {counted(done, 'record')} done"
        if done > intent.selected:
            return f"done is {done}, more than the {intent.selected} its intent selected"
        children = content["children_deleted"]
        expected = intent.children if content["status"] == "committed" else 0
        if expected is not None and children != expected:
            # A SQL batch deletes its child rows with its parents, all of them or none.
            return f"children_deleted is {children}, but its intent named {expected} child rows"
        problem = detail_problem(content)
        if problem is not None:
            return problem
        if "not_done_root" in content:
            not_done = content.get("not_done")
            if not isinstance(not_done, int) or done + not_done != intent.selected:
                return (
                    f"done + not_done is {done} + {not_done!r}, but intent {content['intent']} "
                    f"selected {intent.selected}"
                )
            problem = self._check_leaves(
                {**content, "leaves_root": content["not_done_root"]}, seq, "not_done"
            )
            if problem is not None:
                return problem
        self.result.records_purged += done
        return None

    def _check_checkpoint(self, content: dict[str, Any], seq: int) -> str | None:
        """Given a checkpoint, check its size, root, time and signature; return why it fails, or
        None."""
        if content["size"] != seq:
            return f"size is {content['size']}, but it follows {counted(seq, 'entry')}"
        root = self.frontier.root().hex()
        if content["root"] != root:
            anchored = " (as anchored: the history was rewritten)" if seq in self.anchors else ""
            return f"root is not the Merkle root of the entries before it ({root}){anchored}"
        previous = self.result.last_checkpoint
        moment = parse_time(content["time"])
        if previous is not None and moment is not None:
            before = parse_time(previous.content["time"])
            if before is not None and moment < before:
                return (
                    f"time {content['time']} is before the previous checkpoint's "
                    f"({previous.content['time']}): checkpoints cannot be backdated"
                )
        return signature_problem(content, self.keys)

    def _check_anchor(self, stored: StoredEntry) -> str | None:
        """Given an entry, return why it differs from an anchor kept for its seq, or None."""
        for anchor in self.anchors.get(self.frontier.size, ()):
            if anchor.raw != stored.raw:
                return (
                    f"differs from the anchored checkpoint {anchor.source}: the history up to "
                    "here was rewritten"
                )
        return None

    def _check_anchors_reached(self) -> None:
        """After the last entry: record a problem if an anchor lies beyond the end (truncation)."""
        last = max(self.anchors, default=-1)
        if last < self.frontier.size:
            return
        anchor = self.anchors[last][0]
        previous = self.previous
        self.result.problem = Problem(
            previous.segment if previous else None,
            previous.line + 1 if previous else None,
            self.frontier.size,
            f"missing: the trail ends at seq {self.frontier.size - 1} but the anchored checkpoint "
            f"{anchor.source} is seq {last}: the tail was truncated",
        )


def _torn_line(directory: Path) -> tuple[Path, int] | None:
    """Given an audit directory, return (segment, line) of a last line without its newline."""
    existing = segments(directory)
    if not existing or not ends_torn(existing[-1]):
        return None
    return existing[-1], count_lines(existing[-1]) + 1


def verify_trail(
    directory: Path, keys: Sequence[PublicKey], anchors: Iterable[tuple[str, bytes]] = ()
) -> Verification:
    """Given an audit directory, the public keys and anchored checkpoints (source, bytes), walk
    the whole trail once and return what it holds and the first problem, if any.

    Raises UsageError when there is no trail there, AuditFailure when an anchor is not a validly
    signed checkpoint (nothing can be checked against it).
    """
    require_trail(directory)
    loaded = [_load_anchor(source, raw, keys) for source, raw in anchors]
    try:
        for _walk in range(WALKS_WHILE_WRITTEN):
            before = _trail_end(directory)
            walker = _Walker(directory, keys, loaded, _torn_line(directory))
            result = walker.walk(read_entries(directory))
            result.segments = len(segments(directory))
            # A writer appending meanwhile: its line may have been read half-written (a reader
            # can see an append before its last bytes), so a problem is looked for again; one
            # that stays is the trail's own.
            if result.problem is None or _trail_end(directory) == before:
                break
    except OSError as error:
        raise AuditFailure(f"cannot read the audit trail: {error}") from error
    return result


# How many times a trail that a writer appends to while it is verified is walked, at most.
WALKS_WHILE_WRITTEN = 3


def _trail_end(directory: Path) -> tuple[str, int] | None:
    """Given an audit directory, return its last segment's name and size (None: none yet)."""
    existing = segments(directory)
    return (existing[-1].name, existing[-1].stat().st_size) if existing else None
