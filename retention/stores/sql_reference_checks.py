"""Whether a delete rule accounts for every foreign key into the tables it deletes from (its
own, its children's, at any depth): what the database would otherwise do behind its back
(delete or rewrite rows unrecorded) or refuse (the batch fails, night after night)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from retention.config import Child, Rule
from retention.stores.sql_references import Reference, references_into

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

# Quoted text in where_sql, either reading of backslashes: a table named there is a value.
_QUOTED_TEXT = re.compile(r"'(?:[^'\\]|\\.|'')*'")


def check_references(store: SqlStore, rule: Rule, problem: Callable[[str, str], None]) -> None:
    """Given a delete rule whose schema checks passed, report (``problem(key, message)``) each
    foreign key into a table it deletes from that it does not account for.

    A key is accounted for when its table is listed among that table's children by that
    foreign key (its rows go first, recorded). A key that only refuses the delete (NO ACTION,
    RESTRICT) is also accounted for when the rule's ``where_sql`` reads its table (``FROM t``
    or ``JOIN t``): that is how a rule keeps the rows still referenced out, and where the
    condition misses one, the database still refuses the batch and nothing goes. A key that
    cascades or rewrites (SET NULL, SET DEFAULT) would act on what such a condition misses,
    unrecorded: only listing its table, or changing the key, accounts for it.
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
                if (reference.table, reference.columns) in named:
                    continue
                if reference.on_delete in ("no action", "restrict") and reads_table(
                    rule.where_sql, reference.table
                ):
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

    Example: for ``Reference("invoices", ("client_id",), "invoices_client_id_fkey", "no
    action")`` into ``clients``, the message starts ``'invoices' references 'clients'
    (client_id) with ON DELETE NO ACTION (constraint invoices_client_id_fkey): ...``.
    """
    columns = ", ".join(reference.columns)
    said = (
        f"{reference.table!r} references {table!r} ({columns}) with ON DELETE "
        f"{reference.on_delete.upper()} (constraint {reference.constraint})"
    )
    # A table cannot be its own child, and a child takes a one-column foreign key.
    listable = reference.table != table and len(reference.columns) == 1
    listing = f"list it in {children_path} (table, foreign_key)" if listable else ""
    if reference.on_delete == "cascade":
        return f"{said}: the database would delete its rows unrecorded; " + (
            f"{listing} or drop the cascade" if listable else "drop the cascade"
        )
    if reference.on_delete in ("set null", "set default"):
        return f"{said}: the database would rewrite its rows ({columns}) unrecorded; " + (
            f"{listing}, so that they go first, recorded, or change the key's ON DELETE"
            if listable
            else "change the key's ON DELETE"
        )
    keep_out = (
        f"keep the rows it references out with a where_sql that reads {reference.table} "
        f"(NOT EXISTS (SELECT 1 FROM {reference.table} WHERE ...))"
    )
    return (
        f"{said}: a row it still references cannot be deleted, and the batch holding one fails, "
        "at every run; "
        + (
            f"{listing}, so that its rows go first, recorded, or {keep_out}"
            if listable
            else keep_out
        )
    )


def reads_table(where_sql: str | None, table: str) -> bool:
    """Given a rule's where_sql and a table's name (as the catalog gives it: perhaps quoted,
    perhaps with its schema), return whether the condition reads that table, after ``FROM``
    or ``JOIN`` (with or without a schema, quoted or not; never inside a quoted value).

    Example: ``reads_table("NOT EXISTS (SELECT 1 FROM invoices i WHERE i.client_id =
    clients.id)", "invoices")`` returns True; ``reads_table("note = 'from invoices'",
    "invoices")`` returns False.
    """
    if not where_sql:
        return False
    name = table.rsplit(".", 1)[-1].strip('"`')
    unquoted = _QUOTED_TEXT.sub("''", where_sql)
    pattern = (
        r"\b(?:FROM|JOIN)\s+(?:[`\"]?\w+[`\"]?\s*\.\s*)?[`\"]?" + re.escape(name) + r"[`\"]?(?!\w)"
    )
    return re.search(pattern, unquoted, re.IGNORECASE) is not None
