"""A rule's `policy` and `category` are printed by plan, `audit show` and the reports, and go
into the audit trail as written: a newline, an escape sequence, a bidi override, a zero-width or
a no-break space in one is refused at validation, with its key path, every one at once (what
str.isprintable() refuses, as for hold reasons); French text as people write it is read."""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from retention.cli import main
from retention.config import parse_config
from retention.errors import ConfigError, ExitCode
from retention.wording import printable_class
from tests.test_config_schema import schema_errors

HEADER = """
[settings]
timezone = "UTC"

[stores.app]
kind = "sql"
url = "sqlite:///app.sqlite"

[stores.backups]
kind = "files"
root = "/var/backups/app"
"""


def sql_rule(name: str, policy: str, category: str) -> str:
    return f"""
[[rules]]
name = "{name}"
store = "app"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
policy = {policy}
category = {category}
"""


def files_rule(name: str, policy: str, category: str) -> str:
    return f"""
[[rules]]
name = "{name}"
store = "backups"
period = "30d"
policy = {policy}
category = {category}
"""


# As TOML spells them: each a string holding one character a terminal acts on or hides.
HOSTILE = {
    "newline": '"Logs\\n1 an"',
    "newline, multi-line string": '"""Logs\n1 an"""',
    "escape sequence": '"Logs \\u001b[31m1 an"',
    "bidi override": '"Logs \\u202e1 an"',
    "zero width space": '"Logs\\u200b1 an"',
    "no-break space": '"Logs\\u00a01 an"',
    "tab": '"Logs\\t1 an"',
    "trailing newline": '"Logs 1 an\\n"',
    "line separator": '"Logs\\u20281 an"',
    "soft hyphen": '"Con\\u00adnexion"',
}


def test_hostile_policies_and_categories_are_refused_each_with_its_path_all_at_once() -> None:
    rules = ""
    expected = set()
    for index, value in enumerate(HOSTILE.values()):
        make = sql_rule if index % 2 == 0 else files_rule
        rules += make(f"r{index}", value, '"connection logs"' if index % 3 else value)
        expected.add(f"rules[{index}].policy")
        if index % 3 == 0:
            expected.add(f"rules[{index}].category")
    with pytest.raises(ConfigError) as caught:
        parse_config((HEADER + rules).encode())
    found = {issue.path: issue.message for issue in caught.value.issues}
    assert set(found) == expected
    for message in found.values():
        assert "holds a control or invisible character" in message
        assert message.isprintable(), "the message quotes the value escaped"
    assert found["rules[2].policy"].startswith("'Logs \\x1b[31m1 an' holds")
    assert found["rules[3].policy"].startswith("'Logs \\u202e1 an' holds")


@pytest.mark.parametrize(
    ("policy", "category"),
    [
        ("Données clients", "Prospects – 3 ans"),
        ("002 §6.1 : « Log de connexion : 1 an »", "Journaux d’accès (CNIL, délibération)"),
        ("Rétention légale — art. L123-22 ; Ωμέγα 日本語", "données 📦"),
    ],
)
def test_text_as_people_write_it_is_read(policy: str, category: str) -> None:
    text = HEADER + sql_rule("a", f'"{policy}"', f'"{category}"')
    text += files_rule("b", f"'{policy}'", f"'{category}'")
    config = parse_config(text.encode())
    assert [(rule.policy, rule.category) for rule in config.rules] == [(policy, category)] * 2


def test_a_blank_policy_is_still_refused_as_blank() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config((HEADER + sql_rule("a", '"   "', '"logs"')).encode())
    (issue,) = caught.value.issues
    assert (issue.path, issue.message) == (
        "rules[0].policy",
        "must be a non-empty string, not '   '",
    )


def test_config_validate_lists_them_and_prints_no_control_character(tmp_path: Path) -> None:
    path = tmp_path / "retention.toml"
    path.write_text(
        HEADER
        + sql_rule("a", HOSTILE["escape sequence"], HOSTILE["bidi override"])
        + files_rule("b", HOSTILE["newline"], '"backups"')
    )
    result = CliRunner().invoke(main, ["--config", str(path), "config", "validate", "--offline"])
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    for where in ("rules[0].policy", "rules[0].category", "rules[1].policy"):
        assert f"{where}: " in result.stderr
    assert "\x1b" not in result.output
    assert "\u202e" not in result.output


def test_editors_refuse_them_too() -> None:
    """The JSON Schema (`retention config schema`) carries the same pattern."""
    rule = {
        "name": "a",
        "store": "app",
        "table": "logs",
        "key": "id",
        "clock": "logged_at",
        "period": "1y",
        "action": "delete",
    }
    document = {"stores": {"app": {"kind": "sql", "url": "sqlite:///a.sqlite"}}, "rules": [rule]}
    for hostile in ("a\u202eb", "a\x1b[2Jb", "a\u200bb", "a\u00a0b", "a\nb"):
        rule["policy"] = hostile
        assert schema_errors(document), hostile
    rule["policy"] = "Prospects – 3 ans, données"
    assert not schema_errors(document)


def test_the_refused_characters_are_those_isprintable_refuses() -> None:
    """Among the characters Unicode assigns (the pattern cannot follow unassigned ones): a hold
    reason and a policy refuse the same."""
    import re

    allowed = re.compile(printable_class())
    for code in range(sys.maxunicode + 1):
        character = chr(code)
        if unicodedata.category(character) in ("Cn", "Cs"):
            continue
        assert bool(allowed.fullmatch(character)) == character.isprintable(), hex(code)
