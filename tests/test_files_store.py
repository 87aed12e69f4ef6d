"""Backup folders (`kind = "files"`): what is due by mtime or by a date in the name, globs,
symlinks never followed, swaps between listing and unlink, holds, failures, the audit trail."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from retention.app import make_plan, run_plan
from retention.audit.entries import read_entries
from retention.cli import main
from retention.config import Config, FilesStoreConfig, parse_config
from retention.errors import ConfigError, ExitCode, RetentionError
from retention.selection import KeyValues, Selection, make_selection
from retention.stores import files_walk, open_stores
from retention.stores.files import FilesStore, open_files_store
from retention.stores.files_glob import path_glob
from tests.support import audit_table, plan_and_run

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)
AS_OF_TEXT = AS_OF.isoformat()
OLD = datetime(2020, 1, 1, tzinfo=UTC)
RECENT = datetime(2026, 11, 20, tzinfo=UTC)
# A 30-day period as of AS_OF: files modified at or before the cutoff are due; a date in a
# name is due when it is on or before LAST_DATE (the last whole day before the cutoff).
CUTOFF = datetime(2026, 10, 24, 12, tzinfo=UTC)
LAST_DATE = date(2026, 10, 23)
NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


def backup_rule(
    name: str = "backups",
    *,
    glob: str | None = None,
    date_pattern: str | None = None,
    period: str = "30d",
    extra: str = "",
) -> str:
    lines = [
        "[[rules]]",
        f'name = "{name}"',
        'store = "backups"',
        f'period = "{period}"',
    ]
    if glob is not None:
        lines.append(f'glob = "{glob}"')
    if date_pattern is not None:
        lines += ['clock = "name_date"', f'date_pattern = "{date_pattern}"']
    return "\n".join(lines) + "\n" + extra + "\n"


def config_text(
    directory: Path, root: Path, rules: str, *, audit: Path | None = None, timezone: str = "UTC"
) -> str:
    """A config with one files store (``root``), its state database in ``directory``."""
    audit_part = "[audit]\nenabled = false\n" if audit is None else audit_table(audit)
    return f"""
[settings]
timezone = "UTC"
max_fraction = 1.0

[stores.backups]
kind = "files"
root = "{root}"
timezone = "{timezone}"

{audit_part}
[state]
url = "sqlite:///{directory}/state.sqlite"

{rules}
"""


def make_config(
    directory: Path, root: Path, rules: str, *, audit: Path | None = None, timezone: str = "UTC"
) -> Config:
    return parse_config(
        config_text(directory, root, rules, audit=audit, timezone=timezone).encode()
    )


def write_config(directory: Path, root: Path, rules: str, *, audit: Path | None = None) -> Path:
    path = directory / "retention.toml"
    path.write_text(config_text(directory, root, rules, audit=audit))
    return path


def make_file(root: Path, relative: str, modified: datetime, content: bytes = b"x") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (modified.timestamp(), modified.timestamp()))
    return path


def files_under(root: Path) -> set[str]:
    """Every file and symlink under ``root`` (never following links), root-relative."""
    found = set()
    for directory, directories, files in os.walk(root):
        for name in files + [d for d in directories if (Path(directory) / d).is_symlink()]:
            found.add((Path(directory) / name).relative_to(root).as_posix())
    return found


def cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", "--config", str(config), *arguments])


def plan_json(config: Path, *extra: str) -> dict[str, object]:
    result = cli(config, "plan", "--as-of", AS_OF_TEXT, "--output", "json", "--show-keys", *extra)
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def rule_document(config: Path, rule: str = "backups") -> dict[str, object]:
    rules = plan_json(config, "--rule", rule)["rules"]
    assert isinstance(rules, list)
    document: dict[str, object] = rules[0]
    return document


def run(config: Path, *extra: str) -> Result:
    return cli(config, "run", "--yes", "--as-of", AS_OF_TEXT, *extra)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "backups"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the root, full of old files that no rule may ever reach."""
    folder = tmp_path / "outside"
    for name in ("a.tar", "b.sql.gz", "deep/c.tar"):
        make_file(folder, name, OLD)
    return folder


@pytest.fixture
def store(tmp_path: Path, root: Path) -> Iterator[FilesStore]:
    opened = open_files_store(FilesStoreConfig("backups", root, ZoneInfo("UTC")), read_only=False)
    yield opened
    opened.close()


def selection_for(config: Config, rule_name: str = "backups") -> Selection:
    (rule,) = config.rules_named((rule_name,))
    return make_selection(rule, AS_OF, ZoneInfo("UTC"))


# --- the glob ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("*.sql.gz", "db.sql.gz", True),
        ("*.sql.gz", "old/db.sql.gz", False),
        ("*.sql.gz", "db.sql.gz.part", False),
        ("**/*.tar", "a.tar", True),
        ("**/*.tar", "a/b/c/d.tar", True),
        ("**/*.tar", "a/b/c/d.tar.gz", False),
        ("nightly/*/*.tar", "nightly/2026/x.tar", True),
        ("nightly/*/*.tar", "nightly/2026/11/x.tar", False),
        ("nightly/**/*.tar", "nightly/x.tar", True),
        ("nightly/**/*.tar", "weekly/nightly/x.tar", False),
        ("logs/**", "logs/a/b", True),
        ("logs/**", "logs", False),
        ("**/*", ".hidden", True),
        ("db-??.tar", "db-01.tar", True),
        ("db-??.tar", "db-1.tar", False),
        ("db-[0-9]*.tar", "db-7x.tar", True),
        ("db-[0-9]*.tar", "db-x7.tar", False),
        ("a*b", "a/b", False),
    ],
)
def test_glob(glob: str, path: str, expected: bool) -> None:
    assert path_glob(glob).matches(path) is expected


def test_glob_prunes_directories_it_cannot_reach() -> None:
    assert not path_glob("*.sql.gz").may_reach_under("old")
    assert path_glob("**/*.tar").may_reach_under("old/deeper")
    assert path_glob("nightly/*/*.tar").may_reach_under("nightly/2026")
    assert not path_glob("nightly/*/*.tar").may_reach_under("nightly/2026/11")


# --- clocks -----------------------------------------------------------------------------------


def test_mtime_clock_at_the_cutoff_and_a_second_either_side(tmp_path: Path, root: Path) -> None:
    make_file(root, "before.tar", CUTOFF - timedelta(seconds=1))
    make_file(root, "at.tar", CUTOFF)
    make_file(root, "after.tar", CUTOFF + timedelta(seconds=1))
    make_file(root, "tomorrow.tar", AS_OF + timedelta(days=1))
    config = write_config(tmp_path, root, backup_rule())

    document = rule_document(config)
    assert document["cutoff"] == CUTOFF.isoformat()
    assert (document["due"], document["in_scope"], document["future_clock"]) == (2, 4, 1)
    assert document["sample_keys"] == ["at.tar", "before.tar"]
    assert document["oldest"] == (CUTOFF - timedelta(seconds=1)).isoformat()
    assert document["objects"] == {"files": 2, "bytes": 2}

    result = run(config)
    assert result.exit_code == 0, result.output
    assert files_under(root) == {"after.tar", "tomorrow.tar"}


def test_name_date_clock_a_day_either_side(tmp_path: Path, root: Path) -> None:
    day = timedelta(days=1)
    for when in (LAST_DATE - day, LAST_DATE, LAST_DATE + day):
        # Every mtime is old: only the date in the name counts.
        make_file(root, f"nightly/db-{when:%Y-%m-%d}.sql.gz", OLD)
    make_file(root, "nightly/db-2027-01-01.sql.gz", OLD)
    make_file(root, "nightly/notes.txt", OLD)
    make_file(root, "nightly/db-2025-02-30.sql.gz", OLD)  # not a real date
    config = write_config(tmp_path, root, backup_rule(date_pattern="db-%Y-%m-%d"))

    document = rule_document(config)
    assert document["clock"] == "name_date(db-%Y-%m-%d)"
    assert (document["due"], document["in_scope"], document["future_clock"]) == (2, 4, 1)
    # One format for every instant: a day is its midnight UTC (docs/json.md).
    assert document["oldest"] == f"{(LAST_DATE - day).isoformat()}T00:00:00+00:00"
    assert document["objects"] == {"files": 2, "bytes": 2, "unmatched": 2}

    result = run(config)
    assert result.exit_code == 0, result.output
    assert files_under(root) == {
        f"nightly/db-{LAST_DATE + day:%Y-%m-%d}.sql.gz",
        "nightly/db-2027-01-01.sql.gz",
        "nightly/notes.txt",
        "nightly/db-2025-02-30.sql.gz",
    }


def test_a_date_with_a_time_is_read_in_the_store_timezone(tmp_path: Path, root: Path) -> None:
    # 2026-10-24 13:30 in Paris (summer time) is 11:30 UTC: before the cutoff (12:00 UTC);
    # the same wall time in UTC is after it.
    make_file(root, "db-2026-10-24T13-30.tar", OLD)
    rule = backup_rule(date_pattern="db-%Y-%m-%dT%H-%M")
    paris = make_config(tmp_path, root, rule, timezone="Europe/Paris")
    utc = make_config(tmp_path, root, rule, timezone="UTC")
    with open_stores(paris, read_only=True) as store_for:
        assert store_for("backups").survey(selection_for(paris), 5).due == 1
    with open_stores(utc, read_only=True) as store_for:
        assert store_for("backups").survey(selection_for(utc), 5).due == 0


# --- globs, symlinks, swaps -------------------------------------------------------------------


def test_glob_top_level_versus_recursive(tmp_path: Path, root: Path) -> None:
    for name in ("a.sql.gz", "old/b.sql.gz", "old/deep/c.tar", "d.tar", "e.sql"):
        make_file(root, name, OLD)
    rules = backup_rule("dumps", glob="*.sql.gz") + backup_rule("archives", glob="**/*.tar")
    config = write_config(tmp_path, root, rules)

    assert rule_document(config, "dumps")["sample_keys"] == ["a.sql.gz"]
    assert rule_document(config, "archives")["sample_keys"] == ["d.tar", "old/deep/c.tar"]

    result = run(config, "--rule", "dumps")
    assert result.exit_code == 0, result.output
    assert files_under(root) == {"old/b.sql.gz", "old/deep/c.tar", "d.tar", "e.sql"}
    result = run(config, "--rule", "archives")
    assert result.exit_code == 0, result.output
    assert files_under(root) == {"old/b.sql.gz", "e.sql"}


def test_symlinks_are_never_followed_nor_deleted(tmp_path: Path, root: Path, outside: Path) -> None:
    make_file(root, "mine/old.tar", OLD)
    make_file(root, "inside-target.tar", OLD)
    (root / "to-outside-dir").symlink_to(outside, target_is_directory=True)
    (root / "mine" / "to-outside-file.tar").symlink_to(outside / "a.tar")
    (root / "to-inside-file.tar").symlink_to(root / "inside-target.tar")
    before_outside = files_under(outside)
    config = write_config(tmp_path, root, backup_rule())

    document = rule_document(config)
    assert document["due"] == 2
    assert document["sample_keys"] == ["inside-target.tar", "mine/old.tar"]
    assert document["objects"] == {"files": 2, "bytes": 2, "symlinks_skipped": 3}

    result = run(config)
    assert result.exit_code == 0, result.output
    assert files_under(outside) == before_outside
    assert all(os.path.getmtime(outside / name) == OLD.timestamp() for name in before_outside)
    assert files_under(root) == {"to-outside-dir", "mine/to-outside-file.tar", "to-inside-file.tar"}
    assert all((root / link).is_symlink() for link in files_under(root))


def test_a_directory_swapped_for_a_symlink_after_listing_is_not_followed(
    tmp_path: Path, root: Path, outside: Path, store: FilesStore
) -> None:
    make_file(root, "deep/a.tar", OLD)
    make_file(root, "deep/b.sql.gz", OLD)
    make_file(root, "top.tar", OLD)
    before_outside = files_under(outside)
    selection = selection_for(make_config(tmp_path, root, backup_rule()))
    selected: list[tuple[KeyValues, ...]] = []

    def swap(keys: tuple[KeyValues, ...], _detail: object = None) -> None:
        # The audit intent is written; now someone moves deep/ out of the root, files and all
        # (the very inodes listed), and leaves a link to it in its place.
        selected.append(keys)
        (root / "deep").rename(outside / "moved")
        (root / "deep").symlink_to(outside / "moved", target_is_directory=True)

    batch = store.purge_batch(
        selection,
        after=None,
        limit=100,
        dry_run=False,
        now=AS_OF,
        hash_key=None,
        before_write=swap,
    )
    assert selected == [(("deep/a.tar",), ("deep/b.sql.gz",), ("top.tar",))]
    assert (batch.done, batch.failed) == (1, 0)
    assert files_under(outside) == before_outside | {"moved/a.tar", "moved/b.sql.gz"}
    assert (root / "deep").is_symlink()
    assert not (root / "top.tar").exists()


def test_a_file_replaced_after_listing_is_kept(
    tmp_path: Path, root: Path, store: FilesStore
) -> None:
    make_file(root, "a.tar", OLD)
    make_file(root, "b.tar", OLD)
    selection = selection_for(make_config(tmp_path, root, backup_rule()))

    def replace_a(_keys: tuple[KeyValues, ...], _detail: object = None) -> None:
        # Written beside it then renamed over it, as backup tools do: another inode.
        make_file(root, "a.tar.new", OLD, b"another file")
        os.replace(root / "a.tar.new", root / "a.tar")

    batch = store.purge_batch(
        selection,
        after=None,
        limit=10,
        dry_run=False,
        now=AS_OF,
        hash_key=None,
        before_write=replace_a,
    )
    assert (len(batch.keys), batch.done) == (2, 1)
    assert (root / "a.tar").read_bytes() == b"another file"
    assert not (root / "b.tar").exists()


def test_a_file_touched_after_planning_is_kept(tmp_path: Path, root: Path) -> None:
    for name in ("a.tar", "b.tar", "c.tar"):
        make_file(root, name, OLD)
    config = make_config(tmp_path, root, backup_rule())
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        assert the_plan.rules[0].due == 3
        os.utime(root / "b.tar")  # a backup job rewrote it: it is new again
        report = run_plan(config, the_plan, store_for, dry_run=False)
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.deleted, outcome.skipped) == ("ok", 2, 1)
    assert files_under(root) == {"b.tar"}


def test_a_file_touched_between_listing_and_unlink_is_kept(
    tmp_path: Path, root: Path, store: FilesStore
) -> None:
    for name in ("a.tar", "b.tar"):
        make_file(root, name, OLD)
    selection = selection_for(make_config(tmp_path, root, backup_rule()))
    batch = store.purge_batch(
        selection,
        after=None,
        limit=10,
        dry_run=False,
        now=AS_OF,
        hash_key=None,
        before_write=lambda _keys, _detail=None: os.utime(root / "a.tar", (AS_OF.timestamp(),) * 2),
    )
    assert (len(batch.keys), batch.done, batch.failed) == (2, 1, 0)
    assert files_under(root) == {"a.tar"}


def test_names_that_are_not_utf8_are_kept_and_counted(tmp_path: Path, root: Path) -> None:
    raw = os.fsencode(root) + b"/db-\xff.tar"
    with open(raw, "wb") as handle:
        handle.write(b"x")
    os.utime(raw, (OLD.timestamp(), OLD.timestamp()))
    make_file(root, "plain.tar", OLD)
    config = write_config(tmp_path, root, backup_rule())
    document = rule_document(config)
    assert document["objects"] == {"files": 1, "bytes": 1, "undecodable_names": 1}
    result = run(config)
    assert result.exit_code == 0, result.output
    assert os.listdir(os.fsencode(root)) == [b"db-\xff.tar"]


# --- roots ------------------------------------------------------------------------------------


def test_an_empty_root_has_nothing_due(tmp_path: Path, root: Path) -> None:
    config = write_config(tmp_path, root, backup_rule())
    document = rule_document(config)
    assert (document["due"], document["in_scope"]) == (0, 0)
    assert document["objects"] == {"files": 0, "bytes": 0}
    result = run(config)
    assert result.exit_code == 0, result.output
    assert root.is_dir()


def test_root_slash_is_refused(tmp_path: Path, root: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(tmp_path, Path("/"), backup_rule())
    assert "stores.backups.root" in [issue.path for issue in raised.value.issues]
    link = tmp_path / "everything"
    link.symlink_to("/", target_is_directory=True)
    with pytest.raises(ConfigError) as raised:
        make_config(tmp_path, link, backup_rule())
    assert "stores.backups.root" in [issue.path for issue in raised.value.issues]


def test_a_root_that_became_a_symlink_to_slash_is_refused_when_opened(
    tmp_path: Path,
) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    config = make_config(tmp_path, root, backup_rule())
    root.rmdir()
    root.symlink_to("/", target_is_directory=True)
    with pytest.raises(ConfigError) as raised:
        open_files_store(config.stores["backups"], read_only=False)  # type: ignore[arg-type]
    assert [issue.path for issue in raised.value.issues] == ["stores.backups.root"]
    assert "resolves to /" in raised.value.issues[0].message


def test_a_missing_root_is_an_unavailable_store(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    config = write_config(tmp_path, missing, backup_rule())
    message = f"store 'backups': the folder {missing} does not exist"
    for arguments in (("plan", "--as-of", AS_OF_TEXT), ("run", "--yes", "--as-of", AS_OF_TEXT)):
        result = cli(config, *arguments)
        assert result.exit_code == ExitCode.STORE_UNAVAILABLE, result.output
        assert message in result.stdout
        assert "Traceback" not in result.output
        (line,) = [line for line in result.stdout.splitlines() if message in line]
        assert line.strip().endswith("does not exist")
    (missing / "file").parent.mkdir()
    assert cli(config, "plan", "--as-of", AS_OF_TEXT).exit_code == 0


def test_directories_left_empty_are_removed_and_the_root_kept(tmp_path: Path, root: Path) -> None:
    for name in ("2020/01/a.tar", "2020/01/b.tar", "2020/02/c.tar", "mixed/old.tar"):
        make_file(root, name, OLD)
    make_file(root, "mixed/new.tar", RECENT)
    make_file(root, "other/notes.txt", RECENT)
    (root / "empty-before").mkdir()
    config = write_config(tmp_path, root, backup_rule(extra="batch_size = 2"))
    result = run(config)
    assert result.exit_code == 0, result.output
    assert files_under(root) == {"mixed/new.tar", "other/notes.txt"}
    assert not (root / "2020").exists()
    assert (root / "empty-before").is_dir()

    make_file(root, "only/old.tar", OLD)
    for name in ("mixed/new.tar", "other/notes.txt"):
        os.utime(root / name, (OLD.timestamp(),) * 2)
    shutil.rmtree(root / "empty-before")
    result = run(config)
    assert result.exit_code == 0, result.output
    assert root.is_dir()
    assert list(root.iterdir()) == []


# --- holds, dry runs, read-only ---------------------------------------------------------------


def test_holds_by_prefix_and_by_key(tmp_path: Path, root: Path) -> None:
    names = ("clients/42/a.tar", "clients/42/b.tar", "clients/420/c.tar", "clients/7/d.tar")
    for name in names:
        make_file(root, name, OLD)
    config = write_config(tmp_path, root, backup_rule(), audit=tmp_path / "audit")
    by_prefix = cli(
        config, "hold", "add", "--rule", "backups", "--prefix", "clients/42/", "--reason", "case 1"
    )
    assert by_prefix.exit_code == 0, by_prefix.output
    by_key = cli(
        config, "hold", "add", "--rule", "backups", "--key", "clients/7/d.tar", "--reason", "case 2"
    )
    assert by_key.exit_code == 0, by_key.output

    document = rule_document(config)
    assert (document["due"], document["held"], document["in_scope"]) == (1, 3, 4)
    assert document["sample_keys"] == ["clients/420/c.tar"]
    result = run(config)
    assert result.exit_code == 0, result.output
    assert files_under(root) == {"clients/42/a.tar", "clients/42/b.tar", "clients/7/d.tar"}


def test_a_dry_run_selects_the_same_files_and_deletes_nothing(tmp_path: Path, root: Path) -> None:
    for index in range(5):
        make_file(root, f"{index}.tar", OLD)
    config = write_config(tmp_path, root, backup_rule(extra="batch_size = 2"))
    result = run(config, "--dry-run")
    assert result.exit_code == 0, result.output
    finished = [json.loads(line) for line in result.stderr.splitlines() if "rule.finished" in line]
    assert [(line["deleted"], line["batches"]) for line in finished] == [(5, 3)]
    assert len(files_under(root)) == 5


def test_a_read_only_store_refuses_to_delete(tmp_path: Path, root: Path) -> None:
    make_file(root, "a.tar", OLD)
    config = make_config(tmp_path, root, backup_rule())
    with open_stores(config, read_only=True) as store_for:
        store = store_for("backups")
        dry = store.purge_batch(
            selection_for(config), after=None, limit=10, dry_run=True, now=AS_OF, hash_key=None
        )
        assert (dry.keys, dry.done) == ((("a.tar",),), 0)
        with pytest.raises(RetentionError, match="read-only"):
            store.purge_batch(
                selection_for(config), after=None, limit=10, dry_run=False, now=AS_OF, hash_key=None
            )
    assert (root / "a.tar").exists()


def test_batches_resume_after_the_last_path(tmp_path: Path, root: Path, store: FilesStore) -> None:
    # "a.txt" sorts before "a/b.tar" ('.' < '/'): the walk must visit paths in that order.
    for name in ("a/b.tar", "a.txt", "a0.tar", "a/c/d.tar", "b.tar"):
        make_file(root, name, OLD)
    make_file(root, "a/new.tar", RECENT)
    selection = selection_for(make_config(tmp_path, root, backup_rule()))
    seen: list[KeyValues] = []
    after: KeyValues | None = None
    while True:
        batch = store.purge_batch(
            selection, after=after, limit=2, dry_run=True, now=AS_OF, hash_key=None
        )
        seen += batch.keys
        after = batch.next_after
        if not batch.more:
            break
    assert seen == [("a.txt",), ("a/b.tar",), ("a/c/d.tar",), ("a0.tar",), ("b.tar",)]
    assert seen == sorted(seen)
    assert store.existing_keys(str(root), ["path"], [("a.txt",), ("gone.tar",)]) == {("a.txt",)}


def test_a_runs_batches_list_each_directory_once(
    tmp_path: Path, root: Path, store: FilesStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One flat folder: listing it again at every batch would cost n²/batch_size names.
    for number in range(25):
        make_file(root, f"flat/db-{number:02d}.tar", OLD)
        make_file(root, f"flat/keep-{number:02d}.tar", RECENT)
    listings: list[int] = []
    real_listing = files_walk.sorted_entries

    def counted(descriptor: int) -> list[tuple[str, files_walk.EntryKind]]:
        listings.append(descriptor)
        return real_listing(descriptor)

    monkeypatch.setattr(files_walk, "sorted_entries", counted)
    selection = selection_for(make_config(tmp_path, root, backup_rule()))
    deleted = 0
    after: KeyValues | None = None
    while True:
        batch = store.purge_batch(
            selection, after=after, limit=10, dry_run=False, now=AS_OF, hash_key=None
        )
        deleted += batch.done
        after = batch.next_after
        if not batch.more:
            break
    assert deleted == 25
    assert files_under(root) == {f"flat/keep-{number:02d}.tar" for number in range(25)}
    assert len(listings) == 2  # the root and flat/, once each, for three batches
    # A batch that does not follow the previous one (another start) walks again.
    store.purge_batch(selection, after=None, limit=10, dry_run=True, now=AS_OF, hash_key=None)
    assert len(listings) == 4


# --- failures ---------------------------------------------------------------------------------


def test_a_file_that_cannot_be_deleted_is_reported_and_the_others_go(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("locked/secret-name-1.tar", "locked/secret-name-2.tar", "open/a.tar", "b.tar"):
        make_file(root, name, OLD)
    config = make_config(tmp_path, root, backup_rule(), audit=tmp_path / "audit")
    real_unlink = os.unlink

    def unlink(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> None:
        if str(path).startswith("secret-name"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    _plan, report = plan_and_run(config, AS_OF)
    (outcome,) = report.outcomes
    assert report.exit_code == ExitCode.PARTIAL_FAILURE
    assert (outcome.status, outcome.deleted, outcome.failed) == ("failed", 2, 2)
    assert outcome.error == "2 could not be purged: PermissionError: 2 (Permission denied)"
    assert files_under(root) == {"locked/secret-name-1.tar", "locked/secret-name-2.tar"}


def _runs_as_nobody() -> bool:
    probe = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "import retention.cli"],
        capture_output=True,
        cwd="/",
        check=False,
    )
    return probe.returncode == 0


def test_permission_denied_for_real(tmp_path: Path) -> None:
    """A real EACCES: as root, the CLI runs as nobody on a tree it can partly write; as
    anyone else, a directory without write permission does it."""
    as_root = os.geteuid() == 0
    if as_root and not (shutil.which("setpriv") and _runs_as_nobody()):
        pytest.skip("running as root without a way to run the command as another user")
    # Outside pytest's own temporary directories, which are private to their owner.
    base = Path(tempfile.mkdtemp(prefix="retention-files-")) if as_root else tmp_path
    try:
        root = base / "backups"
        for name in ("locked/secret-name-1.tar", "locked/secret-name-2.tar", "open/a.tar", "b.tar"):
            make_file(root, name, OLD)
        config = write_config(base, root, backup_rule())
        if as_root:
            for path in [base, *base.rglob("*")]:
                if path.parent.name != "locked" and path.name != "locked":
                    os.chown(path, NOBODY, NOBODY)
            arguments = ["--config", str(config), "run", "--yes", "--as-of", AS_OF_TEXT]
            result = subprocess.run(
                [*AS_NOBODY, sys.executable, "-m", "retention", "--log-format", "json", *arguments],
                capture_output=True,
                text=True,
                cwd=base,
                check=False,
            )
            exit_code, stdout, stderr = result.returncode, result.stdout, result.stderr
        else:
            (root / "locked").chmod(0o555)
            outcome = run(config)
            exit_code, stdout, stderr = outcome.exit_code, outcome.stdout, outcome.stderr
            (root / "locked").chmod(0o755)
        assert exit_code == ExitCode.PARTIAL_FAILURE, stdout + stderr
        finished = [json.loads(line) for line in stderr.splitlines() if "rule.finished" in line]
        assert [(line["deleted"], line["failed"]) for line in finished] == [(2, 2)]
        assert "PermissionError: 2 (Permission denied)" in finished[0]["error"]
        assert "secret-name" not in stdout + stderr
        assert files_under(root) == {"locked/secret-name-1.tar", "locked/secret-name-2.tar"}
    finally:
        if as_root:
            shutil.rmtree(base)


# --- the audit trail --------------------------------------------------------------------------


def test_the_audit_trail_records_every_batch_and_verifies(tmp_path: Path, root: Path) -> None:
    for index in range(5):
        make_file(root, f"nightly/{index}.tar", OLD)
    make_file(root, "nightly/new.tar", RECENT)
    audit = tmp_path / "audit"
    config = write_config(tmp_path, root, backup_rule(extra="batch_size = 2"), audit=audit)
    result = run(config)
    assert result.exit_code == 0, result.output
    assert files_under(root) == {"nightly/new.tar"}

    entries = [stored.content for stored in read_entries(audit)]
    intents = [entry for entry in entries if entry["type"] == "batch.intent"]
    results = [entry for entry in entries if entry["type"] == "batch.result"]
    assert [entry["selected"] for entry in intents] == [2, 2, 1]
    assert [(entry["status"], entry["done"]) for entry in results] == [("committed", 2)] * 2 + [
        ("committed", 1)
    ]
    assert {entry["dataset"] for entry in intents} == {str(root)}
    verified = cli(config, "audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_a_file_name_with_a_line_break_stays_on_its_line_in_the_plan(
    tmp_path: Path, root: Path
) -> None:
    """plan --show-keys printed a due file's name as it is: a name with a line break began a
    line of its own in the plan, which could read as another rule's or the plan's own."""
    make_file(root, "nightly/db-\n0 records due.\tx.tar", OLD)
    config = write_config(tmp_path, root, backup_rule())
    result = cli(config, "plan", "--as-of", AS_OF_TEXT, "--show-keys")
    assert result.exit_code == 0, result.output
    samples = result.stdout.split("Sample keys of due records")[1].splitlines()[1:]
    assert samples == ["  backups  nightly/db-\\n0 records due.\\tx.tar"]


def test_a_hold_prefix_with_a_line_break_stays_on_its_line(tmp_path: Path, root: Path) -> None:
    """hold add and hold list printed a prefix as it is: a line break in it began a line of
    its own in the listing."""
    make_file(root, "clients/42\n/a.tar", OLD)
    config = write_config(tmp_path, root, backup_rule(), audit=tmp_path / "audit")
    added = cli(
        config, "hold", "add", "--rule", "backups", "--prefix", "clients/42\n", "--reason", "case 1"
    )
    assert added.exit_code == 0, added.output
    assert added.stdout == "hold 1 on rule backups: prefix clients/42\\n (case 1)\n"
    listed = cli(config, "hold", "list")
    assert listed.exit_code == 0, listed.output
    assert len(listed.stdout.splitlines()) == 1, listed.stdout
    assert "prefix clients/42\\n" in listed.stdout
    assert files_under(root) == {"clients/42\n/a.tar"}
    assert run(config).exit_code == 0
    assert files_under(root) == {"clients/42\n/a.tar"}
