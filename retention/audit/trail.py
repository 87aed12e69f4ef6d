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
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from retention.audit.durable import (
    ends_torn,
    fsync_directory,
    last_line,
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
from retention.errors import AuditFailure, LockHeld

SEGMENT_LIMIT_BYTES = 64 * 1024 * 1024
TAIL_STATE = "tail.json"


class UnauthenticNote(AuditFailure):
    """A note of the keys a batch did not purge whose HMAC does not check: not to be believed."""


class UnauthenticPending(AuditFailure):
    """A pending file whose HMAC (in its intent's entry) does not check, or whose keys are not
    those its intent's leaves name: edited, or another's; nothing it says is believed."""


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
                (self.directory / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode does not apply to a directory that already existed.
            os.chmod(self.directory, 0o700)
            self._lock_descriptor = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
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
                content = last.read_bytes()
                # A torn write: that entry was never acknowledged, so nothing acted on it.
                kept = content[: content.rfind(b"\n") + 1]
                self.recovered_bytes = len(content) - len(kept)
                with last.open("r+b") as handle:
                    handle.truncate(len(kept))
                    os.fsync(handle.fileno())
        self._segment = existing[-1] if existing else None
        if self._segment is not None and self._resume(self._segment):
            return
        # No usable tail state: one pass over the whole trail, then save it for the next open.
        for stored in read_entries(self.directory):
            self._frontier.add(leaf_hash(stored.raw))
            self._prev = entry_hash(stored.raw)
            self._seq = stored.content.get("seq", self._seq) + 1
            if stored.content.get("type") == "run.started":
                self.last_config_digest = stored.content.get("config_digest")
        self._save_tail_state()

    def _resume(self, segment: Path) -> bool:
        """Take the saved tail state if it describes this trail's end exactly: the last segment
        at its current length, ending with the entry whose hash is ``prev``, and its MAC (under
        the audit HMAC key) checks, so that its Merkle frontier is the one this writer saved
        after that very entry. A state that does not match is ignored: the trail is read
        instead."""
        try:
            state = json.loads((self.directory / TAIL_STATE).read_text())
            if not hmac.compare_digest(str(state["mac"]), self._tail_state_mac(state)):
                return False
            if (state["segment"], state["segment_bytes"]) != (segment.name, segment.stat().st_size):
                return False
            last = last_line(segment)
            if last is None or entry_hash(last) != state["prev"]:
                return False
            if json.loads(last).get("seq") != state["next_seq"] - 1:
                return False
            frontier = MerkleFrontier(
                state["size"], [bytes.fromhex(subtree) for subtree in state["subtrees"]]
            )
            if frontier.size != state["next_seq"]:
                return False
            digest = state["last_config_digest"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        self._frontier, self._prev, self._seq = frontier, state["prev"], state["next_seq"]
        self.last_config_digest = digest
        return True

    def _tail_state_mac(self, state: dict[str, Any]) -> str:
        """The HMAC, under the audit key, of a tail state without its ``mac``: whoever edits
        the file (a subtree, the size) without the key cannot make the writer sign a wrong
        root; the writer reads the trail instead."""
        content = canonical({name: value for name, value in state.items() if name != "mac"})
        return hmac.digest(self.hmac_key, b"retention tail state\x00" + content, "sha256").hex()

    def _save_tail_state(self) -> None:
        """Save where the trail ends, so that the next writer need not read it all. Best effort:
        a state that is missing or behind is detected and rebuilt."""
        if self._segment is None:
            return
        temporary = self.directory / f"{TAIL_STATE}.tmp"
        try:
            state = {
                "segment": self._segment.name,
                "segment_bytes": self._segment.stat().st_size,
                "next_seq": self._seq,
                "prev": self._prev,
                "size": self._frontier.size,
                "subtrees": [subtree.hex() for subtree in self._frontier.subtrees],
                "last_config_digest": self.last_config_digest,
            }
            state["mac"] = self._tail_state_mac(state)
            self._saved_seq = self._seq
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(descriptor, json.dumps(state).encode())
            finally:
                os.close(descriptor)
            os.replace(temporary, self.directory / TAIL_STATE)
        except OSError:
            # A stale state is detected on the next open anyway; removing it saves that check.
            with suppress(OSError):
                (self.directory / TAIL_STATE).unlink(missing_ok=True)

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
            descriptor = os.open(segment, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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
            os.close(os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
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
    ) -> list[bytes]:
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

        def pending_text() -> bytes:
            written.append(_pending_text(pending, key_values))
            return written[0]

        files.append((self._pending_path(seq), pending_text))
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
        return self._pending_mac(seq, written[0]), digest

    def _pending_mac(self, seq: int, content: bytes) -> str:
        """The HMAC, under the audit key, of intent ``seq``'s pending file (its bytes)."""
        message = b"retention pending\x00%d\x00" % seq + content
        return hmac.digest(self.hmac_key, message, "sha256").hex()

    def authentic_pending(self, seq: int, mac: str) -> dict[str, Any]:
        """Given intent ``seq`` and the ``pending_mac`` its entry records, return its pending
        file's content, read from the bytes that HMAC was checked against.
        UnauthenticPending when it does not check (the file edited, or another intent's) or
        is not a JSON object."""
        try:
            content = self._pending_path(seq).read_bytes()
        except OSError as error:
            raise AuditFailure(f"cannot read the pending keys of entry {seq}: {error}") from error
        if not hmac.compare_digest(mac, self._pending_mac(seq, content)):
            raise UnauthenticPending(
                f"pending/{seq:08d}.json is not the file its intent's pending_mac names (edited)"
            )
        try:
            parsed = json.loads(content)
        except ValueError as error:
            raise UnauthenticPending(f"pending/{seq:08d}.json is not JSON") from error
        if not isinstance(parsed, dict):
            raise UnauthenticPending(f"pending/{seq:08d}.json is not a JSON object")
        return parsed

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
        try:
            # The note first: a crash between the two leaves no note without its pending keys
            # (an intent cleared is settled, so its note is never read).
            self._not_done_path(seq).unlink(missing_ok=True)
            self._pending_path(seq).unlink(missing_ok=True)
        except OSError as error:
            raise AuditFailure(f"cannot clear the pending keys of entry {seq}: {error}") from error

    def write_not_done(self, seq: int, keys: Sequence[Sequence[object]]) -> None:
        """Given intent ``seq`` and the keys of it that its batch's transaction did not purge,
        write them durably beside its pending keys (each an array, spelled as they are), before
        that transaction commits, with their HMAC under the audit key (``not_done_keys``)."""
        keys_text = json.dumps([list(key) for key in keys], default=str)
        mac = self._not_done_mac(seq, keys_text)
        text = f'{{"mac": "{mac}", "keys": {keys_text}}}'.encode()
        try:
            write_durably(self._not_done_path(seq), text)
        except OSError as error:
            raise AuditFailure(
                f"cannot write the keys entry {seq} did not purge: {error}"
            ) from error

    def not_done_keys(self, seq: int) -> list[tuple[Any, ...]] | None:
        """The keys ``write_not_done`` wrote for intent ``seq``, as tuples; None if it wrote
        none (its batch's transaction purged all of them, or never committed).
        UnauthenticNote when the note's HMAC does not check (edited, or written for another
        intent): the pending files are not chained, so only the audit key vouches for it."""
        try:
            content = json.loads(self._not_done_path(seq).read_bytes())
        except FileNotFoundError:
            return None
        except OSError as error:
            raise AuditFailure(
                f"cannot read the keys entry {seq} did not purge: {error}"
            ) from error
        except ValueError as error:
            raise UnauthenticNote(
                f"the note of the keys entry {seq} did not purge is not JSON"
            ) from error
        keys = content.get("keys") if isinstance(content, dict) else None
        mac = content.get("mac") if isinstance(content, dict) else None
        if not isinstance(keys, list) or not all(isinstance(key, list) for key in keys):
            raise UnauthenticNote(f"the note of the keys entry {seq} did not purge is malformed")
        if not isinstance(mac, str) or not hmac.compare_digest(
            mac, self._not_done_mac(seq, json.dumps(keys))
        ):
            raise UnauthenticNote(f"the note of the keys entry {seq} did not purge does not check")
        return [tuple(key) for key in keys]

    def _not_done_mac(self, seq: int, keys_text: str) -> str:
        """The HMAC, under the audit key, of intent ``seq``'s note of keys not purged (their
        JSON text, as ``json.dumps`` spells it on writing and again on reading)."""
        message = b"retention not done\x00%d\x00" % seq + keys_text.encode()
        return hmac.digest(self.hmac_key, message, "sha256").hex()

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
        """The raw keys of every batch in flight, by the seq of its intent; None for a file
        that is empty or torn (its writing never finished, so it was never acknowledged)."""
        self._wait_clearing()
        found: list[tuple[int, dict[str, Any] | None]] = []
        for path in sorted((self.directory / "pending").glob("*.json")):
            if not path.stem.isdigit():
                continue
            try:
                content = json.loads(path.read_bytes())
            except ValueError:
                content = None
            readable = isinstance(content, dict) and any(
                isinstance(content.get(name), kind)
                for name, kind in (("keys", list), ("key_values", list), ("partition", str))
            )
            found.append((int(path.stem), content if readable else None))
        return found

    def clear_unfinished_pending(self) -> None:
        """Remove the temporary files of pending keys whose writing a crash cut short: never
        renamed into place, so their intent was never appended."""
        try:
            for path in (self.directory / "pending").glob("*.json.tmp"):
                path.unlink(missing_ok=True)
        except OSError as error:
            raise AuditFailure(f"cannot clear unfinished pending keys: {error}") from error

    def _pending_path(self, seq: int) -> Path:
        return self.directory / "pending" / f"{seq:08d}.json"

    def _not_done_path(self, seq: int) -> Path:
        return self.directory / "pending" / f"{seq:08d}.not_done.json"


def _pending_text(pending: dict[str, Any], key_values: bytes | None) -> bytes:
    """The pending file's JSON: ``pending``, plus ``key_values`` spelled already (an array)."""
    text = json.dumps(pending, default=str).encode()
    if key_values is None:
        return text
    return text[:-1] + b', "key_values": ' + key_values + b"}"
