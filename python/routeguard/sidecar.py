"""Files routeguard keeps beside a SQLite database (the key store's change mark, the budget
spend log's journals): how they are opened and which of them may be trusted, since anyone who
can write in the database's directory can put a file under such a name."""

from __future__ import annotations

import os
import stat

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
"""Flags every open of a sidecar file adds: never through a symlink, never inherited."""


def trusted(st: os.stat_result, db: os.stat_result) -> bool:
    """Whether a file beside the database may be used: a regular file with one name, owned by
    this process's user or the database's, that no one may write who may not write the
    database (someone else could change it under us, or plant its content)."""
    me = os.geteuid() if hasattr(os, "geteuid") else st.st_uid
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_nlink == 1
        and st.st_uid in (me, db.st_uid)
        and not st.st_mode & ~db.st_mode & 0o022
    )
