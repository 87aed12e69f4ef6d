"""A config file checked against its declaration (retention/config/schema.py), with
pydantic-core: every table, key, type, range, enumeration and rule between keys, every error at
once, each with its key path (``rules[2].period``) and in words (``must be a whole number from
1 to 50000, not 0``).

The declaration is read as compiled by ``python -m retention.config.compile``
(retention/config/compiled.json), so that this costs pydantic-core's import (about 0.03 s) and
not pydantic's (about 0.2 s with the models built). What a schema cannot see (a rule's store,
joins, grammars of periods, conditions and schedules, time zones, the file system) is left to the
readers, which get the document with every value the schema refused taken out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.config.reader import cut_short
from retention.errors import ConfigIssue

if TYPE_CHECKING:
    from pydantic_core import SchemaValidator

COMPILED = Path(__file__).with_name("compiled.json")
# Errors that say a value is not of the type a union's alternative takes at all.
_TYPE_ERRORS = frozenset(
    {
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "list_type",
        "dict_type",
        "model_attributes_type",
        "model_type",
    }
)
_CONTAINERS = frozenset({"typed-dict", "list", "dict"})

Location = tuple[str | int, ...]


def validate_document(document: dict[str, Any]) -> list[ConfigIssue]:
    """Given a parsed TOML document, return every error the declaration finds in it, and take
    each refused value out of it (a key, a whole table, or a rule left as None), so that the
    readers see only values of the declared types. Rules are checked as SQL rules, or as object
    rules when their store is a declared bucket or folder.

    Example: ``validate_document({"settings": {"batch_size": 0}})`` returns ``[ConfigIssue(
    "settings.batch_size", "must be a whole number from 1 to 50000, not 0")]`` and leaves
    ``{"settings": {}}``.
    """
    # A NUL character means nothing in any value, and file paths and URLs holding one fail deep
    # in the OS or a driver: refused everywhere, and taken out once the declaration has seen
    # the document whole (else it would call the key missing too).
    with_nul = list(_nul_errors(document, ()))
    found = list(_errors("document", document, ()))
    found += _choice_errors(_schema("document"), document, ())
    _prune(document, found)
    rules = document.get("rules")
    stores = document.get("stores")
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        name = rule.get("store")
        store = stores.get(name) if isinstance(stores, dict) and isinstance(name, str) else None
        kind = store.get("kind") if isinstance(store, dict) else None
        which = "object_rule" if kind in ("s3", "files") else "sql_rule"
        errors = list(_errors(which, rule, ("rules", index), store_kind=kind))
        _prune(document, errors)
        found += errors
    _prune(document, with_nul)
    nul_paths = {error.path for error in with_nul}
    found = with_nul + [error for error in found if error.path not in nul_paths]
    return [ConfigIssue(error.path, error.message) for error in found]


@dataclass(frozen=True)
class _Error:
    path: str
    message: str
    prune: Location | None  # where the refused value is; None when a key is missing


@cache
def _compiled() -> dict[str, Any]:
    return json.loads(COMPILED.read_text(encoding="utf-8"), object_hook=_pairs_as_tuples)  # type: ignore[no-any-return]


def _pairs_as_tuples(node: dict[str, Any]) -> dict[str, Any]:
    if node.get("type") == "union":
        node["choices"] = [tuple(choice) for choice in node["choices"]]
    return node


def _schema(name: str) -> dict[str, Any]:
    return _compiled()[name]  # type: ignore[no-any-return]


@cache
def _validator(name: str) -> SchemaValidator:
    from pydantic_core import SchemaError, SchemaValidator  # not for `retention --help`

    try:
        return SchemaValidator(_schema(name))
    except SchemaError:  # a pydantic-core that reads the compiled schemas otherwise
        from retention.config.compile import compiled_schemas

        schemas = json.loads(json.dumps(compiled_schemas()), object_hook=_pairs_as_tuples)
        return SchemaValidator(schemas[name])


def _errors(
    name: str, value: dict[str, Any], prefix: Location, *, store_kind: object = None
) -> Iterator[_Error]:
    from pydantic_core import ValidationError

    try:
        _validator(name).validate_python(value)
    except ValidationError as error:
        located = [_locate(_schema(name), detail) for detail in error.errors()]
        for place in _one_alternative_each(located):
            yield _worded(place, prefix, store_kind)


@dataclass
class _Place:
    """Where an error is: its data path, the schema nodes down to it, the unions on the way."""

    detail: Any
    parts: list[str | int]
    nodes: list[dict[str, Any]]
    unions: list[tuple[int, int, int]]  # (len(parts), len(nodes), alternative) at each union
    unknown_key: bool = False


def _locate(schema: dict[str, Any], detail: Any) -> _Place:
    definitions: dict[str, Any] = {}
    place = _Place(detail, [], [], [])
    node: dict[str, Any] | None = schema
    location = list(detail["loc"])
    while node is not None:
        while True:  # through wrappers, keeping each (an Expect may sit on any)
            place.nodes.append(node)
            kind = node["type"]
            if kind == "definitions":
                definitions.update({item["ref"]: item for item in node["definitions"]})
                node = node["schema"]
            elif kind == "definition-ref":
                node = definitions[node["schema_ref"]]
            elif kind in ("default", "nullable"):
                node = node["schema"]
            else:
                break
        if not location:
            break
        part = location.pop(0)
        kind = node["type"]
        if kind == "typed-dict":
            place.parts.append(part)
            field = node["fields"].get(part)
            if field is None:
                place.unknown_key = True
                break
            node = field["schema"]
        elif kind == "list":
            place.parts.append(part)
            node = node["items_schema"]
        elif kind == "dict":
            place.parts.append(part)
            if location and location[0] == "[key]":
                location.pop(0)
                node = node["keys_schema"]
            else:
                node = node["values_schema"]
        elif kind == "union":
            alternative = int(part)
            place.unions.append((len(place.parts), len(place.nodes), alternative))
            node = node["choices"][alternative][0]
        elif kind == "tagged-union":
            node = node["choices"][part]
        else:  # a location deeper than the schema: stop at what is known
            break
    return place


def _one_alternative_each(places: list[_Place]) -> Iterator[_Place]:
    """A value of a union gets the errors of the alternative its type fits (a list's items for
    a list), or one error of the union itself when it fits none."""
    seen: set[tuple[str | int, ...]] = set()
    for place in places:
        if not place.unions:
            yield place
            continue
        depth, node_depth, _ = place.unions[0]
        key = tuple(place.parts[:depth])
        if key in seen:
            continue
        seen.add(key)
        group = [other for other in places if other.unions and tuple(other.parts[:depth]) == key]
        fitting = {other.unions[0][2] for other in group} - {
            other.unions[0][2]
            for other in group
            if len(other.parts) == depth and other.detail["type"] in _TYPE_ERRORS
        }
        if len(fitting) == 1:
            yield from (other for other in group if other.unions[0][2] in fitting)
        else:
            union_detail = {**place.detail, "type": "union_type"}
            yield _Place(union_detail, place.parts[:depth], place.nodes[:node_depth], [])


def _worded(place: _Place, prefix: Location, store_kind: object) -> _Error:
    detail = place.detail
    kind, value, context = detail["type"], detail.get("input"), detail.get("ctx") or {}
    parts = [*prefix, *place.parts]
    node = place.nodes[-1]
    expect = _expect(place.nodes)
    prune: Location | None = tuple(parts)
    if place.unknown_key:
        known = ", ".join(sorted(node["fields"]))
        if store_kind in ("s3", "files"):
            message = f"not for rules on {store_kind!r} stores (known here: {known})"
        else:
            message = f"unknown key (known here: {known})"
    elif kind == "missing":
        message = "missing" + (f" {expect['missing']}" if "missing" in expect else "")
        prune = None
    elif kind in ("union_tag_not_found", "union_tag_invalid"):
        parts.append(str(context.get("discriminator", "kind")).strip("'\""))
        if kind == "union_tag_invalid":
            message = expect["mismatch"].replace("{value}", _shown(context.get("tag")))
        else:
            message = "missing " + expect.get("missing", "")
    elif kind == "string_pattern_mismatch" and isinstance(value, str) and not value.strip():
        message = f"must be a non-empty string, not {value!r}"
    elif (kind == "string_pattern_mismatch" and "mismatch" in expect) or (
        kind == "literal_error" and "mismatch" in expect
    ):
        message = expect["mismatch"].replace("{value}", _shown(value))
    elif kind == "literal_error":
        message = f"must be {context['expected']}, not {_shown(value)}"
    else:
        message = f"must be {expect.get('what') or _what(node)}, not {_shown(value)}"
    return _Error(_dotted(parts), message.strip(), prune)


def _expect(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """The words of the nearest Expect above the error, within the value the error is about."""
    for depth, node in enumerate(reversed(nodes)):
        if depth > 0 and node["type"] in _CONTAINERS:
            break
        expect = node.get("metadata", {}).get("expect")
        if expect is not None:
            return expect  # type: ignore[no-any-return]
    return {}


def _what(node: dict[str, Any]) -> str:
    kind = node["type"]
    if kind == "int":
        low, high = node.get("ge"), node.get("le")
        if low is not None and high is not None:
            return f"a whole number from {low} to {high}"
        return "a whole number"
    if kind == "float":
        return f"a fraction above {node.get('gt', 0)} and at most {node.get('le', 1)}"
    if kind == "bool":
        return "true or false"
    if kind == "str":
        return "a string"
    if kind == "literal":
        return " or ".join(repr(choice) for choice in node["expected"])
    if kind == "list":
        return "an array"
    return "a table"


def _shown(value: object) -> str:
    """A value as an error shows it: its repr, cut short (a 5,000-digit period is not shown)."""
    if isinstance(value, datetime | date | time):  # as TOML writes it
        return value.isoformat()
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's digit limit for str()
        return "a number too long to show"
    return cut_short(text)


def _dotted(parts: list[str | int] | Location) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _choice_errors(schema: dict[str, Any], value: Any, parts: Location) -> Iterator[_Error]:
    """The rules between the keys of one table (``Choice`` in the declaration)."""
    while schema["type"] in ("definitions", "default", "nullable"):
        schema = schema["schema"]
    kind = schema["type"]
    if kind == "tagged-union" and isinstance(value, dict):
        tag = value.get("kind")
        chosen = schema["choices"].get(tag) if isinstance(tag, str) else None
        if chosen is not None:
            yield from _choice_errors(chosen, value, parts)
    elif kind == "dict" and isinstance(value, dict):
        for key, item in value.items():
            yield from _choice_errors(schema["values_schema"], item, (*parts, key))
    elif kind == "typed-dict" and isinstance(value, dict):
        for choice in schema.get("metadata", {}).get("choices", []):
            error = _choice_error(choice, value, parts)
            if error is not None:
                yield error
        for key, item in value.items():
            field = schema["fields"].get(key)
            if field is not None and key != "rules":
                yield from _choice_errors(field["schema"], item, (*parts, key))


def _choice_error(choice: dict[str, Any], table: dict[str, Any], parts: Location) -> _Error | None:
    keys: list[str] = choice["keys"]
    given = sum(key in table for key in keys)
    listed = ", ".join(keys[:-1]) + f" or {keys[-1]}"
    if choice["kind"] == "not_both" and given > 1:
        message = f"give {keys[0]} or {keys[1]}, not both"
    elif choice["kind"] == "at_most_one" and given > 1:
        message = f"give at most one of {listed}"
    elif choice["kind"] == "exactly_one" and given != 1:
        message = f"give exactly one of {listed}"
    else:
        return None
    if choice.get("hint"):
        message += f" ({choice['hint']})"
    where = (*parts, choice["at"]) if choice.get("at") else parts
    return _Error(_dotted(where), message, None)


def _nul_errors(value: Any, parts: Location) -> Iterator[_Error]:
    if isinstance(value, str):
        if "\x00" in value:
            yield _Error(_dotted(parts), "a NUL character has no place in a config value", parts)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nul_errors(item, (*parts, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_errors(item, (*parts, index))


def _prune(document: dict[str, Any], errors: list[_Error]) -> None:
    """Take out each refused value: the key of the nearest table that holds it (a rule that is
    no table becomes None, so that the other rules keep their index)."""
    for error in errors:
        if error.prune is None:
            continue
        if len(error.prune) == 2 and error.prune[0] == "rules":
            rules = document.get("rules")
            index = error.prune[1]
            if isinstance(rules, list) and isinstance(index, int) and index < len(rules):
                rules[index] = None
            continue
        container: Any = document
        holder: tuple[dict[str, Any], str] | None = None
        for part in error.prune:
            if isinstance(container, dict) and isinstance(part, str):
                holder = (container, part)
                container = container.get(part)
            elif isinstance(container, list) and isinstance(part, int) and part < len(container):
                container = container[part]
            else:
                break
        if holder is not None:
            holder[0].pop(holder[1], None)
