"""Tamper-evident audit log of tool-call decisions (SQLite, hash-chained).

Every decision the guard makes is appended (:meth:`AuditLog.append`) as one row: a sequence
number, the record as canonical JSON (sorted keys, no whitespace), the previous row's hash and
this row's hash, ``sha256(prev_hash | seq | body)``. Changing any stored byte of a row breaks
its own hash; deleting, inserting or reordering rows breaks the sequence or the link to the
previous hash. :meth:`AuditLog.verify` (and ``routeguard audit verify PATH``) walks the chain and
reports the first bad row. Deleting the newest rows leaves a valid shorter chain: to detect that
too, keep :meth:`AuditLog.head` somewhere else (another system, a signed receipt) and pass it
to ``verify(anchor=...)``.

Arguments never go to the log in plain text when they may hold secrets: ``args="redacted"``
(the default) stores them with the decision's redactions masked and every value under a
secret-looking key (``password``, ``token``, ``api_key``...) or shaped like a credential
(``sk-...``, ``Bearer ...``, JWTs, card numbers) replaced by ``[REDACTED]``; ``args="hash"``
stores only a salted digest of the canonical arguments; ``args="omit"`` nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from routeguard.errors import AuditError

__all__ = ["GENESIS", "ArgsMode", "AuditLog", "AuditReport", "redact_secrets"]

GENESIS = "0" * 64
ArgsMode = Literal["redacted", "hash", "omit"]
_MASK = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|auth|credential|private[-_]?key|"
    r"session[-_]?id|cookie|cvv|cvc|pin$|card[-_]?number|ssn",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"\b(sk|pk|rk)-[A-Za-z0-9_-]{16,}|\bBearer\s+\S{8,}|\bgh[pousr]_[A-Za-z0-9]{20,}|"
    r"\bAKIA[0-9A-Z]{16}\b|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|"
    r"\b(?:\d[ -]?){13,19}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)
"""


def redact_secrets(value: Any, *, key: str = "") -> Any:
    """A copy of ``value`` with secret-looking keys' values and credential-shaped strings masked."""
    if key and _SECRET_KEY.search(key):
        return _MASK
    if isinstance(value, Mapping):
        return {str(k): redact_secrets(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(_MASK, value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return _SECRET_VALUE.sub(_MASK, str(value))


def canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 kept, non-JSON values as strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hash(prev_hash: str, seq: int, body: str) -> str:
    """The hash a row must carry."""
    h = hashlib.sha256()
    h.update(prev_hash.encode())
    h.update(b"|")
    h.update(str(seq).encode())
    h.update(b"|")
    h.update(body.encode())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of :meth:`AuditLog.verify`: ``ok``, rows checked, the first bad row and why."""

    ok: bool
    rows: int
    first_bad: int | None = None  # sequence number (or position) of the first bad row
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.rows} row(s), hash chain intact"
        return f"tampered at row {self.first_bad}: {self.reason}"


class AuditLog:
    """An append-only, hash-chained decision log in SQLite (``":memory:"`` for tests)."""

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        args: ArgsMode = "redacted",
        salt: bytes | None = None,
        readonly: bool = False,
    ) -> None:
        if args not in ("redacted", "hash", "omit"):
            raise AuditError(f"audit args mode {args!r}: expected redacted, hash or omit")
        self.path = str(path)
        self.args_mode: ArgsMode = args
        self._salt = salt if salt is not None else os.urandom(16)
        self._lock = threading.Lock()
        try:
            if readonly:
                uri = Path(self.path).resolve().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
                self._db.execute("SELECT seq, body, prev_hash, hash FROM audit LIMIT 1")
            else:
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                if self.path != ":memory:":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise AuditError(f"cannot open audit log {self.path}: {e}") from None

    @classmethod
    def open_existing(cls, path: str | os.PathLike[str]) -> AuditLog:
        """Open an existing log file read-only (for verification)."""
        p = Path(path)
        if not p.is_file():
            raise AuditError(f"audit log {p} does not exist")
        return cls(p, readonly=True)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _args_field(self, args: Any) -> Any:
        if self.args_mode == "omit":
            return None
        if self.args_mode == "hash":
            return "sha256:" + hashlib.sha256(self._salt + canonical(args).encode()).hexdigest()
        return redact_secrets(args)

    def append(self, record: Mapping[str, Any]) -> tuple[int, str]:
        """Append one record (its ``args`` key is stored per the args mode); returns (seq, hash)."""
        rec = dict(record)
        if "args" in rec:
            rec["args"] = self._args_field(rec["args"])
        rec.setdefault("ts", time.time())
        body = canonical(rec)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    last = self._db.execute(
                        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                    ).fetchone()
                    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                    h = row_hash(prev, seq, body)
                    self._db.execute(
                        "INSERT INTO audit (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
                        (seq, body, prev, h),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise AuditError(f"cannot append to audit log {self.path}: {e}") from None
        return seq, h

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest row ((0, GENESIS) if empty): keep it elsewhere as an anchor."""
        with self._lock:
            last = self._db.execute(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (int(last[0]), str(last[1])) if last else (0, GENESIS)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def records(self) -> Iterator[dict[str, Any]]:
        """The stored records in order (each with its ``seq``)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM audit ORDER BY rowid").fetchall()
        for seq, body in rows:
            yield {"seq": seq, **json.loads(body)}

    def verify(self, *, anchor: tuple[int, str] | None = None) -> AuditReport:
        """Walk the chain in storage order; report the first row that breaks it.

        ``anchor``: a (seq, hash) from :meth:`head` taken earlier; the chain must still
        contain that row unchanged (detects truncation of the newest rows).
        """
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid, seq, body, prev_hash, hash FROM audit ORDER BY rowid"
                ).fetchall()
        except sqlite3.Error as e:
            raise AuditError(f"cannot read audit log {self.path}: {e}") from None
        prev, expected = GENESIS, 1
        anchored = anchor is None or anchor == (0, GENESIS)
        for n, (_rowid, seq, body, prev_hash, h) in enumerate(rows, 1):
            where = seq if isinstance(seq, int) else n
            if seq != expected:
                what = "missing" if isinstance(seq, int) and seq > expected else "out of order"
                return AuditReport(
                    False, n - 1, where, f"expected row {expected}, found {seq} (rows {what})"
                )
            if prev_hash != prev:
                return AuditReport(False, n - 1, where, "does not link to the previous row's hash")
            if not isinstance(body, str) or row_hash(prev, seq, body) != h:
                return AuditReport(False, n - 1, where, "content does not match its hash (edited)")
            if anchor is not None and seq == anchor[0]:
                if h != anchor[1]:
                    return AuditReport(False, n - 1, where, "differs from the anchored head")
                anchored = True
            prev, expected = h, expected + 1
        if not anchored and anchor is not None:
            return AuditReport(
                False, len(rows), anchor[0], "the anchored row is gone (log truncated)"
            )
        return AuditReport(True, len(rows))
