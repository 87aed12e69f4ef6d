"""Erasure on request (policies.md row 13): which rules an erasure request reaches, and the
request itself, checked before anything is planned."""

from __future__ import annotations

import re

from retention.app.trail_text import refuse_personal_data
from retention.config import Config, Rule
from retention.errors import UsageError
from retention.selection import ErasureRequest

MAX_REFERENCE_LENGTH = 200


def erasure_rules(config: Config) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """Given a config, return the rules an erasure request reaches, in the order a run takes
    them (those with ``erase_by``, each cross-store rule just before its subjects' rule), and
    the rules it does not reach (their records go with their own period).

    Example: with the shipped config, ``customer-files`` is reached (through
    ``customer-content``'s ``erase_by``) and ``backups-s3`` is not.
    """
    named = tuple(rule.name for rule in config.rules if rule.erase_by is not None)
    if not named:
        raise UsageError(
            "no rule has erase_by: say in each rule that holds personal data which column names "
            "the person (docs/config.md, erase_by)"
        )
    reached = config.rules_named(named)
    names = {rule.name for rule in reached}
    return reached, tuple(rule for rule in config.rules if rule.name not in names)


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
    blanks; UsageError (exit 2) when nothing is left.

    Example: ``erasure_subject("alice@example.com\\n")`` is ``"alice@example.com"``.
    """
    subject = text.strip()
    if not subject:
        raise UsageError("--subject is empty: an erasure request names one person")
    return subject


def _names(reference: str, subject: str) -> bool:
    """Whether a reference spells the subject out: as one of its words ("customer 4242"), or
    anywhere when the subject is long enough not to be there by chance ("DSR-2026-17" does not
    name customer 7)."""
    return subject in re.split(r"\W+", reference) or (len(subject) >= 6 and subject in reference)
