"""The commented sample config, written from the schema (``retention config example``).

Every key of every table appears once: required keys with an example value, the others
commented out at their default (or, with no default, at an example value). The uncommented lines
are a config that loads; tests/test_config_schema.py checks both.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from retention.config.schema import (
    AuditTable,
    CheckinsTable,
    DaemonTable,
    FilesStoreTable,
    ObjectRule,
    S3StoreTable,
    SettingsTable,
    SqlStoreTable,
    StateTable,
    TableRule,
)

WIDTH = 96
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

HEADER = """\
#:schema ./retention.schema.json
# A sample retention config, written by `retention config example` (docs/config.md).
# The #:schema line above gives editors that read it (taplo, VS Code's Even Better TOML)
# completion and inline errors once the schema is beside this file:
#   retention config schema > retention.schema.json
# Keys that are commented out are optional: each shows its default, or an example value when
# it has none (or an empty one).
"""

# (table header, model, written active): the sample's tables in order. A rule on a bucket
# and the tables that need secrets or servers are shown commented out.
SECTIONS: tuple[tuple[str, type[BaseModel], bool], ...] = (
    ("[settings]", SettingsTable, True),
    ("[audit]", AuditTable, False),
    ("[state]", StateTable, False),
    ("[daemon]", DaemonTable, False),
    ("[checkins]", CheckinsTable, False),
    ("[stores.app]", SqlStoreTable, True),
    ("[stores.backups]", S3StoreTable, False),
    ("[stores.backup_folder]", FilesStoreTable, False),
    ("[[rules]]", TableRule, True),
    ("[[rules]]", ObjectRule, False),
)
# Values the sample needs to hang together (a rule on the bucket names the bucket's store).
OVERRIDES: dict[tuple[type[BaseModel], str], object] = {
    (ObjectRule, "name"): "backups",
    (ObjectRule, "store"): "backups",
    (ObjectRule, "period"): "7d",
}
# Optional keys written active all the same: a SQL store needs one of its three URL keys.
ACTIVE = {(SqlStoreTable, "url")}
# What every rule shares comes after what is particular to its kind.
RULE_TAIL = ("batch_size", "max_delete", "max_fraction", "match_all", "schedule", "jitter")


def config_example() -> str:
    """Return the commented sample config as TOML text.

    Example: ``config_example().splitlines()[0]`` is ``"#:schema ./retention.schema.json"``.
    """
    blocks = [HEADER.rstrip("\n")]
    for header, model, active in SECTIONS:
        lines = _comment(model.__doc__ or "")
        lines.append(header if active else f"# {header}")
        names = list(model.model_fields)
        if model in (TableRule, ObjectRule):
            names.sort(key=lambda name: name in RULE_TAIL)
        for name in names:
            field = model.model_fields[name]
            lines.extend(_key_lines(model, name, field, active))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _key_lines(model: type[BaseModel], name: str, field: FieldInfo, active: bool) -> list[str]:
    lines = _comment(field.description or "")
    if (model, name) in OVERRIDES:
        value = OVERRIDES[(model, name)]
    elif get_origin(field.annotation) is Literal and len(get_args(field.annotation)) == 1:
        value = get_args(field.annotation)[0]  # a store's kind
    elif not field.is_required() and field.default not in (None, "", [], {}):
        value = field.default
    elif field.examples:
        value = field.examples[0]
    else:
        raise ValueError(f"{model.__name__}.{name}: needs an example for the sample")
    assignment = f"{_key(name)} = {toml_value(value)}"
    written = active and (field.is_required() or (model, name) in ACTIVE)
    lines.append(assignment if written else f"# {assignment}")
    return lines


def _comment(text: str) -> list[str]:
    flat = " ".join(text.split())
    return (
        [f"# {line}" for line in textwrap.wrap(flat, WIDTH - 2, break_on_hyphens=False)]
        if flat
        else []
    )


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def toml_value(value: object) -> str:
    """Given a value of the sample, return it as TOML (inline tables and arrays for nesting).

    Example: ``toml_value({"on": {"contract_id": "id"}})`` is ``'{ on = { contract_id = "id" } }'``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string escapes as JSON does
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        pairs = ", ".join(f"{_key(str(key))} = {toml_value(item)}" for key, item in value.items())
        return "{ " + pairs + " }"
    if isinstance(value, BaseModel):
        return toml_value(value.model_dump(exclude_defaults=True))
    raise TypeError(f"no TOML for {type(value).__name__}")
