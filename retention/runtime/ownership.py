"""Files root makes for the service: an admin's command run as root (`hold add`, `run`, `audit
anchor`) writes into the service user's audit directory and state database. What it creates
there goes to the owner of the directory it is made in, else the service could not write it
after (a root-owned lock file, segment or pending folder stopped every later run: exit 70).

That folder's owner may be hostile (the service's user, compromised): it may have put a
symlink or a hard link where root creates a file, so that root's open reaches /etc/shadow.
A file is handed over only when what root holds open is the regular file of that name, with
no other link: never the target of a link planted there."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def hand_over(path: Path, descriptor: int | None = None) -> None:
    """Given a file just made at ``path`` (open as ``descriptor``) or a folder just made at
    ``path``, give it to the owner of the folder it is in when this process runs as root and
    that folder is not root's; do nothing otherwise (the service itself never pays more than
    a geteuid).

    Example: as root, ``hand_over(Path("/var/lib/retention/audit/lock"), descriptor)`` gives
    the lock to the service's (dynamic) user that owns /var/lib/retention/audit.
    """
    if os.geteuid() != 0:
        return
    owner = os.stat(path.parent)
    if owner.st_uid == 0:
        return
    if descriptor is None:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
        return
    opened, named = os.fstat(descriptor), os.lstat(path)
    if (
        stat.S_ISREG(opened.st_mode)
        and opened.st_nlink == 1
        and (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
    ):
        os.fchown(descriptor, owner.st_uid, owner.st_gid)
