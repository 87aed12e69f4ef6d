"""Words and rules that the declaration (retention/config/schema.py) gives its types and tables,
for the errors of validation (retention/config/validation.py) and for editors' JSON Schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, GetCoreSchemaHandler
from pydantic_core import CoreSchema


@dataclass(frozen=True)
class Expect:
    """What a value must be, in words, for the errors of validation: ``what`` ends "must be
    ..., not VALUE"; ``mismatch`` (with ``{value}``) words a value of the right type that its
    pattern refuses; ``missing`` follows "missing" for a required key. Kept in the value's
    pydantic-core schema (its metadata), where pydantic itself ignores it."""

    what: str
    mismatch: str | None = None
    missing: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = handler(source)
        words = {key: value for key, value in vars(self).items() if value is not None}
        metadata: dict[str, Any] = dict(schema.get("metadata") or {})
        metadata["expect"] = words
        schema["metadata"] = metadata  # type: ignore[index]  # a dict: every CoreSchema is
        return schema


@dataclass(frozen=True)
class Choice:
    """A rule between the keys of one table that a schema can say (and Draft 4 reads), so that
    editors flag it too: ``not_both`` of two keys, ``at_most_one`` or ``exactly_one`` of several.
    ``at`` is where the error is reported: the table ("") or one of its keys."""

    kind: Literal["not_both", "at_most_one", "exactly_one"]
    keys: tuple[str, ...]
    at: str = ""
    hint: str = ""

    def json_schema(self) -> dict[str, Any]:
        if self.kind == "exactly_one":
            return {"oneOf": [{"required": [key]} for key in self.keys]}
        if self.kind == "not_both":
            return {"not": {"required": list(self.keys)}}
        pairs = [[a, b] for index, a in enumerate(self.keys) for b in self.keys[index + 1 :]]
        return {"not": {"anyOf": [{"required": pair} for pair in pairs]}}


def choices_config(*choices: Choice) -> ConfigDict:
    if len(choices) == 1:
        return ConfigDict(json_schema_extra=choices[0].json_schema())
    return ConfigDict(json_schema_extra={"allOf": [c.json_schema() for c in choices]})
