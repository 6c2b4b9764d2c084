"""One explicit SQLite transaction on an autocommit connection (``isolation_level=None``),
the shape every store writing to SQLite shares: the key store, the budget spend log, the
request spend records and the audit log."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, *, immediate: bool = False) -> Iterator[None]:
    """BEGIN (IMMEDIATE: take the write lock now), COMMIT when the block ends, ROLLBACK if
    it or the commit raises (when a transaction is still open)."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
