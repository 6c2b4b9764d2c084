"""Per-request spend records in SQLite, for ``GET /admin/spend``: one row per request the
proxy served or refused (who, which route and model, tokens, cost, status, latency), summed
on demand by key, user, team, org, route, model, deployment or day over a time range (and,
for the dashboard, per time bucket, per route/model/cache combination, and as latency
quantiles).

The event loop only queues a finished request (a deque append; the thread is woken once per
batch, lets rows gather for 50 ms, then builds them and inserts them in one transaction).
Rows are written by that writer thread, never on the event loop, into the server's database
(``server.database``: shared by every worker and kept across restarts) or, without one, an
in-memory database of this process (``serve --workers N`` without one gives its workers a
shared temporary file instead, named by :data:`SPEND_DB_ENV`). Rows older than ``keep_days``
are deleted when the store opens and then hourly. Without a database of its own (the rows die
with the process anyway) the store keeps only the newest ``max_rows`` (:data:`UNSAVED_MAX_ROWS`),
trimmed each time a tenth of that was written: a busy proxy on the embedded default no longer
grows by its whole request history. The budget ledger's own write-through log
(:mod:`routeguard.budget.spendlog`) stays separate: it is what budgets are restored from.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from routeguard.handoff import PAUSE_EVERY, Handoff, drain, pause
from routeguard.sqlite_tx import insert_rows

if TYPE_CHECKING:
    from routeguard.observe.requestlog import Trace

log = logging.getLogger("routeguard.observe")

COLUMNS = (
    "ts", "request_id", "key_id", "user", "team", "org", "route", "model", "deployment",
    "provider", "prompt_tokens", "completion_tokens", "cost_usd", "status", "latency_ms",
    "cache",
)  # fmt: skip
GROUPS = ("key_id", "user", "team", "org", "route", "model", "deployment", "provider", "day")
FILTERS = ("key_id", "user", "team", "org", "route", "model", "deployment", "provider")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1  # the ints an SQLite INTEGER holds
UNSAVED_MAX_ROWS = 1_000_000
"""Rows a spend store without ``server.database`` keeps, the newest (their memory:
docs/observability.md)."""
SPEND_DB_ENV = "ROUTEGUARD_SPEND_DB"
"""Environment variable naming the spend database the workers of one ``serve`` share when
``server.database`` is not set (``serve`` makes the file and removes it at exit)."""


class SpendRecords:
    """Request rows in SQLite and their sums (see the module docstring)."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        keep_days: float = 90.0,
        queue_size: int = 100_000,
        linger: float = 0.05,
        max_rows: int | None = None,
    ) -> None:
        """Open (or create) the rows in ``path``; ``max_rows``: keep only that many, the
        newest (None: every row younger than ``keep_days``)."""
        self._max_rows = max_rows
        self._written = 0  # rows inserted since the last trim to max_rows
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._keep_s = keep_days * 86_400
        with self._lock:
            if str(path) != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS request_spend (ts REAL NOT NULL, request_id TEXT,"
                " key_id TEXT, user TEXT, team TEXT, org TEXT, route TEXT, model TEXT,"
                " deployment TEXT, provider TEXT, prompt_tokens INTEGER, completion_tokens"
                " INTEGER, cost_usd REAL, status INTEGER, latency_ms REAL, cache TEXT)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS request_spend_ts ON request_spend (ts)")
        self._prune()
        self._pruned_at = time.monotonic()
        self._handoff: Handoff[Any] = Handoff(
            "spend log", linger=linger, cap=queue_size, logger=log
        )  # rows, or (trace, when it ended) pairs whose rows the writer builds
        self._failing = False  # the last write failed (warned once until one succeeds)
        self._writer = threading.Thread(target=self._run, name="routeguard-spend", daemon=True)
        self._writer.start()

    def record(self, row: Mapping[str, Any]) -> None:
        """Queue one request's row (never blocks; a full queue drops and counts it)."""
        self._put(tuple(row.get(c) for c in COLUMNS))

    def record_trace(self, trace: Trace, now: float | None = None) -> None:
        """Queue a finished request's row, built by the writer thread from its trace (which
        must not change after this); ``now``: when it ended (default: now)."""
        self._put((trace, time.perf_counter() if now is None else now))

    @property
    def dropped(self) -> int:
        """Rows dropped because the writer's queue was full."""
        return self._handoff.dropped

    def _put(self, item: Any) -> None:
        self._handoff.put(item)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued row is committed."""
        self._handoff.flush(self._writer, timeout)

    def sums(
        self,
        *,
        group_by: str = "model",
        where: Mapping[str, str] | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Requests, errors, tokens and cost per ``group_by`` value, for rows matching every
        ``where`` column and with ``start <= ts < end``; dearest first."""
        if group_by not in GROUPS:
            raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
        key = "date(ts, 'unixepoch')" if group_by == "day" else group_by
        clauses: list[str] = []
        args: list[str | float] = []
        for col, value in (where or {}).items():
            if col not in FILTERS:
                raise ValueError(f"cannot filter on {col!r}; filters: {', '.join(FILTERS)}")
            clauses.append(f"{col} = ?")
            args.append(value)
        if start is not None:
            clauses.append("ts >= ?")
            args.append(start)
        if end is not None:
            clauses.append("ts < ?")
            args.append(end)
        sql = (
            f"SELECT {key} AS g, COUNT(*), SUM(status >= 400), COALESCE(SUM(prompt_tokens), 0),"
            " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_usd), 0.0)"
            " FROM "
            + self._table(start, end)
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + " GROUP BY g ORDER BY 6 DESC, 2 DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [
            {"group": g, "requests": n, "errors": int(e or 0), "prompt_tokens": p,
             "completion_tokens": c, "cost_usd": round(float(cost), 9)}
            for g, n, e, p, c, cost in rows
        ]  # fmt: skip

    def timeline(self, start: float, end: float, bucket_s: float) -> list[dict[str, Any]]:
        """Requests, errors and cost in each ``bucket_s``-second bucket of ``[start, end)``
        (every bucket, empty ones too, oldest first)."""
        if not bucket_s > 0 or not end > start:
            raise ValueError("timeline needs end > start and a positive bucket size")
        sql = (
            "SELECT CAST((ts - ?) / ? AS INTEGER) AS b, COUNT(*), SUM(status >= 400),"
            " COALESCE(SUM(cost_usd), 0.0) FROM "
            + self._table(start, end)
            + " WHERE ts >= ? AND ts < ?"
            " GROUP BY b"
        )
        with self._lock:
            found = self._db.execute(sql, (start, bucket_s, start, end)).fetchall()
        by_bucket = {int(b): (n, int(e or 0), float(c)) for b, n, e, c in found}
        out = []
        for i in range(math.ceil((end - start) / bucket_s)):
            n, e, c = by_bucket.get(i, (0, 0, 0.0))
            out.append({"ts": start + i * bucket_s, "requests": n, "errors": e,
                        "cost_usd": round(c, 9)})  # fmt: skip
        return out

    def breakdown(
        self,
        columns: tuple[str, ...],
        *,
        start: float | None = None,
        end: float | None = None,
        limit: int = 5000,
    ) -> list[dict[str, Any]]:
        """Requests, errors, tokens and cost per distinct value tuple of ``columns`` (any of
        :data:`FILTERS` and ``cache``) in ``[start, end)``; busiest first."""
        allowed = (*FILTERS, "cache")
        for col in columns:
            if col not in allowed:
                raise ValueError(f"cannot group on {col!r}; columns: {', '.join(allowed)}")
        if not columns:
            raise ValueError("breakdown needs at least one column")
        clauses, args = _range(start, end)
        cols = ", ".join(columns)
        sql = (
            f"SELECT {cols}, COUNT(*), SUM(status >= 400), COALESCE(SUM(prompt_tokens), 0),"
            " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_usd), 0.0)"
            " FROM "
            + self._table(start, end)
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + f" GROUP BY {cols} ORDER BY {len(columns) + 1} DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        k = len(columns)
        return [
            {**dict(zip(columns, r[:k], strict=True)), "requests": r[k],
             "errors": int(r[k + 1] or 0), "prompt_tokens": r[k + 2],
             "completion_tokens": r[k + 3], "cost_usd": round(float(r[k + 4]), 9)}
            for r in rows
        ]  # fmt: skip

    def latency_quantiles(
        self,
        quantiles: tuple[float, ...],
        *,
        start: float | None = None,
        end: float | None = None,
    ) -> dict[str, tuple[int, list[float | None]]]:
        """For every request in ``[start, end)`` with a latency (``all``), the cache hits
        (``hit``) and the requests an upstream call answered (``upstream``): how many there
        are and the latency (ms) at each quantile (nearest rank; None when there are none).
        One pass over the rows; the quantiles are computed here, not by sorting in SQL."""
        clauses, args = _range(start, end)
        clauses.append("latency_ms IS NOT NULL")
        sql = (
            "SELECT latency_ms, COALESCE(cache, '') = 'hit', deployment IS NOT NULL FROM "
            + self._table(start, end) + " WHERE " + " AND ".join(clauses)
        )  # fmt: skip
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        data = np.array(rows, dtype=np.float64).reshape(-1, 3)
        hit = data[:, 1] > 0
        kinds = {
            "all": data[:, 0],
            "hit": data[hit, 0],
            "upstream": data[~hit & (data[:, 2] > 0), 0],
        }
        out: dict[str, tuple[int, list[float | None]]] = {}
        for kind, values in kinds.items():
            if values.size == 0:
                out[kind] = (0, [None] * len(quantiles))
            else:
                qs = np.quantile(values, quantiles, method="inverted_cdf")
                out[kind] = (int(values.size), [float(q) for q in qs])
        return out

    def _table(self, start: float | None, end: float | None) -> str:
        """The table as a query's source: without its ``ts`` index when the range covers
        most of the stored rows' time span (a scan then beats a lookup per row)."""
        if start is None and end is None:
            return "request_spend"
        with self._lock:
            lo, hi = self._db.execute(  # two subqueries: each is one index lookup
                "SELECT (SELECT MIN(ts) FROM request_spend), (SELECT MAX(ts) FROM request_spend)"
            ).fetchone()
        if lo is None or hi <= lo:
            return "request_spend"
        covered = min(hi, end if end is not None else hi) - max(
            lo, start if start is not None else lo
        )
        return "request_spend NOT INDEXED" if covered > 0.25 * (hi - lo) else "request_spend"

    def close(self) -> None:
        """Write out what is queued, stop the writer and close the database."""
        self._handoff.stop(self._writer)
        with self._lock:
            self._db.close()

    def _run(self) -> None:
        while True:
            self._handoff.wait(1.0)
            if self._drain():
                return
            if time.monotonic() - self._pruned_at > 3600:
                self._pruned_at = time.monotonic()
                try:
                    self._prune()
                except sqlite3.Error as exc:  # the file is busy: pruned next hour
                    log.warning("spend log: old rows not pruned (%s)", exc)

    def _drain(self) -> bool:
        """Insert every queued row; True once a stop was taken."""
        for batch in drain(self._handoff, 1024):
            rows: list[tuple[Any, ...]] = []
            for n, item in enumerate(batch.items, 1):
                if n % PAUSE_EVERY == 0:
                    pause()
                if len(item) == 2:  # (trace, when it ended): its row is built here
                    try:
                        row = item[0].spend_row(item[1])
                        rows.append(tuple(row.get(c) for c in COLUMNS))
                    except Exception:  # a row must never kill the writer
                        log.exception("spend log: row could not be built; skipped")
                else:
                    rows.append(item)
            batch.items = rows  # built once: a batch put back is not built again
            try:
                self._insert(rows)
            except sqlite3.Error as exc:  # e.g. another writer held the file past the
                if not self._handoff.stopping:  # busy timeout: the rows wait, not lost
                    if not self._failing:
                        log.warning("spend log: cannot write (%s); retrying", exc)
                    self._failing = True
                    self._handoff.put_back(batch)
                    return False
                log.warning("spend log: %d row(s) not written at close (%s)", len(rows), exc)
            else:
                if self._failing:
                    log.info("spend log: writing again")
                self._failing = False
                self._written += len(rows)
                if self._max_rows is not None and self._written * 10 >= self._max_rows:
                    self._trim(self._max_rows)
            batch.done()
            if batch.stop:
                return True
        return False

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows``, all or none (:func:`~routeguard.sqlite_tx.insert_rows`); an int
        SQLite cannot hold (an upstream's absurd usage) goes in as NULL, changed in ``rows``."""
        with self._lock:
            try:
                insert_rows(self._db, "request_spend", len(COLUMNS), rows, per=PAUSE_EVERY,
                            between=pause)  # fmt: skip
            except OverflowError:  # no sqlite3.Error: it killed the writer; retrying is no use
                log.warning("spend log: a count past 64 bits in a batch; stored as NULL")
                rows[:] = [tuple(None if type(v) is int and not _I64_MIN <= v <= _I64_MAX
                                 else v for v in r) for r in rows]  # fmt: skip
                insert_rows(self._db, "request_spend", len(COLUMNS), rows)

    def _trim(self, keep: int) -> None:
        """Delete all but the newest ``keep`` rows (writer thread; a busy file: next time)."""
        self._written = 0
        try:
            with self._lock:
                self._db.execute(
                    "DELETE FROM request_spend WHERE ts < (SELECT ts FROM request_spend"
                    " ORDER BY ts DESC LIMIT 1 OFFSET ?)",
                    (keep - 1,),
                )
        except sqlite3.Error as exc:
            log.warning("spend log: rows past max_rows not trimmed (%s)", exc)

    def _prune(self) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM request_spend WHERE ts < ?", (time.time() - self._keep_s,)
            )


def _range(start: float | None, end: float | None) -> tuple[list[str], list[float]]:
    """WHERE clauses and arguments for ``start <= ts < end`` (either bound optional)."""
    clauses: list[str] = []
    args: list[float] = []
    if start is not None:
        clauses.append("ts >= ?")
        args.append(start)
    if end is not None:
        clauses.append("ts < ?")
        args.append(end)
    return clauses, args
