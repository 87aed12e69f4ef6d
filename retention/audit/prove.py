"""Prove that one record was purged: find its leaf (the keyed hash of its locator under the
audit key, in the format of each entry: HMAC-SHA256 in formats 1 and 2, keyed BLAKE2s in 3) in
the leaves of a committed ``batch.intent`` or of a ``batch.reconciled`` entry, and give
the RFC 6962 inclusion proof of that leaf under the entry's ``leaves_root``.

Only someone holding the audit HMAC key can compute a record's leaf; the trail alone names no
record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from retention.anonymise import record_locator
from retention.audit.batch_detail import versions_problem
from retention.audit.entries import (
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    leaves_path,
    leaves_per_chunk,
    read_leaves,
    read_versions,
    require_trail,
)
from retention.audit.entry_shape import readable_entries
from retention.audit.leaves import LEAF_FUNCTIONS, record_leaf, subject_digest
from retention.audit.merkle import chunked_inclusion_proof, verify_chunked_inclusion
from retention.audit.report import unknown_name, utc_text
from retention.config import AuditSettings, Child, Config
from retention.errors import AuditFailure, ConfigError, ConfigIssue, UsageError
from retention.runtime.secrets import read_secret
from retention.wording import is_text


@dataclass(frozen=True)
class Proof:
    """One batch the record was purged in, with the inclusion proof of its leaf."""

    seq: int
    entry_type: str
    settled_by: int | None
    run_id: str
    rule: str
    action: str | None
    time: str | None
    index: int
    size: int
    root: bytes
    path: tuple[bytes, ...]
    verified: bool
    checkpoint: int | None
    leaf: bytes = b""
    # Format 2: the leaves of the leaf's chunk (one leaf of the tree is a chunk of them); the
    # path is the chunk's. Empty in format 1, where the path is the leaf's own.
    chunk: tuple[bytes, ...] = ()
    # The trail format (``v``) of the entry whose leaves hold it: which function made its leaf.
    version: int = FORMAT_VERSION


@dataclass
class Search:
    """What the trail says about one record: the batches that purged it, and those that selected
    it without purging it (rolled back, or never settled)."""

    locator: str
    leaf: bytes
    proofs: list[Proof] = field(default_factory=list)
    not_purged: list[tuple[int, str]] = field(default_factory=list)
    # Every (store, dataset) the trail's batches name: a name outside both it and the config
    # is a typo, not a record that was never purged.
    datasets: set[tuple[str, str]] = field(default_factory=set)

    @property
    def proven(self) -> bool:
        return any(proof.verified for proof in self.proofs)


def audit_hmac_key(settings: AuditSettings | None) -> bytes:
    """Given the config's audit settings, return the audit HMAC key; ConfigError when there is
    none (a record's leaf cannot be computed without it)."""
    if settings is None or not settings.enabled:
        raise ConfigError([ConfigIssue("audit", "no enabled [audit] table: no HMAC key")])
    key = read_secret(
        settings.hmac_key_file,
        settings.hmac_key_credential,
        "audit.hmac_key_file",
        "audit.hmac_key_credential",
    )
    if key is None:
        raise ConfigError([ConfigIssue("audit.hmac_key_file", "missing: the HMAC key is needed")])
    return key


def check_names(config: Config, search: Search, store: str, dataset: str) -> str | None:
    """Given the config, a search and the store and dataset it was for, raise UsageError when
    neither the config nor the trail knows that store, or that dataset in it: a rule's table
    (bucket, root), a table of its children, or a dataset the trail's batches name. Return a
    note when the dataset is only a child table (whose rows the trail does not name)."""
    in_trail = {name for name, _ in search.datasets}
    if store not in config.stores and store not in in_trail:
        known = set(config.stores) | in_trail
        raise unknown_name("--store", [store], "a store of the config or the trail", known)
    datasets = {table for name, table in search.datasets if name == store}
    children: set[str] = set()
    for rule in config.rules:
        if rule.store == store:
            datasets.add(rule.table)
            children |= _child_tables(rule.children)
    if dataset in children - datasets and not search.proofs:
        # Rows of a child table go with their parents; trails written before their leaves
        # were recorded (batch entries without ``children``) hold none for them.
        return (
            f"rows of {dataset} go with their parent rows: a batch written before child rows "
            "were recorded one by one holds no leaf for them"
        )
    if dataset not in datasets | children:
        what = f"a table, bucket or root of store {store!r} in the config or the trail"
        raise unknown_name("--table", [dataset], what, datasets)
    return None


def _child_tables(children: Sequence[Child]) -> set[str]:
    """Given a rule's children, return the tables of every one, nested ones included."""
    return {table for child in children for table in (child.table, *_child_tables(child.children))}


def _leaf_index(path: Path, leaf: bytes) -> int | None:
    """Given a leaves file and a leaf, stream the file and return the leaf's index, or None."""
    wanted = leaf.hex().encode() + b"\n"
    with path.open("rb") as handle:
        # No line longer than a leaf is read whole (verify names such a file as malformed).
        for index, line in enumerate(iter(lambda: handle.readline(len(wanted)), b"")):
            if line == wanted:
                return index
    return None


def prove_record(
    directory: Path, hmac_key: bytes, store: str, dataset: str, key: Sequence[str]
) -> Search:
    """Given an audit directory, the HMAC key and a record (store, dataset, key values), return
    every batch whose committed or reconciled leaves hold the record, with inclusion proofs, and
    the batches that selected it without purging it. UsageError (exit 2) for a name or key
    that is not UTF-8 text: no record's locator holds one."""
    given = (("--store", store), ("--table", dataset), *(("--key", part) for part in key))
    for option, value in given:
        if not is_text(value):
            raise UsageError(f"{option} holds bytes that are not UTF-8: no record has them")
    require_trail(directory)
    # A record's leaf depends on the format of the entry whose leaves hold it (its ``v``).
    leaves_of: dict[tuple[tuple[str, ...], int], bytes] = {}

    def leaf_in(locator_key: tuple[str, ...], version: object) -> bytes | None:
        if version not in FORMAT_VERSIONS or not isinstance(version, int):
            return None  # an entry of no known format: verify names it
        if (locator_key, version) not in leaves_of:
            leaves_of[locator_key, version] = record_leaf(
                hmac_key, store, dataset, locator_key, version
            )
        return leaves_of[locator_key, version]

    own_key = tuple(key)
    search = Search(record_locator(store, dataset, key), leaf_in(own_key, FORMAT_VERSION) or b"")
    # An object key alone stands for every version of it that went: the versions a batch of
    # objects purged are beside its leaves.
    by_object_key = len(key) == 1
    candidates: list[dict[str, Any]] = []
    intents: dict[int, dict[str, Any]] = {}
    settlements: dict[int, dict[str, Any]] = {}
    checkpoints: list[int] = []
    for stored in readable_entries(directory):
        content = stored.content
        entry_type = content.get("type")
        if entry_type == "checkpoint":
            checkpoints.append(content.get("seq", 0))
        elif entry_type in ("batch.result", "batch.reconciled"):
            settlements[content.get("intent", -1)] = content
        if entry_type == "batch.intent":
            intents[content.get("seq", -1)] = content
        if entry_type in ("batch.intent", "batch.reconciled"):
            named = (str(content.get("store")), str(content.get("dataset")))
            # A batch's leaves also hold those of the child rows deleted with it.
            children = content.get("children")
            tables = set(children) if isinstance(children, dict) else set()
            search.datasets |= {(named[0], table) for table in tables | {named[1]}}
            if named[0] == store and dataset in tables | {named[1]}:
                candidates.append(content)
    for content in candidates:
        try:
            locator_keys = [own_key]
            if by_object_key:
                problem = versions_problem(directory, content["seq"], content)
                if problem is not None:
                    raise AuditFailure(f"entry {content['seq']}: {problem}; run `audit verify`")
                versions = read_versions(directory, content["seq"])
                locator_keys += [(key[0], version) for version in versions]
            for locator_key in locator_keys:
                candidate = leaf_in(locator_key, content.get("v"))
                if candidate is None:
                    continue
                index = _leaf_index(leaves_path(directory, content["seq"]), candidate)
                if index is not None:
                    _place(
                        search, directory, content, (candidate, index), intents, settlements,
                        checkpoints, partial(leaf_in, locator_key),
                    )  # fmt: skip
        except (OSError, ValueError) as error:
            # ValueError: a leaves file that holds anything but hex leaves (verify names it).
            raise AuditFailure(
                f"cannot read the leaves of entry {content.get('seq')}: {error}; run `audit verify`"
            ) from error
    return search


def _place(
    search: Search,
    directory: Path,
    content: dict[str, Any],
    found: tuple[bytes, int],
    intents: dict[int, dict[str, Any]],
    settlements: dict[int, dict[str, Any]],
    checkpoints: list[int],
    leaf_in: Callable[[object], bytes | None],
) -> None:
    """Given an entry whose leaves hold the record at ``index`` (and the record's leaf in a
    given format), add it to the search: as a proof (a committed intent, a reconciled entry) or
    as a batch that did not purge the record."""
    leaf, index = found
    settled_by, when = None, content
    if content["type"] == "batch.intent":
        settlement = settlements.get(content["seq"], {})
        if settlement.get("type") == "batch.reconciled":
            return  # its batch.reconciled entry holds the record if it was gone: the proof is there
        if settlement.get("status") != "committed":
            search.not_purged.append((content["seq"], settlement.get("status", "not settled")))
            return
        # The leaves its result did not purge are of the result's own format.
        not_done_leaf = leaf_in(settlement.get("v"))
        if "not_done_root" in settlement and (
            not_done_leaf is None
            or _leaf_index(leaves_path(directory, settlement["seq"]), not_done_leaf) is not None
        ):
            search.not_purged.append((content["seq"], "committed, but this record was not purged"))
            return
        intent, settled_by, when = content, settlement.get("seq"), settlement
    else:
        intent = when = intents.get(content["intent"], content)
    leaves = read_leaves(directory, content["seq"])
    root = bytes.fromhex(content["leaves_root"])
    per_chunk = leaves_per_chunk(content)
    chunk, path_list = chunked_inclusion_proof(leaves, index, per_chunk)
    path = tuple(path_list)
    search.proofs.append(
        Proof(
            seq=content["seq"],
            entry_type=content["type"],
            settled_by=settled_by,
            run_id=intent["run_id"],
            rule=content["rule"],
            action=intent.get("action"),
            time=utc_text(when.get("time")),
            index=index,
            size=len(leaves),
            root=root,
            path=path,
            verified=verify_chunked_inclusion(
                leaf, index, len(leaves), chunk, path, root, per_chunk
            ),
            # The first checkpoint after both the entry and what settled it.
            checkpoint=next(
                (seq for seq in checkpoints if seq > max(content["seq"], settled_by or 0)), None
            ),
            leaf=leaf,
            chunk=chunk if per_chunk > 1 else (),
            version=int(content["v"]),
        )
    )


def render_search(search: Search) -> str:
    """Given a search, return what it found for people: each batch and its inclusion proof, or
    that the record is not in the trail."""
    if not search.proofs:
        lines = [f"{search.locator}: not in the trail (no committed batch purged it)"]
        lines += [
            f"  selected in batch seq {seq}, but {status.replace('_', ' ')}: not purged"
            for seq, status in search.not_purged
        ]
        return "\n".join(lines)
    lines = [f"{search.locator}: purged"]
    for proof in search.proofs:
        how = (
            f"committed: result seq {proof.settled_by}"
            if proof.entry_type == "batch.intent"
            else "reconciled after a crash"
        )
        covered = (
            f"covered by checkpoint seq {proof.checkpoint}"
            if proof.checkpoint is not None
            else "not yet covered by a signed checkpoint"
        )
        lines += [
            f"  batch      seq {proof.seq} ({proof.entry_type}, {how})",
            f"  run        {proof.run_id}",
            f"  rule       {proof.rule} ({proof.action or '?'})",
            f"  time       {proof.time}",
            f"  leaf       {proof.leaf.hex()} ({LEAF_FUNCTIONS[proof.version]}, format "
            f"{proof.version})",
            f"  index      {proof.index} of {proof.size} leaves"
            + (f", in a chunk of {len(proof.chunk)}" if proof.chunk else ""),
            f"  root       {proof.root.hex()} (the entry's leaves_root)",
            "  audit path " + ("\n             ".join(n.hex() for n in proof.path) or "(empty)"),
            f"  proof      {'verified' if proof.verified else 'DOES NOT VERIFY'}; {covered}",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class ErasureRun:
    """One run that carried out an erasure request for the subject searched: its reference,
    when it started and finished, its exit code and each rule's counts (None: not finished)."""

    run_id: str
    reference: str
    started: str | None
    finished: str | None = None
    exit_code: int | None = None
    outcomes: tuple[dict[str, Any], ...] = ()


def find_erasures(directory: Path, hmac_key: bytes, subject: str) -> list[ErasureRun]:
    """Given an audit directory, the HMAC key and a subject, return every run that carried out
    an erasure request for that subject, in trail order. The trail only holds the subject's
    HMAC: without the key, nobody can tell whose requests they were."""
    require_trail(directory)
    digest = subject_digest(hmac_key, subject)
    runs: dict[str, ErasureRun] = {}
    for stored in readable_entries(directory):
        content = stored.content
        run_id = str(content.get("run_id"))
        if content.get("type") == "run.started":
            erasure = content.get("erasure")
            if isinstance(erasure, dict) and erasure.get("subject") == digest:
                runs[run_id] = ErasureRun(
                    run_id, str(erasure.get("reference")), utc_text(content.get("time"))
                )
        elif content.get("type") == "run.finished" and run_id in runs:
            runs[run_id] = replace(
                runs[run_id],
                finished=utc_text(content.get("time")),
                exit_code=content.get("exit_code"),
                outcomes=tuple(content.get("outcomes", ())),
            )
    return list(runs.values())


def render_erasures(erasures: Sequence[ErasureRun]) -> str:
    """Given the erasure runs of one subject, return them for people: per run, its reference,
    times, exit code and what each rule did."""
    if not erasures:
        return "No erasure request for this subject is in the trail."
    lines: list[str] = []
    for run in erasures:
        finished = (
            f"finished {run.finished}, exit code {run.exit_code}"
            if run.finished
            else "never finished (see `audit show`)"
        )
        lines.append(
            f"request {run.reference}: run {run.run_id}, started {run.started}, {finished}"
        )
        for outcome in run.outcomes:
            counts = ", ".join(
                f"{name} {value}"
                for name, value in outcome.items()
                if name not in ("rule", "status") and value
            )
            lines.append(f"  {outcome.get('rule')}: {outcome.get('status')}; {counts or 'nothing'}")
    return "\n".join(lines)
