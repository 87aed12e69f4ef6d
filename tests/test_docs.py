"""Drift tests: the docs and the shipped files say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from retention.config import load_config, parse_config
from retention.errors import ConfigError

ROOT = Path(__file__).parent.parent
BOGUS = "zz_not_a_key"

# A config with an unknown key in every table: the parser's errors list the keys it knows there.
PROBE = f"""
{BOGUS} = 1
[settings]
{BOGUS} = 1
[audit]
enabled = false
{BOGUS} = 1
[state]
{BOGUS} = 1
[daemon]
{BOGUS} = 1
[stores.app]
kind = "sql"
url = "sqlite:///x"
{BOGUS} = 1
[[rules]]
name = "r"
store = "app"
table = "t"
key = "id"
clock = "at"
period = "1y"
action = "delete"
{BOGUS} = 1
[rules.joins.j]
table = "u"
on = {{ u_id = "id" }}
{BOGUS} = 1
[[rules.children]]
table = "c"
foreign_key = "t_id"
{BOGUS} = 1
[stores.bucket]
kind = "s3"
bucket = "b-bucket"
{BOGUS} = 1
[stores.folder]
kind = "files"
root = "/srv/backups"
{BOGUS} = 1
[[rules]]
name = "s3"
store = "bucket"
period = "7d"
prefix = "p/"
{BOGUS} = 1
[[rules]]
name = "files"
store = "folder"
period = "7d"
glob = "*.gz"
{BOGUS} = 1
"""
# The tables whose keys are listed; the object rules' keys are the same on both kinds of store.
EXPECTED_TABLES = {
    "settings",
    "audit",
    "state",
    "daemon",
    "stores.app",
    "stores.bucket",
    "stores.folder",
    "rules[0]",
    "rules[0].joins.j",
    "rules[0].children[0]",
    "rules[1]",
    "rules[2]",
}
KNOWN = re.compile(r"(?:unknown key|not for rules on '\w+' stores) \(known here: (.*)\)")


def known_keys() -> dict[str, set[str]]:
    with pytest.raises(ConfigError) as raised:
        parse_config(PROBE.encode())
    tables = {}
    for issue in raised.value.issues:
        match = KNOWN.fullmatch(issue.message)
        if match and issue.path.endswith(BOGUS):
            tables[issue.path.removesuffix(BOGUS).rstrip(".") or "<top>"] = set(
                match.group(1).split(", ")
            )
    return tables


def test_every_config_key_is_documented() -> None:
    documented = (ROOT / "docs" / "config.md").read_text()
    tables = known_keys()
    assert set(tables) >= EXPECTED_TABLES
    assert "subject_prefix" in tables["rules[1]"]
    assert tables["rules[1]"] == tables["rules[2]"]
    assert "endpoint_url" in tables["stores.bucket"]
    assert "root" in tables["stores.folder"]
    missing = {
        f"{table}.{key}"
        for table, keys in tables.items()
        for key in keys
        if not any(
            spelling in documented
            for spelling in (f"`{key}`", f"`[{key}]`", f"`[[{key}]]`", f"`[{key}.", f".{key}`")
        )
    }
    assert not missing, f"not in docs/config.md: {sorted(missing)}"


def test_the_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "config" / "retention.toml")
    assert len(config.rules) >= 13
    assert config.audit is not None
    assert config.audit.enabled


def test_the_readme_commands_are_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make demo" in readme
    assert "make test" in readme
    assert re.search(r"^exec make test\b", ci, re.MULTILINE)


def test_every_key_of_every_json_schema_is_in_docs_json_md() -> None:
    from retention.documents import schema

    documented = (ROOT / "docs" / "json.md").read_text()

    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            found = (
                set(node.get("properties", {}))
                if isinstance(node.get("properties"), dict)
                else set()
            )
            return found | {key for value in node.values() for key in keys(value)}
        if isinstance(node, list):
            return {key for value in node for key in keys(value)}
        return set()

    for name in ("plan", "run", "status", "holds", "audit-show", "audit-prove", "audit-erasures"):
        assert f"retention/schemas/{name}.schema.json" in documented
        missing = {key for key in keys(schema(name)) if f"`{key}`" not in documented}
        assert not missing, f"{name}: not in docs/json.md: {sorted(missing)}"


def _heading_anchors(path: Path) -> set[str]:
    """Given a Markdown file, return the anchors GitHub makes of its headings (text lowercased,
    punctuation dropped, spaces as hyphens, a repeated heading numbered)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = re.match(r"#+ (.*)", line)
        if heading is None or in_code:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1).strip()).lower()
        slug = "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_doc_is_listed_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    unlisted = [
        path.name
        for path in sorted((ROOT / "docs").glob("*.md"))
        if f"](docs/{path.name})" not in readme
    ]
    assert not unlisted, f"not in README.md's Documentation list: {unlisted}"


def test_every_link_between_the_docs_resolves() -> None:
    broken = []
    for document in [
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path_text, _, anchor = target.partition("#")
            path = (document.parent / path_text).resolve() if path_text else document
            resolves = path.exists() and (
                not anchor or path.suffix != ".md" or anchor in _heading_anchors(path)
            )
            if not resolves:
                broken.append(f"{document.name}: {target}")
    assert not broken, f"links to no file or heading: {broken}"


def test_the_examples_per_commitment_are_the_shipped_rules() -> None:
    """docs/config.md says its rules for rows 1-12 are quoted from config/retention.toml, less
    their schedule, jitter and erase_by (and the joins only erase_by reads): a user copies them,
    so a key left out (`match_all`, refused without it; `max_fraction`, braked without it) makes
    a rule that the config refuses or that never purges."""
    import tomllib

    text = (ROOT / "docs" / "config.md").read_text()
    section = text.split("## One example per commitment\n")[1].split("\n### Row 13")[0]
    shipped = tomllib.loads((ROOT / "config" / "retention.toml").read_text())
    shipped_rules = {rule["name"]: rule for rule in shipped["rules"]}
    quoted = [tomllib.loads(block) for block in re.findall(r"```toml\n(.*?)```", section, re.S)]
    assert len(quoted) >= 12
    differences = []
    for document in quoted:
        for name, store in document.get("stores", {}).items():
            if store != shipped["stores"][name]:
                differences.append(f"stores.{name}")
        for rule in document.get("rules", []):
            expected = dict(shipped_rules[rule["name"]])
            expected.pop("schedule", None)
            expected.pop("jitter", None)
            if "erase_by" not in rule:
                erase_by = str(expected.pop("erase_by", ""))
                joins = {
                    join: definition
                    for join, definition in expected.pop("joins", {}).items()
                    if not erase_by.startswith(f"{join}.")
                    or str(expected.get("clock")).startswith(f"{join}.")
                }
                if joins:
                    expected["joins"] = joins
            differences += [
                f"{rule['name']}.{key}"
                for key in sorted(set(expected) | set(rule))
                if expected.get(key) != rule.get(key)
            ]
    assert not differences, f"docs/config.md differs from config/retention.toml: {differences}"


def _console_blocks(section: str) -> list[str]:
    return re.findall(r"```console\n(.*?)```", section, re.S)


def test_the_validation_examples_are_what_config_validate_prints(tmp_path: Path) -> None:
    """docs/config.md shows `config validate` on a copy of the shipped config with three static
    mistakes, then with two schema mistakes: the first is run here as described, and each line
    of the second names the rule (by index) whose table it names."""
    import tomllib

    from click.testing import CliRunner

    from retention.cli import main

    text = (ROOT / "docs" / "config.md").read_text()
    section = text.split("## Validation: every error at once\n")[1].split("\n## ")[0]
    static, schema = _console_blocks(section)[:2]

    shipped = (ROOT / "config" / "retention.toml").read_text()
    rules = tomllib.loads(shipped)["rules"]
    names = [rule["name"] for rule in rules]
    copy = shipped
    logs = copy.index('name = "connection-logs"')
    copy = copy[:logs] + copy[logs:].replace('period = "1y"', 'period = "365"', 1)
    copy = copy.replace("""where = ["status = 'sent'"]""", """where = ["status == 'sent'"]""", 1)
    applicants = copy.index('name = "job-applicants"\n')
    copy = copy[:applicants] + copy[applicants:].replace("\n", '\nkeep_for = "2y"\n', 1)
    config = tmp_path / "x.toml"
    config.write_text(copy)
    result = CliRunner().invoke(main, ["--config", str(config), "config", "validate"])
    expected = [line for line in static.splitlines() if not line.startswith(("$", "78"))]
    assert result.exit_code == 78
    assert result.stderr.splitlines() == expected
    assert static.splitlines()[-1] == "78"

    for index, table in re.findall(r"^error: rules\[(\d+)\]\.[^:]*: .* in '(\w+)'$", schema, re.M):
        assert rules[int(index)]["table"] == table, f"rules[{index}] is {names[int(index)]}"


def test_config_validate_reports_a_short_hash_key_as_the_docs_say(tmp_path: Path) -> None:
    """docs/config.md and exit-codes.md: `config validate` reads the hash key (it once said
    only plan and run did); `--offline` reads no secret."""
    from click.testing import CliRunner

    from retention.cli import main

    assert (
        "`config validate` reads the secrets the file names"
        in (ROOT / "docs" / "config.md").read_text()
    )
    (tmp_path / "hash.key").write_text("short\n")
    config = tmp_path / "retention.toml"
    config.write_text('[settings]\nhash_key_file = "hash.key"\n[audit]\nenabled = false\n')
    result = CliRunner().invoke(main, ["--config", str(config), "config", "validate"])
    assert result.exit_code == 78
    assert "error: settings.hash_key_file: " in result.stderr
    assert "shorter than 16 bytes" in result.stderr
    offline = CliRunner().invoke(main, ["--config", str(config), "config", "validate", "--offline"])
    assert offline.exit_code == 0, offline.output


def test_every_command_line_option_is_documented() -> None:
    """Each option of each command (`--help` shows them) is named in README.md or docs/*.md:
    an option that only `--help` knows is one an operator never learns of."""
    import click

    from retention.cli import main

    documented = (ROOT / "README.md").read_text() + "".join(
        path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))
    )

    def commands(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
        if isinstance(command, click.Group):
            return [
                found
                for name, sub in sorted(command.commands.items())
                for found in commands(sub, f"{path} {name}")
            ]
        return [(path, command)]

    options = {
        (path, option)
        for path, command in [("retention", main), *commands(main, "retention")]
        for parameter in command.params
        if isinstance(parameter, click.Option)
        for option in [*parameter.opts, *parameter.secondary_opts]
        if option.startswith("--")
    }
    missing = sorted(
        f"{path} {option}"
        for path, option in options
        if option != "--help" and option not in documented
    )
    assert not missing, f"options in no doc: {missing}"

    # And the other way: an option the user guides name is one some command takes (the
    # performance pages name the bench scripts' options; these are other tools').
    others = {"--help", "--bucket", "--object-lock-enabled-for-bucket", "--chunk-time", "--now"}
    others |= {"--pipe", "--wait", "--reference", "--upgrade"}
    known = {option for _path, option in options} | others
    guides = [ROOT / "README.md", ROOT / "deploy" / "systemd" / "README.md"]
    guides += sorted((ROOT / "docs").glob("*.md"))
    unknown = sorted(
        f"{path.name}: {option}"
        for path in guides
        if not path.name.startswith("performance")
        for option in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", path.read_text()))
        if option not in known
    )
    assert not unknown, f"options no command takes: {unknown}"
