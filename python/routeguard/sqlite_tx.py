"""One explicit SQLite transaction on an autocommit connection (``isolation_level=None``),
the shape every store writing to SQLite shares: the key store, the budget spend log, the
request spend records and the audit log; and :func:`insert_rows`, the batch insert of the
writer threads."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

ROWS_PER_INSERT = 64
"""Rows one INSERT statement carries (:func:`insert_rows`): each batch size up to it is one
statement text, prepared once and kept in the connection's statement cache."""


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


def insert_rows(
    db: sqlite3.Connection,
    table: str,
    width: int,
    rows: Sequence[Any],
    *,
    per: int = ROWS_PER_INSERT,
    between: Callable[[], None] | None = None,
) -> None:
    """Insert ``rows`` (each ``width`` values) into ``table``, all or none, in as few
    statements as it takes: one multi-row INSERT (its own transaction) for up to ``per``
    rows (fewer if the connection's variable limit needs it), else one per that many inside
    a transaction (a savepoint in the caller's, when one is open), calling ``between`` (if
    given) between two of them.

    ``executemany`` steps once per row, and sqlite3 lets the GIL go and takes it back
    around every step: a writer thread inserting a batch that way hands the GIL to the
    event loop and waits for it once per row, a switch of threads each time.
    """
    if not rows:
        return
    # SQLite before 3.32 allows 999 variables a statement unless built with more (and a
    # connection may lower its limit): fewer rows a statement where the width needs it.
    per = max(1, min(per, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    if len(rows) <= per:
        db.execute(_insert_sql(table, width, len(rows)), [v for r in rows for v in r])
        return
    # Inside the caller's transaction, a savepoint (a BEGIN there raised, and a batch of
    # more than one statement was never written).
    with _savepoint(db) if db.in_transaction else transaction(db):
        for i in range(0, len(rows), per):
            if i and between is not None:
                between()
            chunk = rows[i : i + per]
            db.execute(_insert_sql(table, width, len(chunk)), [v for r in chunk for v in r])


@contextlib.contextmanager
def _savepoint(db: sqlite3.Connection) -> Iterator[None]:
    """A nested transaction in the caller's: what the block wrote is undone if it raises,
    whatever the caller then does with its own."""
    db.execute("SAVEPOINT insert_rows")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK TO insert_rows")
        db.execute("RELEASE insert_rows")
        raise
    db.execute("RELEASE insert_rows")


@functools.lru_cache(maxsize=256)
def _insert_sql(table: str, width: int, count: int) -> str:
    """``INSERT INTO table VALUES (?, ...), ...`` for ``count`` rows of ``width``."""
    one = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {table} VALUES " + ", ".join([one] * count)
