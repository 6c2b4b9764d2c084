"""SpendLog: the in-process budget's write-through log in SQLite, so spend survives a restart.

Data flow: every settlement (and every late charge) of :class:`~routeguard.budget.memory.
MemoryBudget` queues one row ``(ts, request_id, chain, amount)``; a writer thread commits
what is queued in one transaction per batch, in the same SQLite file as the virtual keys
(``server.database``), so the event loop never waits on the disk. On start the rows are
read back and grouped by account; when an account is registered (at start, or later for a
virtual key's own account) its rows are charged to the ledger again: for a calendar period
only the rows of the current window, for a rolling window only the rows still inside it,
for ``total`` all of them. A process killed between the ledger update and the row write
loses at most that one settlement; one killed before settling leaves nothing to replay,
as its hold only ever lived in memory.

The trade-off, chosen for the event loop: a process killed with SIGKILL loses the rows still
queued (normally well under a millisecond of settlements; ``flush`` and ``close`` write them
out, and the gateway's shutdown flushes). SQLite runs in WAL mode with
``synchronous=NORMAL``: a committed batch survives a process crash; an OS crash may lose
the last batches.
"""

from __future__ import annotations

import queue
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
        self._queue: queue.SimpleQueue[tuple[float, str, str, int] | None] = queue.SimpleQueue()
        self._queued = 0
        self._cond = threading.Condition()
        self._writer = threading.Thread(target=self._write, name="routeguard-spendlog", daemon=True)
        self._writer.start()
        self._pending: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for ts, chain, amount in rows:
            for name in str(chain).split():
                self._pending[name].append((float(ts), int(amount)))

    def __len__(self) -> int:
        self.flush()
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM spend").fetchone()
        return int(row[0])

    def append(self, ts: float, request_id: str, chain: Sequence[str], amount: int) -> None:
        """Queue one settlement of ``amount`` micro-dollars on every account of ``chain``."""
        if amount:
            with self._cond:
                self._queued += 1
            self._queue.put((ts, request_id, " ".join(chain), amount))

    def _write(self) -> None:
        """The writer thread: commit queued rows in batches until ``close``."""
        while True:
            first = self._queue.get()
            batch = [] if first is None else [first]
            stop = first is None
            while len(batch) < 4096:
                try:
                    row = self._queue.get_nowait()
                except queue.Empty:
                    break
                if row is None:
                    stop = True
                    break
                batch.append(row)
            if batch:
                with self._lock:
                    self._db.execute("BEGIN")
                    self._db.executemany("INSERT INTO spend VALUES (?, ?, ?, ?)", batch)
                    self._db.execute("COMMIT")
                with self._cond:
                    self._queued -= len(batch)
                    self._cond.notify_all()
            if stop:
                return

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is committed; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._queued == 0, timeout)

    def take(self, account: str) -> list[tuple[float, int]]:
        """The logged ``(ts, amount)`` rows of ``account``, oldest first, handed out once."""
        return self._pending.pop(account, [])

    def close(self) -> None:
        """Write out what is queued, stop the writer and close the database."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        with self._lock:
            self._db.close()
