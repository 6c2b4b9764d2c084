"""The shared SQLite write helpers: a batch insert is all or none, in few statements."""

from __future__ import annotations

import sqlite3

import pytest

from routeguard.sqlite_tx import ROWS_PER_INSERT, insert_rows


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (a INTEGER NOT NULL, b TEXT)")
    return db


def test_a_batch_is_one_statement_and_rows_keep_their_order() -> None:
    db = _db()
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    rows = [(i, f"r{i}") for i in range(ROWS_PER_INSERT)]
    insert_rows(db, "t", 2, rows)
    insert_rows(db, "t", 2, [])  # nothing to do: no statement
    assert [s.split(" VALUES")[0] for s in statements] == ["INSERT INTO t"]
    assert db.execute("SELECT a, b FROM t ORDER BY rowid").fetchall() == rows


def test_a_large_batch_is_chunked_in_one_transaction() -> None:
    db = _db()
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    n = 2 * ROWS_PER_INSERT + 3
    insert_rows(db, "t", 2, [(i, None) for i in range(n)])
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == 3
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    assert db.execute("SELECT COUNT(*), SUM(a) FROM t").fetchone() == (n, n * (n - 1) // 2)


def test_a_writer_can_pause_between_the_statements_of_a_batch() -> None:
    """A writer thread inserts in small statements and lets the event loop's thread run
    between two (``between``), still in one transaction."""
    db = _db()
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    insert_rows(db, "t", 2, [(i, None) for i in range(11)], per=4,
                between=lambda: statements.append("pause"))  # fmt: skip
    kinds = [s.split(" ")[0] for s in statements]
    assert kinds == ["BEGIN", "INSERT", "pause", "INSERT", "pause", "INSERT", "COMMIT"]
    assert db.execute("SELECT COUNT(*), SUM(a) FROM t").fetchone() == (11, 55)


def test_a_large_batch_inside_the_callers_transaction_is_part_of_it() -> None:
    """Inside an open transaction a batch of several statements joins it (a BEGIN there
    raised, and the batch was never written); the caller's end decides for all of it."""
    db = _db()
    n = 2 * ROWS_PER_INSERT + 3
    db.execute("BEGIN")
    insert_rows(db, "t", 2, [(i, None) for i in range(n)])
    assert db.in_transaction
    db.execute("ROLLBACK")
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    db.execute("BEGIN")
    insert_rows(db, "t", 2, [(i, None) for i in range(n)])
    db.execute("COMMIT")
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (n,)


def test_a_batch_that_fails_inside_the_callers_transaction_leaves_none_of_it() -> None:
    """A batch that fails in a later statement, inside a transaction the caller keeps and
    commits, leaves none of its rows; the caller's own writes stay. (Found by review.)"""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE u (k INTEGER UNIQUE)")
    db.execute("CREATE TABLE other (x)")
    rows = [(i,) for i in range(2 * ROWS_PER_INSERT)] + [(0,)]  # the last statement fails
    db.execute("BEGIN")
    db.execute("INSERT INTO other VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(db, "u", 1, rows)
    assert db.in_transaction
    db.execute("COMMIT")
    assert db.execute("SELECT COUNT(*) FROM u").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM other").fetchone() == (1,)


@pytest.mark.parametrize("n", [5, 3 * ROWS_PER_INSERT])
def test_a_bad_row_writes_none_of_its_batch(n: int) -> None:
    """A row the table refuses (here in the last chunk) leaves none of the batch behind: a
    writer that retries the batch never writes a row twice."""
    db = _db()
    rows: list[tuple[int | None, str]] = [(i, "x") for i in range(n)]
    rows[-1] = (None, "refused")  # NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(db, "t", 2, rows)
    assert not db.in_transaction
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)


def test_statements_stay_within_the_connections_variable_limit() -> None:
    """SQLite before 3.32 allows 999 variables a statement unless built with more (and a
    connection may lower it): the request spend records' 16 columns x 64 rows (1,024) were
    refused there, and their writer retried the same batch for good. A statement carries
    as many rows as the connection's limit allows."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE w (" + ", ".join(f"c{i}" for i in range(16)) + ")")
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    rows = [tuple(range(i, i + 16)) for i in range(2 * ROWS_PER_INSERT + 1)]
    insert_rows(db, "w", 16, rows[:ROWS_PER_INSERT])  # what fitted one statement
    insert_rows(db, "w", 16, rows[ROWS_PER_INSERT:])  # chunked
    assert db.execute("SELECT * FROM w ORDER BY rowid").fetchall() == rows
