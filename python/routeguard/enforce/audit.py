"""Tamper-evident audit log of tool-call decisions (SQLite, keyed hash chain, checkpoints).

Every decision the guard makes is appended (:meth:`AuditLog.append`) as one row: a sequence
number, the record as canonical JSON (sorted keys, no whitespace), the previous row's hash and
this row's hash, ``HMAC-SHA256(key, prev_hash | seq | body)``. The key lives outside the
database (``key=``, ``key_file=``, or the ``ROUTEGUARD_AUDIT_KEY_FILE`` /
``ROUTEGUARD_AUDIT_KEY`` environment variables), so someone who can write the database but
does not hold the key cannot edit a row and recompute the hashes after it. After each append
the newest (seq, hash) is written, with its own HMAC, to a checkpoint file next to the
database (``<path>.checkpoint``, or ``checkpoint=``); :meth:`AuditLog.verify` (and
``routeguard audit verify PATH``) checks every row against the key and requires the row the
checkpoint names, so deleting the newest rows is caught too. ``docs/enforcement.md`` says
exactly what a successful verification proves and what it cannot.

Logs written before keys existed (plain ``sha256`` rows) stay readable; opened for writing
with a key, they continue with keyed rows, whose first one fixes the unkeyed prefix from then on.

Arguments never go to the log in plain text when they may hold secrets: ``args="redacted"``
(the default) stores them with the decision's redactions masked and every value under a
secret-looking key (``password``, ``token``, ``api_key``...) or shaped like a credential
(``sk-...``, ``Bearer ...``, JWTs, card numbers) replaced by ``[REDACTED]``; ``args="hash"``
stores only a salted digest of the canonical arguments; ``args="omit"`` nothing.
"""

from __future__ import annotations

import hashlib
import hmac
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

from routeguard._native import core
from routeguard.errors import AuditError
from routeguard.sqlite_tx import transaction

__all__ = [
    "GENESIS",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "NEEDS_KEY",
    "ArgsMode",
    "AuditLog",
    "AuditReport",
    "load_key",
    "redact_secrets",
]

GENESIS = "0" * 64
KEYED_PREFIX = "hmac-sha256:"
KEY_FILE_ENV = "ROUTEGUARD_AUDIT_KEY_FILE"
KEY_ENV = "ROUTEGUARD_AUDIT_KEY"
NEEDS_KEY = "keyed rows cannot be checked without the key"
_MIN_KEY = 16
_ROW_DOMAIN = b"routeguard-audit-row-v2"
_CHECKPOINT_DOMAIN = b"routeguard-audit-checkpoint-v1"
_CHECKPOINT_FORMAT = "routeguard-audit-checkpoint-v1"
_CHECKPOINT_BYTES = 512
ArgsMode = Literal["redacted", "hash", "omit"]
_MASK = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|auth|credential|private[-_]?key|"
    r"session[-_]?id|cookie|cvv|cvc|pin$|card[-_]?number|ssn",
    re.IGNORECASE,
)
# On the linear-time engine: arguments can carry attacker-chosen text, and with a
# backtracking engine the JWT branch alone was quadratic ("eyJ-" repeated).
_SECRET_VALUE = core.Regex(
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
        return _mask_credentials(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return _mask_credentials(str(value))


def _mask_credentials(text: str) -> str:
    """``text`` with every credential-shaped run replaced by the mask."""
    spans = _SECRET_VALUE.find_spans(text)
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for a, b in spans:
        out += (text[last:a], _MASK)
        last = b
    out.append(text[last:])
    return "".join(out)


def canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 kept, non-JSON values as strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hash(prev_hash: str, seq: int, body: str) -> str:
    """The unkeyed hash a row of a legacy (pre-key) log carries."""
    h = hashlib.sha256()
    h.update(prev_hash.encode())
    h.update(b"|")
    h.update(str(seq).encode())
    h.update(b"|")
    h.update(body.encode())
    return h.hexdigest()


def row_mac(key: bytes, prev_hash: str, seq: int, body: str) -> str:
    """The keyed hash a row must carry: ``hmac-sha256:`` and the HMAC of its link and body."""
    msg = b"%s|%s|%d|%s" % (_ROW_DOMAIN, prev_hash.encode(), seq, body.encode())
    return KEYED_PREFIX + hmac.new(key, msg, hashlib.sha256).hexdigest()


def checkpoint_mac(key: bytes, seq: int, row: str) -> str:
    """The HMAC a checkpoint naming row ``seq`` (hash ``row``) carries."""
    msg = b"%s|%d|%s" % (_CHECKPOINT_DOMAIN, seq, row.encode())
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def load_key(
    key: bytes | None = None, key_file: str | os.PathLike[str] | None = None
) -> bytes | None:
    """The audit key: ``key``, else ``key_file``, else ``$ROUTEGUARD_AUDIT_KEY_FILE``, else
    ``$ROUTEGUARD_AUDIT_KEY``; None if none is given. Shorter than 16 bytes is refused."""
    where = "key"
    if key is None:
        path = key_file if key_file is not None else os.environ.get(KEY_FILE_ENV) or None
        if path is not None:
            where = f"audit key file {path}"
            try:
                key = Path(path).read_bytes().strip()
            except OSError as e:
                raise AuditError(f"cannot read the {where}: {e.strerror or e}") from None
        elif os.environ.get(KEY_ENV):
            where, key = f"${KEY_ENV}", os.environ[KEY_ENV].encode()
    if key is not None and len(key) < _MIN_KEY:
        raise AuditError(
            f"the audit {where} is too short ({len(key)} bytes); use at least {_MIN_KEY} "
            "random bytes, e.g. `head -c 32 /dev/urandom | base64 > audit.key`"
        )
    return key


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of :meth:`AuditLog.verify`.

    ``ok``: no row breaks the chain (and, with a key, every keyed row's HMAC verifies and the
    checkpoint's row is present). ``authenticated``: ``ok``, a key was used, the newest row is
    keyed and a valid checkpoint was found, so the rows up to the checkpoint are exactly the
    ones written by a holder of the key. ``first_bad``/``reason``: where and why it failed.
    """

    ok: bool
    rows: int
    first_bad: int | None = None  # sequence number (or position) of the first bad row
    reason: str = ""
    authenticated: bool = False
    checkpoint: int | None = None  # the seq the checkpoint named, if one was checked

    def __str__(self) -> str:
        if not self.ok:
            return f"tampered at row {self.first_bad}: {self.reason}"
        if self.authenticated:
            return (
                f"ok: {self.rows} row(s), keyed hash chain intact, checkpoint at row "
                f"{self.checkpoint} present"
            )
        return f"chain intact ({self.rows} row(s)) but NOT authenticated: {self.reason}"


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    seq: int
    row: str
    mac: str


class AuditLog:
    """An append-only, keyed hash-chained decision log in SQLite (``":memory:"`` for tests).

    ``key``/``key_file``: the HMAC key (see :func:`load_key`); required for a file opened
    for writing, random for ``":memory:"``. ``checkpoint``: where the signed head is kept
    (default ``<path>.checkpoint``; kept in memory for ``":memory:"``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        args: ArgsMode = "redacted",
        salt: bytes | None = None,
        readonly: bool = False,
        key: bytes | None = None,
        key_file: str | os.PathLike[str] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> None:
        if args not in ("redacted", "hash", "omit"):
            raise AuditError(f"audit args mode {args!r}: expected redacted, hash or omit")
        self.path = str(path)
        self.args_mode: ArgsMode = args
        self._salt = salt if salt is not None else os.urandom(16)
        self._lock = threading.Lock()
        memory = self.path == ":memory:"
        self._key = load_key(key, key_file)
        if self._key is None and memory:
            self._key = os.urandom(32)  # nothing outlives the process: an ephemeral key
        if self._key is None and not readonly:
            raise AuditError(
                f"audit log {self.path} needs a key kept outside the database: set "
                f"{KEY_FILE_ENV} to a file of at least {_MIN_KEY} random bytes (e.g. "
                "`head -c 32 /dev/urandom | base64 > /etc/routeguard/audit.key`) or pass key_file="
            )
        self.checkpoint_path: Path | None = (
            Path(checkpoint) if checkpoint is not None else
            None if memory else Path(self.path + ".checkpoint")
        )  # fmt: skip
        self._memory_checkpoint: _Checkpoint | None = None
        self._checkpoint_fd: int | None = None
        try:
            if readonly:
                uri = Path(self.path).resolve().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
                self._db.execute("SELECT seq, body, prev_hash, hash FROM audit LIMIT 1")
            else:
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                if not memory:
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise AuditError(f"cannot open audit log {self.path}: {e}") from None
        if not readonly:
            self._init_checkpoint()

    @classmethod
    def open_existing(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        key_file: str | os.PathLike[str] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> AuditLog:
        """Open an existing log file read-only (for verification); the key is optional here."""
        p = Path(path)
        if not p.is_file():
            raise AuditError(f"audit log {p} does not exist")
        return cls(p, readonly=True, key=key, key_file=key_file, checkpoint=checkpoint)

    @property
    def keyed(self) -> bool:
        """Whether this log holds a key (it can write and authenticate keyed rows)."""
        return self._key is not None

    def close(self) -> None:
        """Close the database (and the checkpoint file)."""
        with self._lock:
            self._db.close()
            if self._checkpoint_fd is not None:
                os.close(self._checkpoint_fd)
                self._checkpoint_fd = None

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

    # ---- checkpoints ------------------------------------------------------------------------

    def _init_checkpoint(self) -> None:
        """A new (or pre-key) log gets its first checkpoint now, so deleting it shows; an
        existing checkpoint must match the log (a truncated or replaced log is not reused)."""
        cp = self._read_checkpoint()
        if cp is None:
            seq, h = self.head()
            self._write_checkpoint(seq, h)
            return
        key = self._key
        problem = cp if isinstance(cp, str) else ""
        if isinstance(cp, _Checkpoint) and key is not None:
            if not hmac.compare_digest(checkpoint_mac(key, cp.seq, cp.row), cp.mac):
                problem = "its checkpoint does not verify with this key (wrong key, or forged)"
            elif cp.seq > 0:
                with self._lock:
                    got = self._db.execute(
                        "SELECT hash FROM audit WHERE seq = ?", (cp.seq,)
                    ).fetchone()
                if got is None or got[0] != cp.row:
                    problem = f"row {cp.seq}, named by its checkpoint, is gone or changed"
        if problem:
            self._db.close()
            raise AuditError(
                f"audit log {self.path}: {problem}; run `routeguard audit verify {self.path}`, "
                "and to start a new log move the file and its checkpoint aside"
            )

    def _write_checkpoint(self, seq: int, row: str) -> None:
        key = self._key
        if key is None:  # pragma: no cover - writers always hold a key
            raise AuditError("cannot checkpoint an audit log without its key")
        cp = _Checkpoint(seq, row, checkpoint_mac(key, seq, row))
        if self.checkpoint_path is None:
            self._memory_checkpoint = cp
            return
        data = json.dumps({"format": _CHECKPOINT_FORMAT, "seq": seq, "hash": row, "mac": cp.mac})
        # One fixed-size write at offset 0 of a file kept open: far cheaper per append than
        # write-and-rename, and a single small write never leaves a shorter file behind.
        buf = (data + "\n").encode().ljust(_CHECKPOINT_BYTES)
        try:
            if self._checkpoint_fd is None:
                self._checkpoint_fd = os.open(self.checkpoint_path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(self._checkpoint_fd, buf, 0)
        except OSError as e:
            raise AuditError(
                f"cannot write audit checkpoint {self.checkpoint_path}: {e.strerror or e}"
            ) from None

    def _read_checkpoint(self) -> _Checkpoint | str | None:
        """The stored checkpoint, None if there is none, or why it cannot be read."""
        if self.checkpoint_path is None:
            return self._memory_checkpoint
        try:
            raw = self.checkpoint_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            return f"cannot read the checkpoint {self.checkpoint_path}: {e}"
        try:
            d = json.loads(raw)
            ok = (
                isinstance(d, dict) and d.get("format") == _CHECKPOINT_FORMAT
                and isinstance(d.get("seq"), int) and isinstance(d.get("hash"), str)
                and isinstance(d.get("mac"), str)
            )  # fmt: skip
        except ValueError:
            ok = False
        if not ok:
            return f"the checkpoint {self.checkpoint_path} is malformed"
        return _Checkpoint(d["seq"], d["hash"], d["mac"])

    # ---- writing and reading ----------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> tuple[int, str]:
        """Append one record (its ``args`` key is stored per the args mode); returns (seq, hash)."""
        key = self._key
        if key is None:
            raise AuditError(f"audit log {self.path} was opened read-only (no key)")
        rec = dict(record)
        if "args" in rec:
            rec["args"] = self._args_field(rec["args"])
        rec.setdefault("ts", time.time())
        body = canonical(rec)
        with self._lock:
            try:
                with transaction(self._db, immediate=True):
                    last = self._db.execute(
                        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                    ).fetchone()
                    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                    h = row_mac(key, prev, seq, body)
                    self._db.execute(
                        "INSERT INTO audit (seq, body, prev_hash, hash) VALUES (?, ?, ?, ?)",
                        (seq, body, prev, h),
                    )
            except sqlite3.Error as e:
                raise AuditError(f"cannot append to audit log {self.path}: {e}") from None
            # After the commit: a checkpoint never names a row that is not there. Another
            # process may leave it one row behind; rows past it are still keyed.
            self._write_checkpoint(seq, h)
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

    # ---- verification -----------------------------------------------------------------------

    def verify(self, *, anchor: tuple[int, str] | None = None) -> AuditReport:
        """Walk the chain in storage order; report the first row that breaks it.

        With the key: every keyed row's HMAC must verify, unkeyed (legacy) rows may only
        precede the keyed ones, and the checkpoint must carry a valid HMAC and name a row
        that is still there unchanged. Without the key (a read-only open) only the chain's
        shape and the legacy rows are checked, and the report is not ``authenticated``.
        ``anchor``: a (seq, hash) from :meth:`head` kept elsewhere; that row must be present.
        """
        # The checkpoint first: an append racing this walk can only make the rows newer.
        cp = self._read_checkpoint()
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid, seq, body, prev_hash, hash FROM audit ORDER BY rowid"
                ).fetchall()
        except sqlite3.Error as e:
            raise AuditError(f"cannot read audit log {self.path}: {e}") from None
        key = self._key
        prev, expected = GENESIS, 1
        keyed_seen = False
        hashes: dict[int, str] = {}
        for n, (_rowid, seq, body, prev_hash, h) in enumerate(rows, 1):
            where = seq if isinstance(seq, int) else n

            def bad(reason: str, where: int = where, done: int = n - 1) -> AuditReport:
                return AuditReport(False, done, where, reason)

            if seq != expected:
                what = "missing" if isinstance(seq, int) and seq > expected else "out of order"
                return bad(f"expected row {expected}, found {seq} (rows {what})")
            if prev_hash != prev:
                return bad("does not link to the previous row's hash")
            if not isinstance(body, str) or not isinstance(h, str):
                return bad("content does not match its hash (edited)")
            if h.startswith(KEYED_PREFIX):
                keyed_seen = True
                if key is not None and not hmac.compare_digest(row_mac(key, prev, seq, body), h):
                    return bad("content does not match its keyed hash (edited without the key)")
            elif keyed_seen:
                return bad("an unkeyed row after keyed rows (rewritten without the key)")
            elif row_hash(prev, seq, body) != h:
                return bad("content does not match its hash (edited)")
            hashes[seq] = h
            prev, expected = h, expected + 1
        count = len(rows)
        if anchor is not None and anchor != (0, GENESIS) and hashes.get(anchor[0]) != anchor[1]:
            gone = anchor[0] not in hashes
            why = "the anchored row is gone (log truncated)" if gone else (
                "differs from the anchored head"
            )  # fmt: skip
            return AuditReport(False, count, anchor[0], why)
        if key is None:
            why = (
                f"{NEEDS_KEY} (set {KEY_FILE_ENV} or pass the key file)" if keyed_seen else
                "an unkeyed (legacy) log: its hashes can be recomputed by anyone who can "
                "write the file"
            )  # fmt: skip
            return AuditReport(True, count, reason=why)
        if isinstance(cp, str):
            return AuditReport(False, count, None, cp)
        if cp is None:
            if not keyed_seen:
                return AuditReport(
                    True, count, reason="an unkeyed (legacy) log without a checkpoint"
                )
            return AuditReport(False, count, None, "the checkpoint is missing (deleted?)")
        if not hmac.compare_digest(checkpoint_mac(key, cp.seq, cp.row), cp.mac):
            return AuditReport(
                False, count, cp.seq, "the checkpoint's HMAC does not verify (forged)"
            )
        if cp.seq > 0 and hashes.get(cp.seq) != cp.row:
            why = (
                f"the checkpoint names row {cp.seq}, which is gone (log truncated)"
                if cp.seq not in hashes else f"row {cp.seq} differs from the checkpoint"
            )  # fmt: skip
            return AuditReport(False, count, cp.seq, why)
        if rows and not keyed_seen:
            return AuditReport(
                True, count, reason="no keyed row yet: the unkeyed rows are not authenticated",
                checkpoint=cp.seq,
            )  # fmt: skip
        return AuditReport(True, count, authenticated=True, checkpoint=cp.seq)
