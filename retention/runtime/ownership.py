"""Files root makes for the service: an admin's command run as root (`hold add`, `run`, `audit
anchor`) writes into the service user's audit directory and state database. What it creates
there goes to the owner of the directory it is made in, else the service could not write it
after (a root-owned lock file, segment or pending folder stopped every later run: exit 70)."""

from __future__ import annotations

import os
from pathlib import Path


def hand_over(made: int | Path, directory: Path) -> None:
    """Given a file or folder just made (a descriptor or a path) and the folder it was made in,
    give it to that folder's owner when this process runs as root and the folder is not
    root's; do nothing otherwise (the service itself never pays more than a geteuid).

    Example: as root, ``hand_over(descriptor, Path("/var/lib/retention/audit"))`` gives the
    new file to the service's (dynamic) user that owns that folder.
    """
    if os.geteuid() != 0:
        return
    status = os.stat(directory)
    if status.st_uid == 0:
        return
    if isinstance(made, int):
        os.fchown(made, status.st_uid, status.st_gid)
    else:
        os.chown(made, status.st_uid, status.st_gid, follow_symlinks=False)
