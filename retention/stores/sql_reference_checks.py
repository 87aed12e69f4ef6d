"""Whether a delete rule accounts for every foreign key into the tables it deletes from (its
own, its children's, at any depth): what the database would otherwise do behind its back
(delete or rewrite rows unrecorded) or refuse (the batch fails, night after night)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from retention.config import IDENTIFIER, Child, Rule
from retention.stores.sql_references import Reference, references_into

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

# Quoted text in where_sql, either reading of backslashes: a table named there is a value.
_QUOTED_TEXT = re.compile(r"'(?:[^'\\]|\\.|'')*'")

Report = Callable[[str, str], None]


def check_references(
    store: SqlStore, rule: Rule, problem: Report, caution: Report | None = None
) -> None:
    """Given a delete rule whose schema checks passed, report (``problem(key, message)``) each
    foreign key into a table it deletes from that it does not account for; and, for a rule
    with ``erase_by``, warn (``caution(key, message)``) of each key accounted for only by its
    where_sql, which an erasure ignores.

    A key is accounted for when its table is listed among that table's children by that
    foreign key (its rows go first, recorded): the very table, the one the child's name
    reaches from the store (a same-named table in another schema or database is another
    table). A key that only refuses the delete (NO ACTION, RESTRICT) is also accounted for
    when the rule's ``where_sql`` reads its table (``FROM t`` or ``JOIN t``): that is how a
    rule keeps the rows still referenced out, and where the condition misses one, the
    database still refuses the batch and nothing goes. A key that cascades or rewrites (SET
    NULL, SET DEFAULT) would act on what such a condition misses, unrecorded: only listing its
    table, or changing the key, accounts for it.
    """
    listed: list[tuple[str, str, tuple[Child, ...], str]] = [
        (rule.table, "table", rule.children, "children")
    ]
    quote = store.engine.dialect.identifier_preparer.quote
    with store.reachable(), store.engine.connect() as connection:
        while listed:
            table, path, children, children_path = listed.pop(0)
            named = {(child.table, (child.foreign_key,)) for child in children}
            for reference in references_into(connection, table, quote(table)):
                if reference.local and (reference.name, reference.columns) in named:
                    continue
                if reference.on_delete in ("no action", "restrict") and reads_table(
                    rule.where_sql, reference
                ):
                    if rule.erase_by is not None and caution is not None:
                        caution(path, kept_out_by_where_sql(reference, table, children_path))
                    continue
                problem(path, unaccounted(reference, table, children_path))
            listed += [
                (
                    child.table,
                    f"{children_path}[{index}].table",
                    child.children,
                    f"{children_path}[{index}].children",
                )
                for index, child in enumerate(children)
            ]


def unaccounted(reference: Reference, table: str, children_path: str) -> str:
    """Given a foreign key into ``table`` that a rule does not account for, return what it
    would do and what to change (the key's columns and names, never a value).

    Example: for a NO ACTION key ``invoices_client_id_fkey`` of ``invoices`` (client_id) into
    ``clients``, the message starts ``'invoices' references 'clients' (client_id) with ON
    DELETE NO ACTION (constraint invoices_client_id_fkey): ...``.
    """
    said = _said(reference, table) + _consequence(reference)
    unlistable = why_unlistable(reference, table)
    listing = f"list it in {children_path} (table, foreign_key)"
    cannot = f" ({reference.table} cannot be listed in {children_path}: {unlistable})"
    if reference.on_delete == "cascade":
        return f"{said}; " + (
            f"{listing} or drop the cascade" if unlistable is None else f"drop the cascade{cannot}"
        )
    if reference.on_delete == "unknown":
        return (
            f"{said}; grant the store's user a privilege on database {reference.schema} as a "
            f"whole (GRANT REFERENCES ON {reference.schema}.* will do) so that its ON DELETE "
            "can be read" + ("" if unlistable is None else cannot)
        )
    if reference.on_delete in ("set null", "set default"):
        return f"{said}; " + (
            f"{listing}, so that they go first, recorded, or change the key's ON DELETE"
            if unlistable is None
            else f"change the key's ON DELETE{cannot}"
        )
    keep_out = (
        f"keep the rows it references out with a where_sql that reads {reference.table} "
        f"(NOT EXISTS (SELECT 1 FROM {reference.table} WHERE ...))"
    )
    return f"{said}; " + (
        f"{listing}, so that its rows go first, recorded, or {keep_out}"
        if unlistable is None
        else keep_out + cannot
    )


def _consequence(reference: Reference) -> str:
    """What deleting a row the key references does, unless the rule accounts for the key."""
    if not reference.enforced:
        return (
            ", which the store's connections do not enforce (SQLite): deleting a row it "
            "references would leave its rows pointing at a row that is gone, where an "
            "application that enforces it expects "
            + _EXPECTED.get(reference.on_delete, "the delete refused")
        )
    if reference.on_delete == "cascade":
        return ": the database would delete its rows unrecorded"
    if reference.on_delete == "unknown":
        return ": it may delete or rewrite rows unrecorded"
    if reference.on_delete in ("set null", "set default"):
        return f": the database would rewrite its rows ({', '.join(reference.columns)}) unrecorded"
    return (
        ": a row it still references cannot be deleted, and the batch holding one fails, at "
        "every run"
    )


# What an application that enforces a key expects of a delete, by the key's ON DELETE.
_EXPECTED = {
    "cascade": "them deleted along",
    "set null": "them rewritten",
    "set default": "them rewritten",
}


def kept_out_by_where_sql(reference: Reference, table: str, children_path: str) -> str:
    """Given a refusing foreign key into ``table`` that only an erasing rule's where_sql
    accounts for, return why an erasure can fail on it and what to change (no value).

    Example: for ``letters_person_fk`` of ``letters`` (person) into ``people``: ``'letters'
    references 'people' (person) with ON DELETE NO ACTION (constraint letters_person_fk):
    only where_sql keeps the rows it references out, and an erasure (erase_by) ignores it:
    ...``.
    """
    unlistable = why_unlistable(reference, table)
    remedy = (
        f"list it in {children_path} (table, foreign_key), so that its rows go first, recorded"
        if unlistable is None
        else f"such an erasure waits until those rows go ({reference.table} cannot be listed "
        f"in {children_path}: {unlistable})"
    )
    outcome = (
        "fails, rolled back"
        if reference.enforced
        else "leaves its rows pointing at a row that is gone (the store's connections do not "
        "enforce the key: SQLite)"
    )
    return (
        f"{_said(reference, table)}: only where_sql keeps the rows it references out, and an "
        "erasure (erase_by) ignores it: the erasure of a subject whose row it still references "
        f"{outcome}; {remedy}"
    )


def why_unlistable(reference: Reference, table: str) -> str | None:
    """Given a foreign key into ``table``, return why its table cannot be one of that table's
    children (None: it can). A child is named as the rule's tables are, a plain identifier
    that the store reaches unqualified, by a one-column key.

    Example: for a key of ``archive.orders`` (another database) into ``clients``: ``"a
    child is a table the store reaches by its name alone (in the store's own database; on
    PostgreSQL, the first of that name on its search_path), and archive.orders is not one"``.
    """
    if reference.local and reference.name == table:
        return "a table cannot be its own child"
    if not reference.local:
        return (
            "a child is a table the store reaches by its name alone (in the store's own "
            "database; on PostgreSQL, the first of that name on its search_path), and "
            f"{reference.table} is not one"
        )
    if not IDENTIFIER.fullmatch(reference.name):
        return "its name is not a plain identifier (letters, digits, _), as a child's must be"
    if len(reference.columns) != 1:
        return "a child takes a one-column foreign key"
    return None


def _said(reference: Reference, table: str) -> str:
    action = (
        "an ON DELETE the store's user cannot read"
        if reference.on_delete == "unknown"
        else f"ON DELETE {reference.on_delete.upper()}"
    )
    return (
        f"{reference.table!r} references {table!r} ({', '.join(reference.columns)}) with "
        f"{action} (constraint {reference.constraint})"
    )


def reads_table(where_sql: str | None, reference: Reference) -> bool:
    """Given a rule's where_sql and a foreign key, return whether the condition reads the key's
    table after ``FROM`` or ``JOIN`` (quoted or not; never inside a quoted value): by its name
    alone where the store reaches it so, or else qualified with its schema (its database).

    Example: with ``invoices`` in the store's schema ``public``, ``reads_table("NOT EXISTS
    (SELECT 1 FROM invoices i WHERE i.client_id = clients.id)", reference)`` returns True,
    as with ``FROM public.invoices``, but not with ``FROM archive.invoices``;
    ``reads_table("note = 'from invoices'", reference)`` returns False.
    """
    if not where_sql:
        return False
    unquoted = _QUOTED_TEXT.sub("''", where_sql)
    qualifier = _identifier(reference.schema) + r"\s*\.\s*"
    if reference.local:
        qualifier = f"(?:{qualifier})?"
    pattern = r"\b(?i:FROM|JOIN)\s+" + qualifier + _identifier(reference.name) + r"(?![\w`\"])"
    return re.search(pattern, unquoted) is not None


def _identifier(name: str) -> str:
    """A pattern for ``name`` as SQL may write it: between double or back quotes, as it is, or
    bare (a plain name only, in any case)."""
    quoted = [
        '"' + re.escape(name.replace('"', '""')) + '"',
        "`" + re.escape(name.replace("`", "``")) + "`",
    ]
    if IDENTIFIER.fullmatch(name):
        quoted.append("(?i:" + re.escape(name) + ")")
    return "(?:" + "|".join(quoted) + ")"
