"""The demo data set: the schema the rules of config/retention.toml are written against, and
about seven years of fake but realistic records in it, on any SQLAlchemy URL (Core only); and
the objects and files of its object rules: dated dumps in backup folders and buckets, and the
customers' files under the prefixes that a cross-store rule reaches (``create_demo_objects``).

Every rule gets records due and not due at ``as_of``, including a boundary pair whose expiry is
one day before and one day after ``as_of`` on the Europe/Paris calendar. The data is a pure
function of ``(as_of, seed, scale)``: nothing reads the wall clock or a global random state.

Its modules: schema.py (the tables), fake.py (reproducible values and boundary moments), rows.py
(the rows, table by table), database.py (writing them), objects.py (backup folders and buckets).
"""

from __future__ import annotations

from retention.demo.database import DemoExistsError, create_demo_database
from retention.demo.fake import DEMO_ERASURE_SUBJECT
from retention.demo.objects import DEMO_BUCKET_TAG, DEMO_FOLDER_MARKER, create_demo_objects
from retention.demo.schema import DEMO_TABLES, demo_metadata

__all__ = [
    "DEMO_BUCKET_TAG",
    "DEMO_ERASURE_SUBJECT",
    "DEMO_FOLDER_MARKER",
    "DEMO_TABLES",
    "DemoExistsError",
    "create_demo_database",
    "create_demo_objects",
    "demo_metadata",
]
