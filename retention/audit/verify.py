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

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retention.audit.batch_detail import children_count, detail_problem, versions_problem
from retention.audit.keys import AuditKeyError, PublicKey, key_id_of, load_public_keys
from retention.audit.merkle import MerkleFrontier, leaf_hash
from retention.audit.trail import (
    FORMAT_VERSIONS,
    GENESIS,
    StoredEntry,
    canonical,
    checkpoint_payload,
    entry_hash,
    leaves_path,
    leaves_per_chunk,
    read_entries,
    segments,
)
from retention.config import AuditSettings, Config
from retention.errors import AuditFailure, UsageError
from retention.wording import counted

LEAF_BYTES = 32
BATCH_STATUSES = ("committed", "rolled_back")

# The fields each entry type must carry (beyond v, seq, prev, type, time), with their JSON types.
ENTRY_FIELDS: dict[str, dict[str, type]] = {
    "config.changed": {"run_id": str, "digest": str},
    "run.started": {"run_id": str, "plan_id": str, "rules": list},
    "batch.intent": {
        "run_id": str,
        "rule": str,
        "store": str,
        "dataset": str,
        "action": str,
        "selected": int,
        "leaves_root": str,
    },
    "batch.result": {
        "run_id": str,
        "rule": str,
        "intent": int,
        "status": str,
        "done": int,
        "held": int,
        "failed": int,
        "children_deleted": int,
    },
    "batch.reconciled": {
        "run_id": str,
        "rule": str,
        "intent": int,
        "done": int,
        "not_done": int,
        "leaves_root": str,
    },
    "run.finished": {"run_id": str, "exit_code": int, "outcomes": list},
    "checkpoint": {"size": int, "root": str, "key_id": str, "signature": str},
    "hold.added": {"hold_id": int, "rule": str, "kind": str, "target_digest": str, "reason": str},
    "hold.released": {"hold_id": int, "rule": str, "kind": str, "reason": str},
}

# Fields that hold hex, with their length: only the canonical spelling (lowercase, that many
# digits) is accepted, so that no digit's case can be changed without a check noticing.
HEX_FIELDS = {
    "prev": 64,
    "leaves_root": 64,
    "not_done_root": 64,
    "versions_digest": 64,
    "root": 64,
    "target_digest": 64,
    "key_id": 16,
    "signature": 128,
}
HEX_DIGITS = frozenset("0123456789abcdef")


def hex_problem(content: dict[str, Any]) -> str | None:
    """Given an entry, return which hex field is not in canonical form (lowercase, its length),
    or None; an absent field, or a null where the format allows one, is not checked here.

    Example: ``hex_problem({"signature": "AB" * 64})`` names ``signature``.
    """
    for name, length in HEX_FIELDS.items():
        value = content.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) != length or not HEX_DIGITS.issuperset(value):
            return f"field {name!r} is not {length} lowercase hex digits"
    return None


@dataclass(frozen=True)
class Problem:
    """Why a trail is invalid, and the first entry that shows it."""

    segment: Path | None
    line: int | None
    seq: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.segment} line {self.line}" if self.segment else "the trail"
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


def parse_time(value: object) -> datetime | None:
    """Given an entry's time field, return it as an aware datetime, or None if it is not an
    ISO 8601 time with an offset."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def load_verification_keys(path: Path) -> tuple[PublicKey, ...]:
    """Given the public key file, return its keys; AuditKeyError (exit 78) when it cannot be read,
    a key id does not belong to its key, or a window is not a time with an offset."""
    keys = load_public_keys(path)
    for key in keys:
        if key.key_id != key_id_of(key.raw):
            raise AuditKeyError(f"{str(path)!r}: key id {key.key_id} is not its public key's id")
        for moment in (key.not_before, key.not_after):
            if moment is not None and moment.tzinfo is None:
                raise AuditKeyError(
                    f"{str(path)!r}: the window of key {key.key_id} has a time without an offset"
                )
    return keys


def signature_problem(content: dict[str, Any], keys: Sequence[PublicKey]) -> str | None:
    """Given a checkpoint and the public keys, return why its signature is not valid, or None:
    the key id must be known, its window must cover the checkpoint's time, and the Ed25519
    signature must verify over ``checkpoint_payload``."""
    key_id = content.get("key_id")
    candidates = [key for key in keys if key.key_id == key_id]
    if not candidates:
        return f"signed by key {key_id!r}, which is not in the public key file"
    moment = parse_time(content.get("time"))
    if moment is None:
        return f"time {content.get('time')!r} is not an ISO 8601 time with an offset"
    in_window = [key for key in candidates if key.covers(moment)]
    if not in_window:
        windows = ", ".join(
            f"{key.not_before.isoformat()} to {key.not_after.isoformat() if key.not_after else '…'}"
            for key in candidates
        )
        return f"signed by key {key_id} at {moment.isoformat()}, outside its window ({windows})"
    signature_text = content.get("signature")
    if not isinstance(signature_text, str) or hex_problem({"signature": signature_text}):
        return "signature is not 128 lowercase hex digits"
    signature = bytes.fromhex(signature_text)
    for key in in_window:
        try:
            if key.verify(signature, checkpoint_payload(content)):
                return None
        except ValueError:
            return f"public key {key_id} in the key file is not a valid Ed25519 key"
    return f"signature does not verify with key {key_id}"


def _field_problem(content: dict[str, Any]) -> str | None:
    """Given a parsed entry of a known type, return which required field is missing or of the
    wrong type, or None."""
    for name, kind in ENTRY_FIELDS[content["type"]].items():
        value = content.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {name!r} is missing or not {kind.__name__}"
    return hex_problem(content)


def leaves_summary(path: Path, per_chunk: int = 1) -> tuple[int, bytes] | str:
    """Given a leaves file and how many leaves make one tree leaf (``leaves_per_chunk``), stream
    it and return (count, RFC 6962 root), or why it is malformed: each line must be 64 lowercase
    hex digits and a newline, in sorted order, each leaf once (a batch names each record once: a
    repeated leaf would count one deletion twice)."""
    frontier = MerkleFrontier()
    previous = b""
    chunk: list[bytes] = []
    count = 0
    try:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                text = line[:-1]
                try:
                    leaf = bytes.fromhex(text.decode("ascii"))
                except ValueError:
                    leaf = b""
                if line[-1:] != b"\n" or len(leaf) != LEAF_BYTES or leaf.hex().encode() != text:
                    return f"leaves file {path.name} line {number} is not a 32-byte hex leaf"
                if leaf < previous:
                    return f"leaves file {path.name} line {number} is out of order"
                if leaf == previous:
                    return (
                        f"leaves file {path.name} line {number} repeats the leaf before it: "
                        "one record counted twice"
                    )
                previous = leaf
                count += 1
                chunk.append(leaf)
                if len(chunk) == per_chunk:
                    frontier.add(leaf_hash(b"".join(chunk)))
                    chunk.clear()
    except FileNotFoundError:
        return f"its leaves file {path.name} is missing"
    except OSError as error:
        return f"its leaves file {path.name} cannot be read: {error.strerror}"
    if chunk:
        frontier.add(leaf_hash(b"".join(chunk)))
    return count, frontier.root()


def json_object(raw: bytes) -> dict[str, Any]:
    """Given a line, return the JSON object it holds; ValueError when it holds none."""
    content = json.loads(raw)
    if not isinstance(content, dict):
        raise ValueError("not a JSON object")
    return content


def _load_anchor(source: str, raw: bytes, keys: Sequence[PublicKey]) -> Anchor:
    """Given where an anchor came from and its bytes, return it; AuditFailure unless it is one
    canonical, validly signed checkpoint line."""
    line = raw[:-1] if raw.endswith(b"\n") else raw
    try:
        content = json_object(line)
        valid_canonical = canonical(content) == line
    except ValueError:
        content, valid_canonical = {}, False
    if not valid_canonical or content.get("type") != "checkpoint" or _field_problem(content):
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
        if entry_type not in ENTRY_FIELDS:
            return self._problem(stored, f"unknown entry type {entry_type!r}")
        if parse_time(content.get("time")) is None:
            return self._problem(
                stored, f"time {content.get('time')!r} is not ISO 8601 with offset"
            )
        reason = (
            _field_problem(content) or self._check_type(content, seq) or self._check_anchor(stored)
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
    if not existing:
        return None
    content = existing[-1].read_bytes()
    if not content or content.endswith(b"\n"):
        return None
    return existing[-1], content.count(b"\n") + 1


def verify_trail(
    directory: Path, keys: Sequence[PublicKey], anchors: Iterable[tuple[str, bytes]] = ()
) -> Verification:
    """Given an audit directory, the public keys and anchored checkpoints (source, bytes), walk
    the whole trail once and return what it holds and the first problem, if any.

    Raises UsageError when there is no trail there, AuditFailure when an anchor is not a validly
    signed checkpoint (nothing can be checked against it).
    """
    if not (directory / "trail").is_dir():
        raise UsageError(f"no audit trail in {str(directory)!r} (no trail/ directory)")
    loaded = [_load_anchor(source, raw, keys) for source, raw in anchors]
    try:
        walker = _Walker(directory, keys, loaded, _torn_line(directory))
        result = walker.walk(read_entries(directory))
        result.segments = len(segments(directory))
    except OSError as error:
        raise AuditFailure(f"cannot read the audit trail: {error}") from error
    return result


def _audit_settings(config: Callable[[], Config]) -> AuditSettings:
    """Given a way to load the config, return its enabled [audit] settings; UsageError if none."""
    settings = config().audit
    if settings is None or not settings.enabled:
        raise UsageError("the config has no enabled [audit] table: give --dir (and --keys)")
    return settings


def audit_directory(directory: Path | None, config: Callable[[], Config]) -> Path:
    """Given --dir (or None) and a way to load the config, return the audit directory; the
    config is read only when --dir was not given."""
    return directory if directory is not None else _audit_settings(config).directory


def audit_locations(
    directory: Path | None, keys_file: Path | None, config: Callable[[], Config]
) -> tuple[Path, Path]:
    """Given --dir and --keys (either may be None) and a way to load the config, return the audit
    directory and public key file; the config is read only for what was not given."""
    if directory is not None and keys_file is not None:
        return directory, keys_file
    settings = _audit_settings(config)
    return directory or settings.directory, keys_file or settings.public_keys_file


def _moment(text: object) -> str:
    """Given an entry's time, return it in UTC ending in Z (``?`` when it is not a time)."""
    moment = parse_time(text)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else "?"


def _plural(count: int, one: str, many: str | None = None) -> str:
    """Given a count and a noun, return e.g. ``1 run`` or ``2 runs``."""
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def render_verification(result: Verification) -> str:
    """Given a valid verification, return its summary for people."""
    lines = [
        f"valid: {_plural(result.entries, 'entry', 'entries')} in "
        f"{_plural(result.segments, 'segment')}, {_plural(result.runs, 'run')}, "
        f"{_plural(result.batches, 'batch', 'batches')}, "
        f"{_plural(result.records_purged, 'record')} purged",
    ]
    checkpoint = result.last_checkpoint
    if checkpoint is None:
        lines.append("last checkpoint: none yet (no entry is signed)")
    else:
        content = checkpoint.content
        lines.append(
            f"last checkpoint: seq {content['seq']} at {_moment(content['time'])}, "
            f"key {content['key_id']}, covering {counted(content['size'], 'entry')}"
        )
    lines.append(f"not yet signed: {counted(result.unsigned, 'entry')} after the last checkpoint")
    for anchor in sorted(result.anchors, key=lambda anchor: anchor.seq):
        lines.append(f"anchor: checkpoint seq {anchor.seq} from {anchor.source} matches")
    if not result.anchors:
        lines.append(
            "no anchor given: a truncated tail cannot be detected (--anchor, docs/audit.md)"
        )
    return "\n".join(lines)
