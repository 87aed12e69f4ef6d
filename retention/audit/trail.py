"""The trail on disk: append-only segment files of canonical JSON (RFC 8785), one entry a line,
each entry carrying the SHA-256 of the previous one; side files with the sorted leaves of each
batch; and, while a batch is in flight, its raw keys (so that a crash can be reconciled).

Layout of the audit directory (0700; files 0600)::

    trail/00000001.jsonl     entries, canonical JSON, one a line
    leaves/<seq>.leaves      sorted hex leaves (keyed hashes of record locators) of intent <seq>
                             (its records' and, for a rule with children, its child rows')
    leaves/<seq>.versions    version ids of a batch of objects (SHA-256 in versions_digest)
    pending/<seq>.json       raw keys of intent <seq> until its result is durable
    pending/<seq>.not_done.json   those its transaction did not purge (written before it commits)
    lock                     held (flock) by the one process writing
    tail.json                where the writer stopped (a cache: checked, else rebuilt)

The pending files are pending_files.py's, the tail state tail_state.py's; the writer holds the
lock and the key they are written under.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from retention.audit.durable import (
    complete_lines_end,
    ends_torn,
    fsync_directory,
    write_all,
    write_durably,
    write_new_files,
)
from retention.audit.entries import (
    FORMAT_VERSION,
    GENESIS,
    canonical,
    checkpoint_payload,
    entry_hash,
    leaves_path,
    read_entries,
    segments,
    versions_path,
    versions_text,
)
from retention.audit.keys import Signer
from retention.audit.leaves import RecordHasher, leaves_root, leaves_text, refuse_repeated
from retention.audit.merkle import MerkleFrontier, leaf_hash
from retention.audit.pending_files import (
    authentic_pending,
    clear_pending,
    clear_unfinished_pending,
    not_done_keys,
    pending_keys,
    pending_mac,
    pending_path,
    pending_text,
    write_not_done,
)
from retention.audit.tail_state import TailState, resumed_tail, save_tail_state
from retention.errors import AuditFailure, LockHeld
from retention.runtime.ownership import hand_over

SEGMENT_LIMIT_BYTES = 64 * 1024 * 1024


@dataclass
class TrailWriter:
    """The single writer of a trail. Use as a context manager: it takes the lock, finds the tail
    (dropping a torn last line left by a crash), and appends durably (fsync) from there.

    One kind of entry may be appended without its own fsync: a batch's result (``durable=False``),
    whose pending keys stay until the next fsync of the trail (the next intent's, or the run's
    end) has made it durable; a crash before then loses at most that result, and the pending
    keys let the next run reconcile the batch against the store, as after any crash.
    """

    directory: Path
    hmac_key: bytes
    signer: Signer | None
    clock: Callable[[], datetime]
    identity: dict[str, str] = field(default_factory=dict)
    _seq: int = 0
    _prev: str = GENESIS
    _frontier: MerkleFrontier = field(default_factory=MerkleFrontier)
    _segment: Path | None = None
    _lock_descriptor: int | None = None
    last_config_digest: str | None = None
    _hasher: RecordHasher | None = None
    recovered_bytes: int = 0
    # Appended but not yet fsynced (a batch's result), and the intents whose pending keys go
    # once it is.
    _unsynced: bool = False
    _settled: list[int] = field(default_factory=list)
    _clearing: list[Future[None]] = field(default_factory=list)
    _beside: ThreadPoolExecutor | None = None
    _saved_seq: int | None = None

    def __enter__(self) -> TrailWriter:
        try:
            for sub in ("", "trail", "leaves", "pending"):
                folder = self.directory / sub
                if not folder.is_dir():
                    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                    hand_over(folder.resolve())
            # mkdir's mode does not apply to a directory that already existed.
            os.chmod(self.directory, 0o700)
            self._lock_descriptor = os.open(
                self.directory / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
            )
            hand_over(self.directory / "lock", self._lock_descriptor)
        except OSError as error:
            raise AuditFailure(
                f"cannot open the audit directory {str(self.directory)!r}: {error}"
            ) from error
        try:
            fcntl.flock(self._lock_descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            os.close(self._lock_descriptor)
            self._lock_descriptor = None
            raise LockHeld(
                f"another process is writing the audit trail in {self.directory}"
            ) from error
        try:
            self._load_tail()
        except OSError as error:
            raise AuditFailure(f"cannot read the audit trail: {error}") from error
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._lock_descriptor is not None:
                # Best effort: a result that cannot be made durable keeps its pending keys,
                # which the next run reconciles.
                with suppress(AuditFailure):
                    self.sync()
                    self._wait_clearing()
        finally:
            if self._beside is not None:
                self._beside.shutdown()
                self._beside = None
            if self._lock_descriptor is not None:
                if self._saved_seq != self._seq:
                    self._save_tail_state()
                os.close(self._lock_descriptor)
                self._lock_descriptor = None

    def _load_tail(self) -> None:
        existing = segments(self.directory)
        if existing:
            last = existing[-1]
            if ends_torn(last):
                # A torn write: that entry was never acknowledged, so nothing acted on it.
                kept = complete_lines_end(last)
                self.recovered_bytes = last.stat().st_size - kept
                with last.open("r+b") as handle:
                    handle.truncate(kept)
                    os.fsync(handle.fileno())
        self._segment = existing[-1] if existing else None
        if self._segment is not None:
            resumed = resumed_tail(self.directory, self.hmac_key, self._segment)
            if resumed is not None:
                self._frontier, self._prev = resumed.frontier, resumed.prev
                self._seq, self.last_config_digest = resumed.next_seq, resumed.last_config_digest
                return
        # No usable tail state: one pass over the whole trail, then save it for the next open.
        for stored in read_entries(self.directory):
            self._frontier.add(leaf_hash(stored.raw))
            self._prev = entry_hash(stored.raw)
            self._seq = stored.content.get("seq", self._seq) + 1
            if stored.content.get("type") == "run.started":
                self.last_config_digest = stored.content.get("config_digest")
        self._save_tail_state()

    def _save_tail_state(self) -> None:
        """Save where the trail ends, so that the next writer need not read it all."""
        if self._segment is None:
            return
        tail = TailState(self._seq, self._prev, self._frontier, self.last_config_digest)
        if save_tail_state(self.directory, self.hmac_key, self._segment, tail):
            self._saved_seq = tail.next_seq

    @property
    def size(self) -> int:
        return self._frontier.size

    @property
    def next_seq(self) -> int:
        return self._seq

    def append(self, entry_type: str, fields: dict[str, Any], durable: bool = True) -> int:
        """Given a type and fields, append the entry; return its sequence number. The entry, and
        every one before it, is durable (fsync) on return, unless ``durable`` is False (only a
        batch's result, whose pending keys wait for ``settle_pending``)."""
        moment = self.clock()
        if moment.tzinfo is None:
            raise AuditFailure("audit entries need an aware time (UTC); got a naive one")
        entry = {
            "v": FORMAT_VERSION,
            "seq": self._seq,
            "prev": self._prev,
            "type": entry_type,
            "time": moment.isoformat(),
            **fields,
        }
        if entry_type == "checkpoint":
            entry["signature"] = self._sign(entry)
        raw = canonical(entry)
        try:
            segment = self._writable_segment(len(raw) + 1)
            descriptor = os.open(
                segment, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600
            )
            try:
                write_all(descriptor, raw + b"\n")
                if durable:
                    # Also makes durable what was appended before without an fsync.
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            raise AuditFailure(f"cannot write the audit trail: {error}") from error
        self._frontier.add(leaf_hash(raw))
        self._prev = entry_hash(raw)
        self._seq += 1
        if entry_type == "run.started":
            self.last_config_digest = fields.get("config_digest")
        if durable:
            self._unsynced = False
            self._clear_settled()
        else:
            self._unsynced = True
        if entry_type == "checkpoint":
            self._save_tail_state()
        return int(entry["seq"])

    def sync(self) -> None:
        """Make every entry appended so far durable (one fsync, if any was appended without),
        then remove the pending keys of the batches whose results they hold."""
        if self._unsynced and self._segment is not None:
            try:
                descriptor = os.open(self._segment, os.O_WRONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
            except OSError as error:
                raise AuditFailure(f"cannot write the audit trail: {error}") from error
            self._unsynced = False
        self._clear_settled()

    def _writable_segment(self, adding: int) -> Path:
        segment = self._segment
        if segment is None or segment.stat().st_size + adding > SEGMENT_LIMIT_BYTES:
            # What was appended to the full segment without an fsync gets it before the next.
            self.sync()
            number = len(segments(self.directory)) + 1
            segment = self.directory / "trail" / f"{number:08d}.jsonl"
            descriptor = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                hand_over(segment, descriptor)
            finally:
                os.close(descriptor)
            fsync_directory(segment.parent)
            self._segment = segment
        return segment

    def _sign(self, entry: dict[str, Any]) -> str:
        if self.signer is None:
            raise AuditFailure("no signing key: checkpoints cannot be signed")
        entry["key_id"] = self.signer.key_id
        return self.signer.sign(checkpoint_payload(entry)).hex()

    def checkpoint(self) -> int:
        """Append a signed checkpoint over every entry before it: size, Merkle root, key id."""
        return self.append(
            "checkpoint",
            {"size": self.size, "root": self._frontier.root().hex()},
        )

    # --- leaves and pending keys ----------------------------------------------------------

    def record_leaves(
        self,
        store: str,
        dataset: str,
        keys: Sequence[Sequence[object]],
        lines: bytes | None = None,
    ) -> list[bytes]:
        """Given a store, a dataset and record keys (and, if made already, their
        ``integer_key_lines``), return the sorted leaves that an entry written now holds for
        them (of this writer's format version)."""
        if self._hasher is None or self._hasher.version != FORMAT_VERSION:
            self._hasher = RecordHasher(self.hmac_key, FORMAT_VERSION)
        return self._hasher.leaves(store, dataset, keys, lines)

    def record_spelled_leaves(
        self, store: str, dataset: str, pieces: Iterable[bytes]
    ) -> Sequence[bytes]:
        """Given a store, a dataset and record keys spelled as the ends of their locators (in
        pieces, see ``SpelledKeys``), return the sorted leaves that an entry written now holds
        for them."""
        if self._hasher is None or self._hasher.version != FORMAT_VERSION:
            self._hasher = RecordHasher(self.hmac_key, FORMAT_VERSION)
        return self._hasher.spelled_leaves(store, dataset, pieces)

    def leaves_root(self, leaves: Sequence[bytes]) -> str:
        """Given a batch's sorted leaves, return the hex leaves_root an entry written now
        records."""
        return leaves_root(leaves, FORMAT_VERSION)

    def write_leaves(self, seq: int, leaves: Sequence[bytes]) -> None:
        """Write the sorted leaves of entry ``seq`` durably; AuditFailure if one is repeated
        (one record twice in a batch), which verify would refuse."""
        refuse_repeated(seq, leaves)
        try:
            write_durably(leaves_path(self.directory, seq), leaves_text(leaves))
        except OSError as error:
            raise AuditFailure(f"cannot write the leaves of entry {seq}: {error}") from error

    def write_intent_files(
        self,
        seq: int,
        leaves: Sequence[bytes],
        pending: dict[str, Any],
        versions: Sequence[object] | None = None,
        key_values: bytes | None = None,
    ) -> tuple[str, str | None]:
        """Given the seq its intent will have, a batch's sorted leaves, its pending keys (and,
        spelled already, their ``key_values`` JSON array) and (a batch of objects) their
        version ids, write them durably, side by side: the files are created at once, their
        directories' fsyncs start beside the writing, and each file's fsync as soon as it is
        written. Return the pending file's HMAC (``pending_mac``, for its intent's entry) and
        the versions file's SHA-256 (hex), or None.

        AuditFailure when a leaf repeats or anything cannot be written: then none of the files
        stays (no intent follows, so nothing of it may).
        """
        refuse_repeated(seq, leaves)
        self._wait_clearing()
        files: list[tuple[Path, Callable[[], bytes]]] = [
            (leaves_path(self.directory, seq), lambda: leaves_text(leaves))
        ]
        listed = b""
        if versions is not None:
            listed = versions_text(versions)
            files.append((versions_path(self.directory, seq), lambda: listed))
        written: list[bytes] = []

        def pending_content() -> bytes:
            written.append(pending_text(pending, key_values))
            return written[0]

        files.append((pending_path(self.directory, seq), pending_content))
        try:
            write_new_files(files, self._threads())
        except OSError as error:
            for path, _content in files:
                with suppress(OSError):
                    path.unlink(missing_ok=True)
            raise AuditFailure(
                f"cannot write the leaves and pending keys of entry {seq}: {error}"
            ) from error
        digest = hashlib.sha256(listed).hexdigest() if versions is not None else None
        return pending_mac(self.hmac_key, seq, written[0]), digest

    def authentic_pending(self, seq: int, mac: str) -> dict[str, Any]:
        """``pending_files.authentic_pending`` in this trail, under its key."""
        return authentic_pending(self.directory, self.hmac_key, seq, mac)

    def write_versions(self, seq: int, versions: Sequence[object]) -> str:
        """Given a batch of object versions, write their version ids (sorted, each once,
        percent-encoded) beside its leaves: ``audit prove`` then finds every version of an
        object key that went, without being given its version ids. A version id alone names
        no object; the leaves stay the only link, and only the HMAC key makes it. Return the
        file's SHA-256 (hex), which the entry records (``versions_digest``) so that the
        signature covers the file too."""
        text = versions_text(versions)
        try:
            write_durably(versions_path(self.directory, seq), text)
        except OSError as error:
            raise AuditFailure(f"cannot write the versions of entry {seq}: {error}") from error
        return hashlib.sha256(text).hexdigest()

    def clear_pending(self, seq: int) -> None:
        """``pending_files.clear_pending`` in this trail."""
        clear_pending(self.directory, seq)

    def write_not_done(self, seq: int, keys: Sequence[Sequence[object]]) -> None:
        """``pending_files.write_not_done`` in this trail, under its key."""
        write_not_done(self.directory, self.hmac_key, seq, keys)

    def not_done_keys(self, seq: int) -> list[tuple[Any, ...]] | None:
        """``pending_files.not_done_keys`` in this trail, under its key."""
        return not_done_keys(self.directory, self.hmac_key, seq)

    def settle_pending(self, seq: int) -> None:
        """Given an intent whose result was appended, remove its pending keys once that result
        is durable: at the next fsync of the trail (beside the work that follows it)."""
        self._settled.append(seq)
        if not self._unsynced:
            self._clear_settled()

    def _clear_settled(self) -> None:
        settled, self._settled = self._settled, []
        if settled:
            self._clearing.append(self._threads().submit(self._clear_all, settled))

    def _clear_all(self, seqs: Sequence[int]) -> None:
        for seq in seqs:
            self.clear_pending(seq)

    def _wait_clearing(self) -> None:
        """Wait for the pending keys being removed; AuditFailure if one could not be."""
        clearing, self._clearing = self._clearing, []
        for done in clearing:
            done.result()

    def _threads(self) -> ThreadPoolExecutor:
        if self._beside is None:
            self._beside = ThreadPoolExecutor(max_workers=5, thread_name_prefix="audit-fsync")
        return self._beside

    def pending(self) -> list[tuple[int, dict[str, Any] | None]]:
        """The raw keys of every batch in flight (``pending_files.pending_keys``), once the
        pending keys being removed are gone."""
        self._wait_clearing()
        return pending_keys(self.directory)

    def clear_unfinished_pending(self) -> None:
        """``pending_files.clear_unfinished_pending`` in this trail."""
        clear_unfinished_pending(self.directory)
