"""The state database's tables: the run ledger, leases between hosts, the daemons'
heartbeats and legal holds (state.py opens the database and creates them on first use)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text

metadata = MetaData()

runs = Table(
    "retention_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("rule", String(100), nullable=False, index=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(20), nullable=False),
    Column("due", Integer, nullable=False, default=0),
    Column("deleted", Integer, nullable=False, default=0),
    Column("anonymised", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("host", String(255)),
)

leases = Table(
    "retention_leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# One row per running daemon, beaten every third of its lease_ttl and deleted on a clean stop:
# how `retention status` knows that a daemon is alive. A new table, so create_all adds it to a
# state database made before it existed.
daemons = Table(
    "retention_daemons",
    metadata,
    Column("holder", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("beat_at", DateTime(timezone=True), nullable=False),
    Column("beat_seconds", Integer, nullable=False),
    # {rule: ISO 8601 UTC}: when this daemon's scheduler runs each rule next.
    Column("next_runs", JSON, nullable=False),
)

holds = Table(
    "retention_holds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(100), nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # key | where | prefix
    Column("value", JSON, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("until", DateTime(timezone=True)),
    Column("released_at", DateTime(timezone=True)),
    Column("released_by", String(255)),
    Column("release_reason", Text),
)

# A hold placed while another process held the audit trail's writer lock (a run): in force
# from its commit, its hold.added entry not yet in the trail. The lock's next holder appends
# it and deletes the row; ``recording_seq`` is the seq it was being appended at, so that a
# crash between the append and the delete neither drops nor repeats it. A table of its own
# rather than a column of retention_holds: create_all adds it to a state database made before
# it (as retention_daemons), and an older database's holds, having no row here, are recorded.
holds_unrecorded = Table(
    "retention_holds_unrecorded",
    metadata,
    Column("hold_id", Integer, primary_key=True, autoincrement=False),
    # Who placed it, as the trail names a writer: tool, host, user.
    Column("placed_by", JSON, nullable=False),
    # What held the trail then (the lock's message, the leases in force), for `hold list`.
    Column("writer", Text),
    Column("recording_seq", Integer),
)
