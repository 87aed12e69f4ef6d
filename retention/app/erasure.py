"""Erasure on request (policies.md row 13): which rules an erasure request reaches, and the
request itself, checked before anything is planned."""

from __future__ import annotations

import re

from retention.app.trail_text import refuse_personal_data
from retention.config import Config, Rule
from retention.errors import UsageError
from retention.selection import ErasureRequest
from retention.wording import is_text

MAX_REFERENCE_LENGTH = 200


def erasure_rules(config: Config) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """Given a config, return the rules an erasure request reaches, in the order a run takes
    them (those with ``erase_by``, each cross-store rule just before its subjects' rule, and a
    rule whose ``erase_by`` goes through a join before the rules that erase the joined
    table), and the rules it does not reach (their records go with their own period).

    Example: with the shipped config, ``customer-files`` is reached (through
    ``customer-content``'s ``erase_by``) and ``backups-s3`` is not.
    """
    named = tuple(rule.name for rule in config.rules if rule.erase_by is not None)
    if not named:
        raise UsageError(
            "no rule has erase_by: say in each rule that holds personal data which column names "
            "the person (docs/config.md, erase_by)"
        )
    reached = _joined_rows_last(config.rules_named(named))
    names = {rule.name for rule in reached}
    return reached, tuple(rule for rule in config.rules if rule.name not in names)


StoreTable = tuple[str, str]  # a store's name, a table's


def _joined_rows_last(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """Given the rules of an erasure in config order, return them with each rule that finds
    the person through a join (``erase_by = "account.email"``) before every rule that deletes
    or anonymises rows of the joined table: taken after, it would find the person's account
    gone (or its e-mail masked), and keep their rows for ever, now nameless. Otherwise config
    order; rules that wait for each other (each reaching the other's table) keep it. A
    cross-store rule stays just before its subjects' rule."""
    units: list[tuple[Rule, ...]] = []
    for rule in rules:
        if units and _follows_objects(units[-1][-1]):
            units[-1] = (*units[-1], rule)
        else:
            units.append((rule,))
    ordered: list[tuple[Rule, ...]] = []
    while units:
        ready = next(
            (
                unit
                for unit in units
                if not any(_changes(unit) & _reaches(other) for other in units if other != unit)
            ),
            units[0],
        )
        units.remove(ready)
        ordered.append(ready)
    return tuple(rule for unit in ordered for rule in unit)


def _follows_objects(rule: Rule) -> bool:
    """Whether ``rule`` is a cross-store rule, followed by its subjects' rule."""
    return rule.objects is not None and rule.objects.subjects is not None


def _changes(unit: tuple[Rule, ...]) -> set[StoreTable]:
    """The tables whose rows the unit's SQL rules delete or anonymise: their own, and their
    children's at any depth."""
    changed: set[StoreTable] = set()
    for rule in unit:
        if rule.objects is not None:
            continue
        changed.add((rule.store, rule.table))
        level = list(rule.children)
        while level:
            child = level.pop()
            changed.add((rule.store, child.table))
            level.extend(child.children)
    return changed


def _reaches(unit: tuple[Rule, ...]) -> set[StoreTable]:
    """The tables through which the unit's SQL rules find the person (erase_by's join)."""
    reached: set[StoreTable] = set()
    for rule in unit:
        if rule.objects is None and rule.erase_by is not None and rule.erase_by.join:
            table = rule.join(rule.erase_by.join).table
            if table != rule.table:
                reached.add((rule.store, table))
    return reached


def erasure_request(subject: str, reference: str) -> ErasureRequest:
    """Given the subject and the operator's reference as typed, return the ErasureRequest, or
    raise UsageError (exit 2) for an empty subject, or a reference that is empty, too long, or
    holds personal data (the subject, an e-mail or IP address): the trail keeps it as written.

    Example: ``erasure_request(" alice@example.com\\n", "DSR-1").subject`` is
    ``"alice@example.com"``.
    """
    subject = erasure_subject(subject)
    reference = reference.strip()
    if not reference:
        raise UsageError("--request is empty: give your reference for the request (a ticket)")
    if len(reference) > MAX_REFERENCE_LENGTH:
        raise UsageError(f"--request is longer than {MAX_REFERENCE_LENGTH} characters")
    if _names(reference, subject) or not reference.isprintable():
        raise UsageError("--request names the subject or holds control characters: give a ticket")
    refuse_personal_data("--request", reference, "'DSR-2026-017'")
    return ErasureRequest(subject=subject, reference=reference)


def erasure_subject(text: str) -> str:
    """Given a subject as typed (or read from standard input), return it without surrounding
    blanks; UsageError (exit 2) when nothing is left, or when it is not UTF-8 text.

    Example: ``erasure_subject("alice@example.com\\n")`` is ``"alice@example.com"``.
    """
    subject = text.strip()
    if not subject:
        raise UsageError("--subject is empty: an erasure request names one person")
    if not is_text(subject):
        raise UsageError("--subject holds bytes that are not UTF-8: no record names such a person")
    return subject


def _names(reference: str, subject: str) -> bool:
    """Whether a reference spells the subject out: as one of its words ("customer 4242"), or
    anywhere when the subject is long enough not to be there by chance ("DSR-2026-17" does not
    name customer 7)."""
    return subject in re.split(r"\W+", reference) or (len(subject) >= 6 and subject in reference)
