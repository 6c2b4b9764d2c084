"""SpendLog: the in-process budget's write-through log in SQLite, so spend survives a restart.

Data flow: every settlement (and every late charge) of :class:`~routeguard.budget.memory.
MemoryBudget` appends one row ``(ts, request_id, chain, amount)`` before the call returns,
in the same SQLite file as the virtual keys (``server.database``). On start the rows are
read back and grouped by account; when an account is registered (at start, or later for a
virtual key's own account) its rows are charged to the ledger again: for a calendar period
only the rows of the current window, for a rolling window only the rows still inside it,
for ``total`` all of them. A process killed between the ledger update and the row write
loses at most that one settlement; one killed before settling leaves nothing to replay,
as its hold only ever lived in memory.

Writes go through SQLite in WAL mode with ``synchronous=NORMAL``: an append is a few
microseconds and survives a process crash (an OS crash may lose the last transactions).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path


class SpendLog:
    """Append-only settlements in SQLite, replayed per account on start."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the log in the SQLite file at ``path``."""
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS spend (ts REAL NOT NULL, request_id TEXT NOT NULL,"
                " chain TEXT NOT NULL, amount INTEGER NOT NULL)"
            )
            rows = self._db.execute("SELECT ts, chain, amount FROM spend ORDER BY ts").fetchall()
        self._pending: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for ts, chain, amount in rows:
            for name in str(chain).split():
                self._pending[name].append((float(ts), int(amount)))

    def __len__(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM spend").fetchone()
        return int(row[0])

    def append(self, ts: float, request_id: str, chain: Sequence[str], amount: int) -> None:
        """Record one settlement of ``amount`` micro-dollars on every account of ``chain``."""
        if amount == 0:
            return
        with self._lock:
            self._db.execute(
                "INSERT INTO spend VALUES (?, ?, ?, ?)", (ts, request_id, " ".join(chain), amount)
            )

    def take(self, account: str) -> list[tuple[float, int]]:
        """The logged ``(ts, amount)`` rows of ``account``, oldest first, handed out once."""
        return self._pending.pop(account, [])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
