"""Pending tool-call approvals shared by the workers of one proxy.

A call waiting for approval is held by the worker that received its request (an
:class:`~routeguard.enforce.approval.ApprovalQueue` in that process). With ``serve
--workers N``, the operator's ``GET /admin/approvals`` (or the dashboard's refresh) and the
decision that follows each reach any worker. :class:`SharedApprovals` makes that work: each
worker's thread copies its new pending requests into a table of the proxy's SQLite file
(the spend log's: ``server.database``, or the file ``serve`` makes for its workers), any
worker lists the table and records a decision in it, and the holder's thread applies the
decisions to its own queue within :data:`POLL_S`. A decision for a call this worker holds
is applied at once. Rows of calls that were decided, timed out or whose worker died leave
the table (the last by their expiry). The event loop never touches the file: submissions go
through a queue to the thread, and lists and decisions run in a thread too.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from routeguard.enforce.approval import ApprovalQueue, ApprovalRequest
from routeguard.errors import EnforcementError

POLL_S = 0.2
_STOP = object()


class ApprovalNotFound(EnforcementError):
    """No pending approval with that id (decided already, timed out, or never made)."""

    status_code = 404
    code = "not_found"


class SharedApprovals:
    """Every worker's pending approvals in one SQLite table (see the module docstring)."""

    def __init__(self, path: str, queues: Sequence[ApprovalQueue]) -> None:
        self.queues = list(queues)
        self.pid = os.getpid()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pending_approvals (id TEXT PRIMARY KEY,"
                " worker INTEGER NOT NULL, request TEXT NOT NULL, expires REAL NOT NULL,"
                " decision TEXT, by TEXT, reason TEXT)"
            )
        self._new: queue.Queue[Any] = queue.Queue()
        for q in self.queues:
            chained = q.on_submit

            def submitted(
                request: ApprovalRequest, q: ApprovalQueue = q, chained: Any = chained
            ) -> None:
                self._new.put((request, q.timeout))
                if chained is not None:
                    chained(request)

            q.on_submit = submitted
        self._had_local = False
        self._swept = 0.0
        self._thread = threading.Thread(target=self._run, name="routeguard-approvals", daemon=True)
        self._thread.start()

    def list(self) -> list[dict[str, Any]]:
        """Every worker's pending approvals, oldest first (blocking: call it in a thread)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT request FROM pending_approvals WHERE decision IS NULL AND expires > ?",
                (time.time(),),
            ).fetchall()
        out = [json.loads(r[0]) for r in rows]
        local = {r.id for q in self.queues for r in q.list()}
        seen = {r["id"] for r in out}
        # This worker's newest requests may still be on their way to the table.
        out += [{**r.public(), "worker": self.pid} for q in self.queues for r in q.list()
                if r.id not in seen]  # fmt: skip
        out = [r for r in out if r["id"] in local or r.get("worker") != self.pid]
        out.sort(key=lambda r: r.get("created_at", 0.0))
        return out

    def decide(self, request_id: str, approve: bool, by: str | None, reason: str) -> None:
        """Approve or deny a pending call, whichever worker holds it (blocking: call it in a
        thread); ApprovalNotFound when none is pending under that id."""
        for q in self.queues:
            if any(r.id == request_id for r in q.list()):
                try:
                    (q.approve if approve else q.deny)(request_id, by=by, reason=reason)
                except EnforcementError:
                    break  # decided or timed out in the meantime
                with self._lock:
                    self._db.execute("DELETE FROM pending_approvals WHERE id = ?", (request_id,))
                return
        with self._lock:
            done = self._db.execute(
                "UPDATE pending_approvals SET decision = ?, by = ?, reason = ?"
                " WHERE id = ? AND decision IS NULL AND expires > ? AND worker != ?",
                ("approve" if approve else "deny", by, reason, request_id, time.time(), self.pid),
            ).rowcount
        if not done:
            raise ApprovalNotFound(
                f"no pending approval '{request_id}' (decided already or timed out)"
            )

    def close(self) -> None:
        """Stop the thread and forget this worker's rows."""
        if self._thread.is_alive():
            self._new.put(_STOP)
            self._thread.join(5)
        with self._lock:
            self._db.execute("DELETE FROM pending_approvals WHERE worker = ?", (self.pid,))
            self._db.close()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            try:
                item = self._new.get(timeout=POLL_S)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if item is not None:
                    self._insert(*item)
                self._apply()
            except sqlite3.Error:  # a locked or broken file: try again on the next round
                continue

    def _insert(self, request: ApprovalRequest, timeout: float) -> None:
        row = {**request.public(), "worker": self.pid}
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO pending_approvals (id, worker, request, expires)"
                " VALUES (?, ?, ?, ?)",
                (request.id, self.pid, json.dumps(row), request.created_at + timeout),
            )

    def _apply(self) -> None:
        """Apply the decisions other workers recorded for this worker's calls; drop rows
        of calls no longer pending here, and expired rows of any worker."""
        local = {r.id: q for q in self.queues for r in q.list()}
        had_local, self._had_local = self._had_local, bool(local)
        if not local:
            # Nothing held here: no reading, only a sweep once this worker's last call is
            # gone and, now and then, of rows whose worker died before it could sweep them.
            now = time.monotonic()
            if had_local or now - self._swept > 30:
                self._swept = now
                with self._lock:
                    self._db.execute(
                        "DELETE FROM pending_approvals WHERE worker = ? OR expires < ?",
                        (self.pid, time.time() - 60),
                    )
            return
        with self._lock:
            rows = self._db.execute(
                "SELECT id, decision, by, reason FROM pending_approvals WHERE worker = ?",
                (self.pid,),
            ).fetchall()
        for request_id, decision, by, reason in rows:
            q = local.get(request_id)
            if q is not None and decision is None:
                continue
            if q is not None:
                try:
                    if decision == "approve":
                        q.approve(request_id, by=by, reason=reason or "")
                    else:
                        q.deny(request_id, by=by, reason=reason or "")
                except EnforcementError:
                    pass  # it timed out meanwhile: the timeout's denial stands
            with self._lock:
                self._db.execute("DELETE FROM pending_approvals WHERE id = ?", (request_id,))


def approvals_api(
    shared: SharedApprovals | None,
    queues: Sequence[ApprovalQueue],
    method: str,
    path: str,
    body: Any,
    by: str | None = None,
) -> tuple[int, Any]:
    """``GET /admin/approvals`` and ``POST /admin/approvals/{id}/approve|deny`` over every
    worker (``shared``) or this one (blocking: call it in a thread). ``by`` overrides the
    body's ``by`` (the dashboard names the key that decided)."""
    if shared is None:
        from routeguard.enforce.proxy import handle_approvals

        data = dict(body) if isinstance(body, dict) else {}
        if by is not None:
            data["by"] = by
        return handle_approvals(queues, method, path, data)
    parts = [p for p in path.split("/") if p][2:]  # after "admin", "approvals"
    if not parts and method == "GET":
        return 200, {"object": "list", "data": shared.list()}
    if len(parts) == 2 and parts[1] in ("approve", "deny") and method == "POST":
        data = body if isinstance(body, dict) else {}
        who = by if by is not None else data.get("by")
        who = who if isinstance(who, str) else None
        shared.decide(parts[0], parts[1] == "approve", who, str(data.get("reason") or ""))
        out = {"id": parts[0], "approved": parts[1] == "approve", "by": who}
        return 200, {**out, "worker": shared.pid}  # the worker that took the decision
    raise ApprovalNotFound(f"no approvals route for {method} {path}")
