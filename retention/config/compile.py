"""The declaration (retention/config/schema.py) compiled: for validation, pydantic-core schemas
that name no Python class, so that validating a config needs pydantic-core alone; for editors,
the JSON Schema (``retention config schema``).

``python -m retention.config.compile`` rewrites retention/config/compiled.json; a test fails when
that file is not what this module makes of the declaration. Each pydantic model becomes a
pydantic-core ``typed-dict`` (unknown keys forbidden, strict types) that keeps, in its metadata,
the words of each ``Expect`` and the ``Choice`` rules of its table; each alternative of a union
is labelled by its position, so that an error's location says which one it is in.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from retention.config.schema import ConfigFile, ObjectRule, TableRule

TARGET = Path(__file__).with_name("compiled.json")


def compiled_schemas() -> dict[str, Any]:
    """Return the pydantic-core schemas of a config file: ``document`` (its tables, each rule only
    a table), and ``sql_rule`` and ``object_rule``, the two kinds of rule (which one a rule is
    depends on the kind of its store, which a schema cannot see).

    Example: ``compiled_schemas()["sql_rule"]["type"]`` is ``"definitions"`` (for nested
    children).
    """
    document = _class_free(ConfigFile.__pydantic_core_schema__)
    _rules_as_tables(document)
    return {
        "document": document,
        "sql_rule": _class_free(TableRule.__pydantic_core_schema__),
        "object_rule": _class_free(ObjectRule.__pydantic_core_schema__),
    }


def _rules_as_tables(node: Any) -> None:
    """Make ``rules`` a list of tables, each checked on its own once its store is known."""
    if isinstance(node, dict):
        if node.get("type") == "typed-dict" and node.get("cls_name") == "ConfigFile":
            rules = node["fields"]["rules"]["schema"]["schema"]
            assert rules["type"] == "list", rules
            rules["items_schema"] = {"type": "dict", "strict": True}
            return
        if node.get("type") == "definitions":  # those of the rules only
            node["definitions"] = [d for d in node["definitions"] if d["cls_name"] != "ChildTable"]
        for value in node.values():
            _rules_as_tables(value)
    elif isinstance(node, list):
        for value in node:
            _rules_as_tables(value)


def _class_free(node: Any) -> Any:
    if isinstance(node, list | tuple):
        return [_class_free(item) for item in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "model":
        return _typed_dict(node)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "metadata":
            if "expect" in value:
                result["metadata"] = {"expect": value["expect"]}
        elif key in ("ref", "schema_ref"):
            result[key] = _name(value)
        elif key == "choices" and kind == "union":
            result[key] = [(_class_free(choice), str(index)) for index, choice in enumerate(value)]
        elif key == "choices":  # a tagged union: by tag
            result[key] = {tag: _class_free(choice) for tag, choice in value.items()}
        else:
            result[key] = _class_free(value)
    return result


def _typed_dict(node: dict[str, Any]) -> dict[str, Any]:
    model: type[BaseModel] = node["cls"]
    fields = {
        name: {
            "type": "typed-dict-field",
            "schema": _class_free(field["schema"]),
            "required": field["schema"]["type"] != "default",
        }
        for name, field in node["schema"]["fields"].items()
    }
    result: dict[str, Any] = {
        "type": "typed-dict",
        "cls_name": model.__name__,
        "fields": fields,
        # Strict types (no "1" for 1, no true for 1) and no unknown key, as the model says.
        "config": {key: value for key, value in node["config"].items() if key != "title"},
    }
    if "ref" in node:
        result["ref"] = _name(node["ref"])
    choices = getattr(model, "choices", ())
    if choices:
        result["metadata"] = {"choices": [asdict(choice) for choice in choices]}
    return result


# Draft 7, and within it what Draft 4 also reads: taplo (and so VS Code's Even Better TOML)
# implements Draft 4, where `const` and a numeric `exclusiveMinimum` do not exist yet.
DRAFT = "http://json-schema.org/draft-07/schema#"


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of a config file, as editors want it: TOML has no null, so "or
    nothing" is an absent key rather than a null value, and every description is one line.

    Example: ``json_schema()["properties"]["rules"]["type"]`` is ``"array"``.
    """
    schema = ConfigFile.model_json_schema(ref_template="#/definitions/{model}")
    schema["definitions"] = schema.pop("$defs")
    return {"$schema": DRAFT, **_for_toml(schema)}


def _for_toml(node: Any, *, in_properties: bool = False) -> Any:
    if isinstance(node, list):
        return [_for_toml(item) for item in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # the keys here are names, not schema keywords
        return {name: _for_toml(value) for name, value in node.items()}
    result: dict[str, Any] = {}
    for keyword, value in node.items():
        if keyword == "anyOf":
            branches = [branch for branch in value if branch != {"type": "null"}]
            if len(branches) == 1:
                result.update(_for_toml(branches[0]))
                continue
            value = branches
        if (keyword == "default" and value is None) or keyword == "discriminator":
            continue
        if keyword == "title" and "properties" not in node:
            continue  # a property's title is its name again
        if keyword == "const":
            keyword, value = "enum", [value]
        if keyword == "exclusiveMinimum":
            result["minimum"] = value
            keyword, value = "not", {"enum": [value]}
        if keyword == "description":
            value = " ".join(value.split())
        result[keyword] = _for_toml(
            value, in_properties=keyword in ("properties", "definitions", "patternProperties")
        )
    if "patternProperties" in result:
        # Names that match no pattern (a store called "x-y") are errors, as for pydantic.
        result.setdefault("additionalProperties", False)
    return result


def _name(reference: str) -> str:
    """pydantic's references end in an id() that changes from run to run: keep the class name."""
    return reference.split(":")[0].rsplit(".", 1)[-1]


def compiled_text() -> str:
    """Return the text of retention/config/compiled.json (a union's alternatives are pairs of
    a schema and its label, which JSON writes as lists and pydantic-core reads as tuples)."""
    return json.dumps(compiled_schemas(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    TARGET.write_text(compiled_text())
    sys.stdout.write(f"wrote {TARGET}\n")
