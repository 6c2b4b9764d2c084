"""SpendLog: the in-process budget's write-through log in SQLite, so spend survives a restart.

Data flow: every settlement (and every late charge) of :class:`~routeguard.budget.memory.
MemoryBudget` queues one row ``(ts, request_id, chain, amount)``; a writer thread, woken by
the first row of a batch, lets rows gather for ``linger_s`` (5 ms by default) and commits
them in one transaction, in the same SQLite file as the virtual keys (``server.database``),
so the event loop never waits on the disk and a steady stream of requests does not wake a
thread and write a transaction for each one. On start the rows are
read back and grouped by account; when an account is registered (at start, or later for a
virtual key's own account) its rows are charged to the ledger again: for a calendar period
only the rows of the current window, for a rolling window only the rows still inside it,
for ``total`` all of them. A process killed between the ledger update and the row write
loses at most that one settlement; one killed before settling leaves nothing to replay,
as its hold only ever lived in memory.

Compaction keeps the file (and the start-up replay) small: rows older than ``keep_s`` (an
hour by default) are folded into one row per chain and 15-minute bucket, stamped just before
the bucket's end. Every calendar boundary (midnight, week, month in any time zone: UTC
offsets are whole quarter hours) falls on a bucket edge, so calendar windows and ``total``
sums are restored exactly; a rolling window sees folded spend up to 15 minutes longer than
the rows themselves would say, which errs towards refusing, never towards overspend. It
runs when the log opens and then every ``keep_s`` on the writer thread; request ids of
folded rows are not kept.

The trade-off, chosen for the event loop: a process killed with SIGKILL loses the rows still
queued (at most ``linger_s`` plus one commit of settlements, fewer than the requests it had
in flight, whose holds die with it anyway; ``flush`` and ``close`` write them out at once,
and the gateway's shutdown flushes). SQLite runs in WAL mode with
``synchronous=NORMAL``: a committed batch survives a process crash; an OS crash may lose
the last batches.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from routeguard.handoff import Handoff, drain
from routeguard.sqlite_tx import insert_rows, transaction

log = logging.getLogger("routeguard.budget")
BUCKET_S = 900.0  # every UTC offset, hence every calendar boundary, is a whole quarter hour
FOLDED = "compacted"  # the request id of a folded row
RETRY_S = 60.0  # how long a batch the database refuses is retried before it is dropped


class SpendLog:
    """Append-only settlements in SQLite, replayed per account on start."""

    def __init__(
        self,
        path: str | Path,
        *,
        keep_s: float = 3600.0,
        linger_s: float = 0.005,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the log in the SQLite file at ``path``; rows older than
        ``keep_s`` by ``clock`` are folded, rows wait up to ``linger_s`` to be committed
        together (see the module docstring)."""
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._keep_s = keep_s
        self._clock = clock
        # Every row of the file stamped before this bucket edge is folded (the writer lowers
        # it for a row it writes with an older stamp): each compaction groups only the rows
        # since, not every row the log has kept (the write lock is held meanwhile).
        self._folded_to = -math.inf
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS spend (ts REAL NOT NULL, request_id TEXT NOT NULL,"
                " chain TEXT NOT NULL, amount INTEGER NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS spend_ts ON spend (ts)")
        self.compact(clock() - keep_s)
        self._compacted_at = time.monotonic()
        with self._lock:
            rows = self._db.execute("SELECT ts, chain, amount FROM spend ORDER BY ts").fetchall()
        self._handoff: Handoff[tuple[float, str, str, int]] = Handoff(
            "budget spend log", linger=linger_s, logger=log
        )  # no cap: a settlement is never dropped
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
            self._handoff.put((ts, request_id, " ".join(chain), amount))

    def compact(self, before: float) -> int:
        """Fold the rows older than ``before`` (rounded down to a bucket edge) into one row
        per chain and bucket; returns how many rows fewer the log holds."""
        cutoff = math.floor(before / BUCKET_S) * BUCKET_S
        with self._lock:
            since = self._folded_to
            if cutoff <= since:
                return 0
            if math.isfinite(since):  # whole buckets: a late row's joins its bucket's fold
                since = math.floor(since / BUCKET_S) * BUCKET_S
            with transaction(self._db, immediate=True):
                groups = self._db.execute(
                    "SELECT CAST(ts / ? AS INTEGER) AS b, chain, SUM(amount), COUNT(*)"
                    " FROM spend WHERE ts >= ? AND ts < ? GROUP BY b, chain",
                    (BUCKET_S, since, cutoff),
                ).fetchall()
                before_rows = sum(int(g[3]) for g in groups)
                if before_rows > len(groups):
                    self._db.execute("DELETE FROM spend WHERE ts >= ? AND ts < ?", (since, cutoff))
                    self._db.executemany(
                        "INSERT INTO spend VALUES (?, ?, ?, ?)",
                        [((b + 1) * BUCKET_S - 1e-3, FOLDED, chain, total)
                         for b, chain, total, _ in groups],
                    )  # fmt: skip
            self._folded_to = cutoff
        return max(0, before_rows - len(groups))

    def _write(self) -> None:
        """The writer thread: commit queued rows in batches until ``close``, compacting the
        log every ``keep_s``."""
        while True:
            self._handoff.wait(min(self._keep_s, 60.0))
            for batch in drain(self._handoff, 4096):
                if batch.items:
                    self._commit(batch.items)
                batch.done()
                if batch.stop:
                    return
            self._maybe_compact()

    def _commit(self, batch: list[tuple[float, str, str, int]]) -> None:
        """Insert ``batch`` in one transaction (writer thread only). While another writer
        holds the file past SQLite's busy timeout the batch waits and is retried (a failed
        write killed the writer: no settlement was logged again), for up to
        :data:`RETRY_S`; then it is dropped, logged as an error."""
        waited = 0.0
        while True:
            try:
                with self._lock:
                    insert_rows(self._db, "spend", 4, batch)
                    # A row stamped before the folded edge: the next compaction reaches it.
                    self._folded_to = min(self._folded_to, min(r[0] for r in batch))
                if waited:
                    log.info("budget spend log: written again after %.1f s", waited)
                return
            except sqlite3.Error as exc:
                if waited >= RETRY_S:
                    log.error(
                        "budget spend log: %d settlement(s) of %d micro-USD not written (%s): "
                        "a restart will not restore them",
                        len(batch), sum(r[3] for r in batch), exc,
                    )  # fmt: skip
                    return
                if not waited:
                    log.warning("budget spend log: cannot write (%s); retrying", exc)
                time.sleep(0.5)
                waited += 0.5

    def _maybe_compact(self) -> None:
        """Compact if ``keep_s`` passed since the last time (writer thread only)."""
        if time.monotonic() - self._compacted_at >= self._keep_s:
            self._compacted_at = time.monotonic()
            try:
                self.compact(self._clock() - self._keep_s)
            except sqlite3.Error as exc:  # the file is busy: compacted next time
                log.warning("budget spend log: not compacted (%s)", exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is committed; False if ``timeout`` passed first."""
        return self._handoff.flush(self._writer, timeout)

    def take(self, account: str) -> list[tuple[float, int]]:
        """The logged ``(ts, amount)`` rows of ``account``, oldest first, handed out once."""
        return self._pending.pop(account, [])

    def close(self) -> None:
        """Write out what is queued, stop the writer and close the database."""
        self._handoff.stop(self._writer, None)
        with self._lock:
            self._db.close()
