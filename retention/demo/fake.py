"""Reproducible fake values for the demo's rows: people, companies, moments around ``as_of``
(naive UTC), and the boundary moments whose records expire one day either side of it."""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from retention.demo.schema import (
    DEMO_TABLES,
)
from retention.rules import parse_period

PARIS = ZoneInfo("Europe/Paris")
_HISTORY = relativedelta(years=7)

# The periods of config/retention.toml, by rule name.
_CUSTOMER_CONTENT = parse_period("90d").as_relativedelta()
_CONNECTION_LOGS = parse_period("1y").as_relativedelta()
_IMMEDIATE = parse_period("0d").as_relativedelta()
_CAMPAIGN_DEFAULT = parse_period("10y").as_relativedelta()
_CLIENTS = parse_period("5y").as_relativedelta()
_PARTNERS_AND_PROSPECTS = parse_period("3y").as_relativedelta()
_QUOTE_REQUESTS = parse_period("1y").as_relativedelta()
_JOB_APPLICANTS = parse_period("2y").as_relativedelta()
# What clients asked for instead of the default 10 years (campaigns.retention_period).
_CLIENT_CHOSEN_PERIODS = ("1y", "18mo", "3y", "5y")

_FIRST_NAMES = (
    "Camille", "Léa", "Manon", "Chloé", "Emma", "Inès", "Jade", "Louise", "Zoé", "Hélène",
    "Élodie", "Céline", "Nathalie", "Isabelle", "Sophie", "Julie", "Margaux", "Anaïs", "Lucas",
    "Hugo", "Louis", "Gabriel", "Arthur", "Jules", "Théo", "Raphaël", "Nathan", "Mathis",
    "Thomas", "Nicolas", "Julien", "Antoine", "Maxime", "Baptiste", "François", "Jérôme",
    "Sébastien", "Stéphane", "Benoît", "Jean-Pierre", "Marie-Claire", "Gaëlle",
)  # fmt: skip
_LAST_NAMES = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert", "Bonnet",
    "Legrand", "Garnier", "Faure", "Rousseau", "Blanc", "Guérin", "Muller", "Henry", "Perrin",
    "Morin", "Mathieu", "Clément", "Gauthier", "Fontaine", "Chevalier", "Robin", "Le Gall",
    "N'Diaye", "Da Silva",
)  # fmt: skip
_COMPANY_SUFFIXES = (
    "Conseil", "Informatique", "Logistique", "Distribution", "& Fils", "et Associés", "Services",
    "Imprimerie", "Traiteur",
)  # fmt: skip
_FILENAMES = (
    "contrat-hebergement.pdf", "export-clients.csv", "sauvegarde-base.sql.gz", "logo.png",
    "site-vitrine.tar.gz", "factures.zip", "rapport-annuel.pdf", "catalogue.xlsx",
)  # fmt: skip
_SUBJECTS = (
    "Nos nouveautés du mois", "Offre spéciale : -20 % ce week-end", "Votre lettre d'information",
    "Invitation : portes ouvertes", "Dernier rappel avant la fin des soldes",
    "Découvrez notre nouvelle collection", "Merci pour votre fidélité", "Enquête de satisfaction",
)  # fmt: skip
_CLIENT_NOTES = (
    "Préfère être contacté par e-mail.", "Demande une facture papier.",
    "Client de l'agence de Lyon.", "Rappeler après 18 h.", "Paiement à 30 jours fin de mois.",
)  # fmt: skip
_CHANNELS = ("email", "sms", "courrier", "telephone")
_ANONYMISED_NAME = "Client anonymisé"
# One person in every table that names people, with nothing due by age: the one the docs erase.
DEMO_ERASURE_SUBJECT = "camille.dupont.demo@example.com"

Row = dict[str, Any]
_Clock = TypeVar("_Clock", date, datetime)


# --- Fake people and values ----------------------------------------------------------------------


@dataclass
class _Fake:
    """Random but reproducible values around ``as_of``; datetimes are naive UTC, whole seconds."""

    rng: random.Random
    as_of: datetime
    now: datetime = field(init=False)
    history_start: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.now = _naive_utc(self.as_of).replace(microsecond=0)
        self.history_start = self.now - _HISTORY

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def count(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def between(self, start: datetime, end: datetime) -> datetime:
        seconds = max(0, int((end - start).total_seconds()))
        return start + timedelta(seconds=self.rng.randint(0, seconds))

    def days_ago(self, most: int, least: int = 0) -> datetime:
        return self.between(self.now - timedelta(days=most), self.now - timedelta(days=least))

    def since(self, start: datetime, end: datetime | None = None) -> datetime:
        """A moment after ``start`` and before ``end`` (default: now), never in the future."""
        return self.between(start, min(end or self.now, self.now))

    def person(self) -> tuple[str, str]:
        first, last = self.rng.choice(_FIRST_NAMES), self.rng.choice(_LAST_NAMES)
        number = str(self.rng.randint(1, 99)) if self.chance(0.2) else ""
        domain = self.rng.choice(("example.fr", "example.fr", "example.com"))
        return f"{first} {last}", f"{_ascii(first)}.{_ascii(last)}{number}@{domain}"

    def ip(self) -> str:
        if self.chance(0.15):
            groups = (self.rng.randint(0, 0xFFFF) for _ in range(3))
            return "2001:db8:{:x}:{:x}::{:x}".format(*groups)
        network = self.rng.choice(("192.0.2", "198.51.100", "203.0.113"))
        return f"{network}.{self.rng.randint(1, 254)}"

    def phone(self) -> str:
        pairs = " ".join(f"{self.rng.randint(0, 99):02d}" for _ in range(4))
        return f"+33 6 {pairs}"


def _ascii(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return plain.lower().replace(" ", "").replace("'", "")


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


# --- Boundary records ----------------------------------------------------------------------------


def _walk(
    first: _Clock, expiry_of: Callable[[_Clock], _Clock], target: _Clock, *, due: bool
) -> _Clock:
    """From ``first``, step away from the cutoff until the expiry is on the record's side of it.

    ``first + period`` hits ``target`` exactly unless month-end clamping (a 29 February, a 31st)
    or a DST gap makes the target unreachable; then the record lands as close as it can.
    """
    unit = timedelta(hours=1) if isinstance(first, datetime) else timedelta(days=1)
    step = -unit if due else unit
    clock = first
    while (expiry_of(clock) > target) if due else (expiry_of(clock) < target):
        clock += step
    return clock


def _boundaries(as_of: datetime, period: relativedelta) -> Iterator[datetime]:
    """Yield two naive UTC clocks whose Paris-calendar expiry is as_of minus a day (due), then
    as_of plus a day (not due)."""
    wall = as_of.astimezone(PARIS)
    for due in (True, False):
        target = (wall + timedelta(days=-1 if due else 1)).astimezone(UTC)
        first = (target.astimezone(PARIS) - period).astimezone(UTC)
        clock = _walk(
            first, lambda c: (c.astimezone(PARIS) + period).astimezone(UTC), target, due=due
        )
        yield _naive_utc(clock)


def _date_boundaries(as_of: datetime, period: relativedelta) -> Iterator[date]:
    """Yield two dates whose expiry is the Paris date of as_of minus a day (due), then plus a day
    (not due)."""
    today = as_of.astimezone(PARIS).date()
    for due in (True, False):
        target = today + timedelta(days=-1 if due else 1)
        yield _walk(target - period, lambda d: d + period, target, due=due)


class _Rows(dict[str, list[Row]]):
    """Rows per demo table; ids are assigned here so children can refer to their parents."""

    def __init__(self) -> None:
        super().__init__({name: [] for name in DEMO_TABLES})

    def add(self, table: str, **values: Any) -> int:
        rows = self[table]
        rows.append({"id": len(rows) + 1, **values})
        return len(rows)
