"""The config's one declaration (retention/config/schema.py): the validation of a config comes
from it (through retention/config/compiled.json), and its JSON Schema, its sample and
docs/config.md agree with it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from retention.cli import main
from retention.config import Config, parse_config
from retention.config.compile import TARGET, compiled_schemas, json_schema
from retention.config.example import config_example, toml_value
from retention.config.schema import (
    AuditTable,
    CheckinsTable,
    ChildTable,
    ConfigFile,
    DaemonTable,
    FilesStoreTable,
    JoinTable,
    ObjectRule,
    S3StoreTable,
    SettingsTable,
    SqlStoreTable,
    StateTable,
    TableRule,
)
from retention.config.validation import validate_document
from retention.errors import ConfigError, ConfigIssue
from tests import test_bad_input, test_config, test_object_rules, test_scheduler
from tests.support import logs_rule

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "retention.toml"
DEPLOYED = ROOT / "deploy" / "systemd" / "retention.toml.example"
DOCS = ROOT / "docs" / "config.md"

# Taplo (and so VS Code's Even Better TOML) reads Draft 4; other editors Draft 7.
VALIDATORS = (jsonschema.Draft4Validator, jsonschema.Draft7Validator)


def schema_errors(document: dict[str, Any]) -> list[jsonschema.ValidationError]:
    """The errors of the strictest of the drafts editors read (both must agree)."""
    found = [list(validator(json_schema()).iter_errors(document)) for validator in VALIDATORS]
    assert bool(found[0]) == bool(found[1])
    return found[1]


def reader_issues(text: str | bytes) -> list[ConfigIssue]:
    content = text.encode() if isinstance(text, str) else text
    try:
        parse_config(content)
    except ConfigError as error:
        return list(error.issues)
    return []


# --- the schema itself ------------------------------------------------------------------------


@pytest.mark.parametrize("validator", VALIDATORS)
def test_the_schema_is_one_that_draft_4_and_draft_7_validators_read(validator: Any) -> None:
    validator.check_schema(json_schema())


@pytest.mark.parametrize("path", [SHIPPED, DEPLOYED], ids=lambda path: path.name)
def test_the_schema_accepts_the_shipped_configs(path: Path) -> None:
    document = tomllib.loads(path.read_text())

    assert schema_errors(document) == []


@pytest.mark.parametrize("path", [SHIPPED, DEPLOYED], ids=lambda path: path.name)
def test_the_shipped_configs_name_the_schema_for_editors(path: Path) -> None:
    assert path.read_text().startswith("#:schema ./retention.schema.json\n")


def test_the_schema_beside_the_shipped_config_is_the_schema() -> None:
    written = json.loads((SHIPPED.parent / "retention.schema.json").read_text())

    assert written == json_schema(), (
        "config/retention.schema.json is out of date: "
        "retention config schema > config/retention.schema.json"
    )


# --- the test corpus of bad configs -----------------------------------------------------------

# What only the readers can check: a value against another key, another table or another rule,
# the grammars of conditions, schedules, periods and date patterns, the time zone database, the
# file system. A bad config whose every error is one of these may pass the schema; any other
# must fail it.
BEYOND_A_SCHEMA = (
    "no store named",  # another table
    "is already the name of",  # another rule
    "which is not declared",  # a join of the same rule
    "not the name of a rule",
    "is not a literal",  # the grammar of conditions
    "IS NULL or IS NOT NULL",
    "column OPERATOR value",
    "only goes with",  # one key against another
    "only makes sense with period_column",
    "cannot also be an anonymised column",
    "map each column to a strategy",
    "needs a secret key",
    "missing: the column of the parent table",
    "marker_column: missing",
    "missing: clock =",
    "match_all = true",
    "here, not",  # an object rule's clock depends on its store's kind
    "with prefix, not glob",
    "unknown time zone",  # the time zone database
    "needs %Y, %m and %d",  # the grammar of date patterns
    "refusing / as a root",  # the file system
    "give an absolute path",
    "longer than 1000 years",  # calendar arithmetic
    "must be at most 366d",
    "is not in 0-",  # the grammar of crontab
    "is not in 1-",
    "expected 5 fields",
    "goes backwards",
    "is not a positive number",
    "is not below the field's",
    "a step goes with",
    "never happens",
    "day of week 'funday'",
)


def _cases(test: Any) -> Iterator[tuple[Any, ...]]:
    (mark,) = [mark for mark in test.pytestmark if mark.name == "parametrize"]
    single = isinstance(mark.args[0], str) and "," not in mark.args[0]
    for case in mark.args[1]:
        values = getattr(case, "values", case)
        yield (values,) if single and not hasattr(case, "values") else tuple(values)


def bad_configs() -> Iterator[tuple[str, str]]:
    """Every bad config of the config tests, built as each test builds it."""
    header, rule = test_config.HEADER, test_config.VALID_RULE
    yield "many errors", test_config.MANY_ERRORS
    for text, _expected in _cases(test_config.test_settings_and_store_errors):
        yield text, text
    for old, new, _path in _cases(test_config.test_a_missing_identifier_is_reported_as_missing):
        yield f"{old!r} -> {new!r}", header + rule.replace(old, new)
    for old, new, _expected in _cases(test_config.test_rule_value_errors):
        yield f"{old!r} -> {new!r}", header + rule.replace(old, new)
    for extra, _expected in _cases(test_config.test_rule_section_errors):
        yield extra, header + rule + extra + "\n"
    for object_rule, _path, _fragment in _cases(
        test_object_rules.test_object_rule_errors_name_their_key_path
    ):
        text = test_object_rules.STORES + '[[rules]]\nname = "r"\nstore = "content"\n'
        yield object_rule, text + object_rule + "\n"
    for store, _path, _fragment in _cases(test_object_rules.test_store_errors_name_their_key_path):
        yield store, f'[settings]\ntimezone = "UTC"\n[stores.bad]\n{store}\n'
    for schedule, _fragment in _cases(test_scheduler.test_a_bad_schedule_says_what_is_wrong):
        rule_text = logs_rule(name="a", extra=f'schedule = "{schedule}"')
        yield schedule, test_scheduler.config_text(rule_text).decode()
    for (period,) in _cases(test_bad_input.test_a_period_past_the_calendar_is_a_config_error):
        yield period, header + rule.replace('"1y"', f'"{period}"')
    for table, key, value in _cases(
        test_bad_input.test_a_daemon_duration_past_a_year_is_a_config_error
    ):
        yield value, header + f'[{table}]\n{key} = "{value}"\n'


BAD_CONFIGS = list(bad_configs())


def _dotted(path: Any) -> str:
    """jsonschema's path (deque of keys and indexes) as the readers write it."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


@pytest.mark.parametrize(("case", "text"), BAD_CONFIGS, ids=[case for case, _ in BAD_CONFIGS])
def test_the_schema_rejects_each_bad_config_the_readers_reject_for_its_shape(
    case: str, text: str
) -> None:
    issues = reader_issues(text)
    assert issues, f"the readers accept {case!r}: not a bad config"
    errors = schema_errors(tomllib.loads(text))

    beyond = [issue for issue in issues if any(f in str(issue) for f in BEYOND_A_SCHEMA)]
    if beyond == issues:
        return  # may pass the schema, which cannot see these
    assert errors, f"the schema accepts {case!r}, which the readers refuse: {issues}"
    # The schema finds no error where the readers find none: each of its errors is in a table
    # or value the readers report on.
    reported = [issue.path for issue in issues]
    for error in errors:
        where = _dotted(error.absolute_path)
        assert any(path.startswith(where) for path in reported), (where, reported)


def test_the_corpus_has_cases_of_both_kinds() -> None:
    rejected = [case for case, text in BAD_CONFIGS if schema_errors(tomllib.loads(text)) != []]

    assert len(BAD_CONFIGS) > 60
    assert len(rejected) > 25


# --- the same keys and defaults as the readers --------------------------------------------------

SQL_STORE = '[stores.app]\nkind = "sql"\nurl = "sqlite:///app.sqlite"\n'
S3_STORE = '[stores.content]\nkind = "s3"\nbucket = "acme-content"\n'
FILES_STORE = '[stores.backups]\nkind = "files"\nroot = "/srv/backups"\n'
AUDIT = '[audit]\ndirectory = "/a"\nhmac_key_file = "/a/h"\nsigning_key_file = "/a/s"\n'
OBJECT_RULE = '[[rules]]\nname = "r"\nstore = "content"\nperiod = "7d"\n'
JOIN = '[rules.joins.acc]\ntable = "accounts"\non = { account_id = "id" }\n'
CHILD = '[[rules.children]]\ntable = "c"\nforeign_key = "p_id"\n'

# Each table of the declaration, as a config ending inside that table (a key written next
# lands in it).
TABLES: dict[type[BaseModel], str] = {
    SettingsTable: "[settings]\n",
    AuditTable: AUDIT,
    StateTable: "[state]\n",
    DaemonTable: "[daemon]\n",
    CheckinsTable: "[checkins]\n",
    SqlStoreTable: SQL_STORE,
    S3StoreTable: S3_STORE,
    FilesStoreTable: FILES_STORE,
    TableRule: SQL_STORE + test_config.VALID_RULE,
    ObjectRule: S3_STORE + OBJECT_RULE,
    JoinTable: SQL_STORE + test_config.VALID_RULE + JOIN,
    ChildTable: SQL_STORE + test_config.VALID_RULE + CHILD,
}


def known_keys(text: str) -> set[str]:
    """The keys the readers know in the table ``text`` ends in, as their error lists them."""
    (issue,) = reader_issues(text + "zz_unknown = 1\n")
    listed = re.search(r"known here: ([^)]*)\)", issue.message)
    assert listed is not None, issue
    return set(listed.group(1).split(", "))


@pytest.mark.parametrize("model", TABLES, ids=lambda model: model.__name__)
def test_the_readers_know_exactly_the_keys_the_schema_declares(model: type[BaseModel]) -> None:
    assert known_keys(TABLES[model]) == set(model.model_fields)


def test_the_readers_know_exactly_the_top_level_tables_the_schema_declares() -> None:
    assert known_keys("") == set(ConfigFile.model_fields)


def _without_digest(config: Config) -> Config:
    return replace(config, digest="")


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (model, name)
        for model in TABLES
        for name, field in model.model_fields.items()
        if field.default is not None and not field.is_required()
    ],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_a_key_written_at_its_schema_default_changes_nothing(
    model: type[BaseModel], name: str
) -> None:
    text = TABLES[model]
    written = text + f"{name} = {toml_value(model.model_fields[name].default)}\n"

    assert _without_digest(parse_config(written.encode())) == _without_digest(
        parse_config(text.encode())
    )


# --- validation comes from the declaration ------------------------------------------------------


def test_the_compiled_schemas_validation_reads_are_those_of_the_declaration() -> None:
    written = json.loads(TARGET.read_text())

    assert written == json.loads(json.dumps(compiled_schemas())), (
        "retention/config/compiled.json is out of date: .venv/bin/python -m "
        "retention.config.compile"
    )


# Where each table of TABLES is in its config's document, and how its errors name it.
PLACES: dict[type[BaseModel], tuple[tuple[str | int, ...], str]] = {
    SettingsTable: (("settings",), "settings"),
    AuditTable: (("audit",), "audit"),
    StateTable: (("state",), "state"),
    DaemonTable: (("daemon",), "daemon"),
    CheckinsTable: (("checkins",), "checkins"),
    SqlStoreTable: (("stores", "app"), "stores.app"),
    S3StoreTable: (("stores", "content"), "stores.content"),
    FilesStoreTable: (("stores", "backups"), "stores.backups"),
    TableRule: (("rules", 0), "rules[0]"),
    ObjectRule: (("rules", 0), "rules[0]"),
    JoinTable: (("rules", 0, "joins", "acc"), "rules[0].joins.acc"),
    ChildTable: (("rules", 0, "children", 0), "rules[0].children[0]"),
}
NO_KEY_TAKES_THIS = datetime(1979, 5, 27, 7, 32, tzinfo=UTC)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (model, name)
        for model in TABLES
        for name in model.model_fields
        if (model, name) != (ObjectRule, "store")  # without its store, a rule is a SQL rule
    ],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_every_declared_key_refuses_a_value_of_no_declared_type_at_its_key_path(
    model: type[BaseModel], name: str
) -> None:
    document = tomllib.loads(TABLES[model])
    location, path = PLACES[model]
    table = document
    for part in location:
        table = table[part]
    table[name] = NO_KEY_TAKES_THIS

    issues = validate_document(document)

    where = f"{path}.{name}"
    assert [issue.path for issue in issues if issue.path == where] == [where], issues
    # Only a rule between keys (url and url_env both written) may be broken too.
    assert all(issue.message.startswith("give ") for issue in issues if issue.path != where)
    assert "1979-05-27" in issues[0].message or name == "kind", issues[0]
    assert name not in table or name == "kind", "the refused value is taken out for the readers"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[settings]\nmax_fraction = 0", ("settings.max_fraction", "above 0 and at most 1")),
        ("[settings]\nmax_fraction = nan", ("settings.max_fraction", "not nan")),
        ("[settings]\nmax_delete = " + "9" * 4000, ("settings.max_delete", "to 1000000000000")),
        ("[[settings]]\ntimezone = 'UTC'", ("settings", "must be a table, not [")),
        ("[[stores.app]]\nkind = 'sql'", ("stores.app", "must be a table: [stores.NAME]")),
        ("[stores]\napp = [1]", ("stores.app", "must be a table: [stores.NAME], not [1]")),
        ("[daemon]\nmetrics_port = 70000", ("daemon.metrics_port", "from 1 to 65535")),
        ("[checkins]\nstart = 'ftp://hc/SECRET'", ("checkins.start", "http:// or https://")),
        ("[state]\nurl = 'sqlite:///s'\nurl_env = 'S'", ("state", "at most one of url, url_env")),
    ],
)
def test_hostile_values_get_one_clear_error_at_their_key_path(
    text: str, expected: tuple[str, str]
) -> None:
    issues = reader_issues(text)

    assert [issue.path for issue in issues] == [expected[0]], issues
    assert expected[1] in issues[0].message
    assert "SECRET" not in issues[0].message  # a check-in URL holds its check's token
    assert len(issues[0].message) < 300


def test_a_template_in_a_value_is_shown_as_written_never_filled_in() -> None:
    rule = test_config.VALID_RULE + 'anonymise = { email = "{0} {value!r:>99999}" }\n'

    issues = reader_issues(test_config.HEADER + rule.replace('"delete"', '"anonymise"'))

    assert "rules[0].anonymise.email" in [issue.path for issue in issues]
    assert any("'{0} {value!r:>99999}'" in issue.message for issue in issues)


def test_an_integer_too_long_for_python_is_a_config_error_not_a_traceback() -> None:
    issues = reader_issues("[settings]\nbatch_size = " + "9" * 5000 + "\n")

    assert [issue.path for issue in issues] == ["<config>"]
    assert issues[0].message.startswith("not valid TOML")


NUL_OBJECT_STORE = """
[stores.files]
kind = "s3"
bucket = "backups"
credentials_file = "creds"
"""


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ('timezone = "UTC"', 'timezone = "UTC\\u0000"', "settings.timezone"),
        ('url = "sqlite:///app.sqlite"', 'url = "sqlite:///a\\u0000.sqlite"', "stores.app.url"),
        (
            'credentials_file = "creds"',
            'credentials_file = "cr\\u0000"',
            "stores.files.credentials_file",
        ),
        ('table = "logs"', 'table = "lo\\u0000gs"', "rules[0].table"),
        (
            'action = "delete"',
            'action = "delete"\nwhere = ["a = \'\\u0000\'"]',
            "rules[0].where[0]",
        ),
    ],
)
def test_a_nul_character_in_a_value_is_refused_at_its_key_path_alone(
    old: str, new: str, path: str
) -> None:
    """A file path or a URL holding a NUL character failed deep in the OS (`ValueError:
    embedded null byte`, a traceback) when `config validate` opened it."""
    text = test_config.HEADER + NUL_OBJECT_STORE + test_config.VALID_RULE
    assert old in text

    issues = reader_issues(text.replace(old, new, 1))

    assert [(issue.path, issue.message) for issue in issues] == [
        (path, "a NUL character has no place in a config value")
    ]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ('timezone = "UTC"', 'timezone = "' + "A" * 5000 + '"', "settings.timezone"),
        ('period = "1y"', 'period = "1' + "A" * 5000 + '"', "rules[0].period"),
        (
            'action = "delete"',
            'action = "delete"\nschedule = "' + "A" * 5000 + '"',
            "rules[0].schedule",
        ),
    ],
)
def test_a_long_value_is_cut_short_in_a_readers_message(old: str, new: str, path: str) -> None:
    """The readers' messages quote the value they refuse: a 5,000-character one was echoed whole,
    as the declaration's messages never do."""
    text = test_config.HEADER + test_config.VALID_RULE
    assert old in text

    issues = reader_issues(text.replace(old, new, 1))

    assert [issue.path for issue in issues] == [path]
    assert len(issues[0].message) < 300, issues[0].message
    assert "A" * 55 + "..." in issues[0].message


# --- the sample ---------------------------------------------------------------------------------

_COMMENTED_KEY = re.compile(r"# ((?:\[\[?[a-z_.]+\]\]?)|(?:[a-z_]+ = .*))$")


def test_the_sample_loads_and_the_schema_accepts_it() -> None:
    sample = config_example()

    config = parse_config(sample.encode())

    assert [rule.name for rule in config.rules] == ["logs"]
    assert schema_errors(tomllib.loads(sample)) == []


def test_the_sample_starts_with_the_schema_directive_editors_read() -> None:
    assert config_example().startswith("#:schema ./retention.schema.json\n")


def test_the_sample_shows_every_key_of_every_table() -> None:
    sample = config_example()
    keys = set(re.findall(r"^(?:# )?([a-z_]+) = ", sample, re.MULTILINE))

    for model in TABLES:
        if model not in (JoinTable, ChildTable):  # shown inline in the rule
            assert set(model.model_fields) <= keys, model.__name__


def test_every_commented_key_of_the_sample_is_a_value_the_schema_accepts_for_that_key() -> None:
    uncommented = "\n".join(
        match.group(1) if (match := _COMMENTED_KEY.fullmatch(line)) else line
        for line in config_example().splitlines()
    )
    document = tomllib.loads(uncommented)
    schema = json_schema()
    tables = {
        SettingsTable: document["settings"],
        AuditTable: document["audit"],
        StateTable: document["state"],
        DaemonTable: document["daemon"],
        CheckinsTable: document["checkins"],
        SqlStoreTable: document["stores"]["app"],
        S3StoreTable: document["stores"]["backups"],
        FilesStoreTable: document["stores"]["backup_folder"],
        TableRule: document["rules"][0],
        ObjectRule: document["rules"][1],
    }
    for model, table in tables.items():
        # Together they may break rules between keys (url and url_env at once): each alone.
        assert set(table) == set(model.model_fields), model.__name__
        properties = schema["definitions"][model.__name__]["properties"]
        for key, value in table.items():
            alone = {"definitions": schema["definitions"], **properties[key]}
            for validator in VALIDATORS:
                assert list(validator(alone).iter_errors(value)) == [], (model.__name__, key)


# --- docs/config.md ---------------------------------------------------------------------------

# Each section of docs/config.md that documents a table, by the start of its heading.
DOC_SECTIONS: dict[str, type[BaseModel]] = {
    "## `[settings]`": SettingsTable,
    "## `[audit]`": AuditTable,
    "## `[state]`": StateTable,
    "## `[daemon]`": DaemonTable,
    "## `[checkins]`": CheckinsTable,
    "## `[stores.NAME]`": SqlStoreTable,
    "### S3 buckets": S3StoreTable,
    "### Backup folders": FilesStoreTable,
    "## `[[rules]]`": TableRule,
    "### `joins`": JoinTable,
    "### `children`": ChildTable,
    "## Rules on object stores and backup folders": ObjectRule,
}
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def documented_keys() -> dict[type[BaseModel], tuple[set[str], dict[str, str]]]:
    """Each documented table's keys (first cells of its `| key |` tables, and the keys that
    open the `###` headings of a `##` section on rules), and the defaults its tables give."""
    found: dict[type[BaseModel], tuple[set[str], dict[str, str]]] = {}
    current: type[BaseModel] | None = None
    rules_section: type[BaseModel] | None = None
    in_key_table = False
    default_column: int | None = None
    for line in DOCS.read_text().splitlines():
        if line.startswith(("## ", "### ")):
            current = next((m for h, m in DOC_SECTIONS.items() if line.startswith(h)), None)
            if line.startswith("## "):
                rules_section = current if current in (TableRule, ObjectRule) else None
            elif current is None and rules_section is not None and line.startswith("### `"):
                names = {n for n in re.findall(r"`([^`]+)`", line) if _NAME.fullmatch(n)}
                found.setdefault(rules_section, (set(), {}))[0].update(names)
            in_key_table = False
            continue
        if current is None:
            continue
        if line.startswith("| key |"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            default_column = cells.index("default") if "default" in cells else None
            in_key_table = True
            continue
        if not (in_key_table and line.startswith("| `")):
            in_key_table = in_key_table and line.startswith("|")
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = [
            name.rsplit(".", 1)[-1]
            for name in re.findall(r"`([^`]+)`", cells[0])
            if _NAME.fullmatch(name.rsplit(".", 1)[-1])
        ]
        keys, defaults = found.setdefault(current, (set(), {}))
        keys.update(names)
        if default_column is not None and len(names) == 1:
            defaults[names[0]] = cells[default_column]
    return found


@pytest.mark.parametrize("model", DOC_SECTIONS.values(), ids=lambda model: model.__name__)
def test_docs_config_md_documents_exactly_the_keys_the_schema_declares(
    model: type[BaseModel],
) -> None:
    keys, _ = documented_keys()[model]

    assert keys == set(model.model_fields)


@pytest.mark.parametrize("model", DOC_SECTIONS.values(), ids=lambda model: model.__name__)
def test_docs_config_md_gives_the_schema_s_defaults(model: type[BaseModel]) -> None:
    _, defaults = documented_keys()[model]
    compared = 0
    for name, cell in defaults.items():
        literal = re.fullmatch(r"`([^`]+)`", cell)
        default = model.model_fields[name].default
        if literal is None or default is None or model.model_fields[name].is_required():
            continue  # "none", "—", `settings.batch_size`: said in words
        try:
            written = tomllib.loads(f"value = {literal.group(1)}")["value"]
        except tomllib.TOMLDecodeError:
            continue  # `daily`, `<directory>/public-keys.json`
        assert written == default, name
        compared += 1

    assert compared or model in (AuditTable, StateTable, JoinTable, ObjectRule, FilesStoreTable)


def test_docs_config_md_has_a_section_for_each_top_level_table() -> None:
    headings = set(re.findall(r"^## `\[\[?([a-z]+)", DOCS.read_text(), re.MULTILINE))

    assert headings == set(ConfigFile.model_fields)


# --- the commands -----------------------------------------------------------------------------


def test_config_schema_prints_the_schema_without_reading_a_config(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = CliRunner().invoke(main, ["--config", str(missing), "config", "schema"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json_schema()


def test_config_example_prints_the_sample_without_reading_a_config(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = CliRunner().invoke(main, ["--config", str(missing), "config", "example"])

    assert result.exit_code == 0, result.output
    assert result.stdout == config_example()


def test_the_config_package_does_not_import_pydantic_when_it_loads_a_config() -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom retention.config import load_config\n"
        f"load_config(Path({str(SHIPPED)!r}))\n"
        "print('pydantic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"


def test_help_imports_neither_pydantic_nor_pydantic_core() -> None:
    code = (
        "import sys\nfrom retention.cli import main\nsys.argv = ['retention', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "names = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted(names & {'pydantic', 'pydantic_core'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip().splitlines()[-1] == "[]"
