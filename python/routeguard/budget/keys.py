"""Virtual keys: the credentials clients send, and what each one may do.

A key is shown once, at creation or rotation (``sk-rg-`` + 43 url-safe characters, 256
bits); only its keyed hash (HMAC-SHA256 under the store's secret) is stored, so a leaked
database yields no usable key. Authentication hashes the presented token and looks the
digest up, comparing in constant time; a revoked or expired key fails at once.

Each record carries the identity chain the budget layer charges (key -> user -> team ->
org), scopes (allowed models/aliases), limits (max budget, rpm, tpm), an expiry and free
metadata. The store also keeps the records of LiteLLM's teams, users, customers and
organizations (:mod:`routeguard.budget.directory`), as JSON blobs named ``<kind>/<id>``, in
the same places and with the same reloading. Records live in SQLite (the embedded default;
``":memory:"`` keeps nothing) with an in-process map from digest to record in front. Before
each lookup the store asks SQLite whether another connection committed since it last looked
(``PRAGMA data_version``, no disk read when nothing changed); when one did, it reads the
journal that triggers on the ``keys`` and ``entities`` tables append to (which row changed,
in order) past the last entry it took in, and re-reads only those rows. The budget's spend
log and the request records commit to the same file on every request and journal nothing;
a key made in another worker costs the others one row each, not a reload of every key. A
journal pruned past what a store has seen, a long run of changes or a changed schema makes
it reload everything. So a key made, rotated or revoked by ``routeguard keys`` in another
process counts on the next request that presents it.

Those other commits would still make every look re-read a few pages of the file, so a
store first reads a change mark: eight bytes in a file beside the database (``<database>-
keymark``, memory-mapped) that every store replaces with fresh random bytes after each of its
writes. While the mark is what it was at the last look, the look costs no SQLite call; a
writer that does not set it (the ``sqlite3`` shell, an older routeguard) is seen by the full
look a store makes at least every :data:`FULL_LOOK_S` anyway; that look also maps the mark
again when its file was replaced. The mark takes the database's mode and owner (as SQLite's
``-wal`` does) and sits beside its real path; where it cannot be made (a read-only
directory) or is not one to trust (a symlink, another user's file), every look is a full
one. A database that cannot be read raises KeyStoreUnavailable (503) on every look until it
can be: authentication fails closed.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import mmap
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from routeguard._native import core
from routeguard.budget.accounts import Period
from routeguard.config.wildcards import compile_pattern
from routeguard.errors import AuthenticationError, InvalidRequest, RouteguardError
from routeguard.sidecar import NOFOLLOW, trusted
from routeguard.sqlite_tx import transaction

KEY_PREFIX = "sk-rg-"
_enc = msgspec.json.Encoder()
log = logging.getLogger("routeguard.budget")

FULL_LOOK_S = 1.0
"""Longest a store goes without asking SQLite itself for other connections' commits (the
change mark stands in between; see the module docstring)."""


class KeySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What an admin may set on a key (create and update)."""

    name: str | None = None
    user: str | None = None
    team: str | None = None
    org: str | None = None
    models: list[str] | None = None  # allowed aliases; None = all
    max_budget: float | None = None  # USD, on the key's own account
    budget_period: str = "monthly"
    rpm: int | None = None
    tpm: int | None = None
    expires_at: float | None = None  # unix seconds
    metadata: dict[str, Any] = {}
    # An admin key may read the dashboard (/ui) and decide pending approvals; key and
    # budget management (/admin/*) stays with the master key.
    admin: bool = False


class KeyRecord(msgspec.Struct, kw_only=True):
    """A stored key: everything but the secret itself."""

    key_id: str
    digest: str
    last4: str
    created_at: float
    spec: KeySpec
    revoked: bool = False

    def public(self) -> dict[str, Any]:
        """The record as the admin API shows it (no digest)."""
        return {
            "key_id": self.key_id,
            "key_hint": f"{KEY_PREFIX}...{self.last4}",
            "created_at": self.created_at,
            "revoked": self.revoked,
            **msgspec.structs.asdict(self.spec),
        }

    def usable(self, now: float) -> bool:
        """Not revoked and not expired."""
        exp = self.spec.expires_at
        return not self.revoked and (exp is None or now < exp)

    def allows(self, alias: str) -> bool:
        """Whether the key may call ``alias``: listed, or matched by a listed pattern
        (``openai/*``, ``claude-*``: LiteLLM's wildcard model access)."""
        models = self.spec.models
        if models is None or alias in models:
            return True
        return any("*" in m and _pattern(m).match(alias) is not None for m in models)


@functools.lru_cache(maxsize=1024)
def _pattern(model: str) -> re.Pattern[str]:
    return compile_pattern(model)


class KeyStoreUnavailable(RouteguardError):
    """The key store could not be read or written: requests fail closed (503)."""

    status_code = 503
    error_type = "api_error"
    code = "key_store_unavailable"


class KeyStore:
    """Virtual keys in SQLite, with an in-memory digest index for authentication."""

    shared = False
    """Whether other instances see this store's writes (the Redis store: they do)."""

    def __init__(self, path: str | Path = ":memory:", *, secret: str | None = None) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, KeyRecord] = {}
        self._by_digest: dict[str, KeyRecord] = {}
        self._entities: dict[str, bytes] = {}
        self._path = str(path)
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, record BLOB NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS entities (name TEXT PRIMARY KEY, record BLOB NOT NULL)"
            )
            _journal_changes(self._db)
            row = self._db.execute("SELECT value FROM meta WHERE name='hash_secret'").fetchone()
            if secret is None:
                if row is None:
                    secret = secrets.token_hex(32)
                    self._db.execute("INSERT INTO meta VALUES ('hash_secret', ?)", (secret,))
                else:
                    secret = str(row[0])
            self._secret = secret.encode()
            self._mark = _ChangeMark.beside(self._path)
            self._last_mark = b""
            self._look_by = 0.0
            self._version = self._data_version()
            self._reload()

    def __len__(self) -> int:
        return len(self._records)

    def _data_version(self) -> int:
        """SQLite's counter of commits by *other* connections (the caller holds the lock)."""
        row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _journal_end(self) -> tuple[int, int]:
        """The last journal entry (0 when none) and the schema's version (a dropped or
        altered table journals nothing); the caller holds the lock."""
        row = self._db.execute(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM changes), schema_version"
            " FROM pragma_schema_version"
        ).fetchone()
        return int(row[0]), int(row[1])

    def _reload(self) -> None:
        """Read everything again, the journal's end first: a write landing in between is
        read now and once more on the next look, never missed (the caller holds the lock).
        The end counts as seen only once everything is read: a failed read is done again."""
        seen, schema = self._journal_end()
        self._load()
        self._seen, self._schema = seen, schema

    def _catch_up(self) -> None:
        """Take in the rows the journal names past the last entry seen (the caller holds
        the lock); everything again when that is not possible or not cheaper."""
        seen, schema = self._journal_end()
        if schema != self._schema:
            self._reload()
            return
        if seen == self._seen:
            return
        rows = self._db.execute(
            "SELECT seq, tbl, name FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (self._seen, _CATCH_UP_MAX + 1),
        ).fetchall()
        if not rows or rows[0][0] != self._seen + 1 or len(rows) > _CATCH_UP_MAX:
            self._reload()  # pruned past what this store saw, or a long run of changes
            return
        for tbl, name in dict.fromkeys((str(t), str(n)) for _, t, n in rows):
            if tbl == "keys":
                row = self._db.execute("SELECT record FROM keys WHERE key_id = ?", (name,))
                found = row.fetchone()
                if found is None:
                    self._forget(name)
                else:
                    self._apply(msgspec.json.decode(found[0], type=KeyRecord))
            else:
                row = self._db.execute("SELECT record FROM entities WHERE name = ?", (name,))
                found = row.fetchone()
                if found is None:
                    self._entities.pop(name, None)
                else:
                    self._entities[name] = bytes(found[0])
        self._seen = int(rows[-1][0])

    def _load(self) -> None:
        """Read every record into the in-memory maps (the caller holds the lock)."""
        records = {}
        for (blob,) in self._db.execute("SELECT record FROM keys"):
            rec = msgspec.json.decode(blob, type=KeyRecord)
            records[rec.key_id] = rec
        self._records = records
        self._by_digest = {r.digest: r for r in records.values()}
        self._entities = {
            str(name): bytes(blob)
            for name, blob in self._db.execute("SELECT name, record FROM entities")
        }

    def _sync(self) -> None:
        """Reload when another process changed the database since the last look."""
        if self._path == ":memory:":
            return  # no other connection can see it
        mark = self._mark
        seen = b""
        if mark is not None:
            now = time.monotonic()
            seen = mark.read()  # before SQLite's look: a write marked later is looked at again
            if seen == self._last_mark and now < self._look_by:
                return
        try:
            with self._lock:
                version = self._data_version()
                if version != self._version:
                    self._catch_up()
                    self._version = version  # only once taken in: a failed catch-up is retried
                if mark is None or mark is not self._mark:
                    pass  # no mark, or another look mapped it again meanwhile: read that next
                elif mark.moved():  # map the file new writers mark; look fully once more
                    self._mark, self._look_by = _ChangeMark.beside(mark.database), 0.0
                else:
                    self._last_mark, self._look_by = seen, now + FULL_LOOK_S
        except (sqlite3.Error, msgspec.DecodeError) as exc:
            raise KeyStoreUnavailable(
                f"key store {self._path} cannot be read ({type(exc).__name__}): "
                "check the file named by server.database"
            ) from None

    def _missed(self) -> None:
        """Called when no record matches a presented key: stores that cannot be sure raise."""

    @property
    def _secret(self) -> bytes:
        """The HMAC secret presented keys are hashed under (see :meth:`_digest`)."""
        return self._secret_bytes

    @_secret.setter
    def _secret(self, value: bytes) -> None:
        self._secret_bytes = value
        self._digester = core.KeyDigest(value)

    def _digest(self, token: str) -> str:
        """The hex HMAC-SHA256 of ``token`` under the secret (the index key of its record):
        the same bytes as ``hmac.digest(secret, token, "sha256")``, computed in Rust from
        the secret's keyed state, where OpenSSL's by-name call costs more (most so cold)."""
        return self._digester.hex(token)

    def _save(self, rec: KeyRecord) -> None:
        """Write ``rec``; a revoked key stays revoked, whatever a writer holding an older
        copy (another process) sends: refused in the same transaction as the write."""
        with self._lock:
            with self._writing():
                if not rec.revoked:
                    row = self._db.execute(
                        "SELECT record FROM keys WHERE key_id = ?", (rec.key_id,)
                    ).fetchone()
                    if row is not None and msgspec.json.decode(row[0], type=KeyRecord).revoked:
                        raise KeyRevoked(rec.key_id)
                self._db.execute(
                    "INSERT OR REPLACE INTO keys VALUES (?, ?)", (rec.key_id, _enc.encode(rec))
                )
            self._apply(rec)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction of this store's own (the caller holds the lock). The
        journal entries it adds count as seen, unless another process wrote since the
        last look (the next look takes in both); entries past :data:`_JOURNAL_KEEP` go."""
        with transaction(self._db, immediate=True):
            before = self._journal_end()
            yield
            after = self._journal_end()
            self._db.execute("DELETE FROM changes WHERE seq <= ?", (after[0] - _JOURNAL_KEEP,))
        if before == (self._seen, self._schema):
            self._seen = after[0]
        if self._mark is not None:
            self._mark.change()

    def _forget(self, key_id: str) -> None:
        """Drop ``key_id`` from the in-memory maps (the caller holds the lock)."""
        old = self._records.pop(key_id, None)
        if old is not None:
            self._by_digest.pop(old.digest, None)

    def _apply(self, rec: KeyRecord) -> None:
        """Put ``rec`` in the in-memory maps (the caller holds the lock; authentication,
        which reads them without it, finds the key in every state between: the new entry
        goes in before a rotated-out digest goes)."""
        old = self._records.get(rec.key_id)
        self._records[rec.key_id] = rec
        self._by_digest[rec.digest] = rec
        if old is not None and old.digest != rec.digest:
            self._by_digest.pop(old.digest, None)

    # ------------------------------------------------------- directory records

    def entity(self, name: str, *, sync: bool = True) -> bytes | None:
        """The stored blob named ``<kind>/<id>`` (a team, user, customer or org), or None;
        ``sync=False`` skips the check for other processes' writes (the caller just made it:
        :meth:`sync`)."""
        if sync:
            self._sync()
        return self._entities.get(name)

    def sync(self) -> None:
        """Take in what other processes wrote since the last look (see the module docstring)."""
        self._sync()

    def entities(self, kind: str) -> list[bytes]:
        """Every stored blob of ``kind``."""
        self._sync()
        prefix = kind + "/"
        return [b for n, b in self._entities.items() if n.startswith(prefix)]

    def put_entity(self, name: str, blob: bytes) -> None:
        """Store (or replace) the blob named ``name``."""
        with self._lock:
            with self._writing():
                self._db.execute("INSERT OR REPLACE INTO entities VALUES (?, ?)", (name, blob))
            self._entities[name] = blob

    def delete_entity(self, name: str) -> None:
        """Forget the blob named ``name`` (no error when there is none)."""
        with self._lock:
            with self._writing():
                self._db.execute("DELETE FROM entities WHERE name = ?", (name,))
            self._entities.pop(name, None)

    def create(self, spec: KeySpec | None = None) -> tuple[str, KeyRecord]:
        """A new key: returns the plaintext (shown once) and its stored record."""
        spec = spec or KeySpec()
        _check(spec)
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        rec = KeyRecord(
            key_id="key_" + secrets.token_hex(8),
            digest=self._digest(token),
            last4=token[-4:],
            created_at=time.time(),
            spec=spec,
        )
        self._save(rec)
        return token, rec

    def authenticate(self, token: str, *, now: float | None = None) -> KeyRecord:
        """The usable record for a presented key, or AuthenticationError."""
        digest = self._digest(token)
        self._sync()
        rec = self._by_digest.get(digest)
        if rec is None or not hmac.compare_digest(rec.digest, digest):
            self._missed()
            raise AuthenticationError("invalid API key")
        if rec.revoked:
            raise AuthenticationError(f"API key {rec.key_id} has been revoked")
        if not rec.usable(time.time() if now is None else now):
            raise AuthenticationError(f"API key {rec.key_id} has expired")
        return rec

    def find(self, token_or_id: str) -> KeyRecord:
        """The record of a presented key (revoked or expired too) or of a key id; 404 if
        neither names one (LiteLLM's key endpoints name keys by the key itself)."""
        if not token_or_id.startswith(KEY_PREFIX):
            return self.get(token_or_id)
        digest = self._digest(token_or_id)
        self._sync()
        rec = self._by_digest.get(digest)
        if rec is None or not hmac.compare_digest(rec.digest, digest):
            raise _NotFound("no such key")
        return rec

    def get(self, key_id: str) -> KeyRecord:
        """The record of ``key_id`` (InvalidRequest 404 if unknown)."""
        self._sync()
        rec = self._records.get(key_id)
        if rec is None:
            raise _NotFound(f"no key with id '{key_id}'")
        return rec

    def list(self) -> Sequence[KeyRecord]:
        """Every record, oldest first."""
        self._sync()
        return sorted(self._records.values(), key=lambda r: r.created_at)

    def update(self, key_id: str, changes: dict[str, Any]) -> KeyRecord:
        """Change some fields of a key's spec (validated like creation)."""
        rec = self.get(key_id)
        new = msgspec.structs.replace(rec, spec=self._changed(rec, changes))
        self._save(new)
        return new

    @staticmethod
    def _changed(rec: KeyRecord, changes: dict[str, Any]) -> KeySpec:
        """``rec``'s spec with ``changes`` (InvalidRequest when the result is not valid)."""
        merged = {**msgspec.structs.asdict(rec.spec), **changes}
        try:
            spec = msgspec.convert(merged, KeySpec, strict=True)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"invalid key update: {exc}") from None
        _check(spec)
        return spec

    def rotate(self, key_id: str, changes: dict[str, Any] | None = None) -> tuple[str, KeyRecord]:
        """A new secret for an existing key, with ``changes`` to its spec (validated as
        :meth:`update`'s) in the same write; the old secret stops working at once."""
        rec = self.get(key_id)
        if rec.revoked:
            raise KeyRevoked(key_id)
        if changes:
            rec = msgspec.structs.replace(rec, spec=self._changed(rec, changes))
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        new = msgspec.structs.replace(rec, digest=self._digest(token), last4=token[-4:])
        self._save(new)
        return token, new

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key for good (kept in the store for audit)."""
        new = msgspec.structs.replace(self.get(key_id), revoked=True)
        self._save(new)
        return new

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
            mark, self._mark = self._mark, None  # a look after close asks the closed db: 503
            if mark is not None:
                mark.close()


class _ChangeMark:
    """The change mark beside a key store's database (see the module docstring)."""

    SIZE = 8

    def __init__(self, mapped: mmap.mmap, database: str, mapped_file: os.stat_result) -> None:
        self._map = mapped
        self.database = database  # the real path, resolved once (the cwd may change)
        self._file = (mapped_file.st_dev, mapped_file.st_ino)

    @classmethod
    def beside(cls, database: str) -> _ChangeMark | None:
        """The mark of ``database`` (made if missing), or None where there is none to trust."""
        if database in ("", ":memory:") or database.startswith("file:"):
            return None  # in memory, a private temporary file, a URI: no path to put it beside
        # SQLite follows a symlinked name to the file (one -wal for every name): so does the
        # mark, or a write through one name would go unseen by stores opened by the other.
        real = os.path.realpath(database)
        path = real + "-keymark"
        try:
            db = os.stat(real)
            mode = stat.S_IMODE(db.st_mode) & 0o666
            try:
                fd = os.open(path, _MARK_FLAGS | os.O_CREAT | os.O_EXCL, mode)
                made = True
            except FileExistsError:
                fd = os.open(path, _MARK_FLAGS)  # never through a symlink: ELOOP
                made = False
            try:
                if made:  # the database's mode and owner, whatever the umask (SQLite's -wal too)
                    if hasattr(os, "fchmod"):
                        os.fchmod(fd, mode)
                    if hasattr(os, "fchown") and os.geteuid() == 0:
                        os.fchown(fd, db.st_uid, db.st_gid)
                st = os.fstat(fd)
                if not trusted(st, db):
                    log.warning(
                        "key store %s: %s is not a file of the database's owner, protected as"
                        " the database is; not used: every look asks SQLite",
                        database,
                        path,
                    )
                    return None
                if st.st_size < cls.SIZE:
                    os.ftruncate(fd, cls.SIZE)
                return cls(mmap.mmap(fd, cls.SIZE), real, st)
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:
            log.info("key store %s: no change mark (%s); every look asks SQLite", database, exc)
            return None

    def read(self) -> bytes:
        """The mark's current bytes (none once closed: the look that follows is a full one)."""
        try:
            return self._map[: self.SIZE]
        except ValueError:  # closed by the store's close() after its look took the mark
            return b""

    def moved(self) -> bool:
        """Whether the mark's name now names another file, or none (deleted, replaced):
        writers that open it anew mark that one, not the file mapped here."""
        try:
            st = os.stat(self.database + "-keymark", follow_symlinks=False)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._file

    def change(self) -> None:
        """Set fresh random bytes: every store's next look asks SQLite."""
        self._map[: self.SIZE] = os.urandom(self.SIZE)

    def close(self) -> None:
        """Unmap."""
        self._map.close()


_MARK_FLAGS = os.O_RDWR | NOFOLLOW


class _NotFound(InvalidRequest):
    status_code = 404
    code = "key_not_found"


class KeyRevoked(InvalidRequest):
    """A write that would bring a revoked key back (a rotation, or a stale copy's update)."""

    status_code = 409
    code = "key_revoked"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"key {key_id} has been revoked: it cannot be changed or rotated")


def parse_spec(data: Any) -> KeySpec:
    """A KeySpec from admin-API JSON, as InvalidRequest on bad input."""
    try:
        spec = msgspec.convert(data or {}, KeySpec, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid key spec: {exc}") from None
    _check(spec)
    return spec


def _check(spec: KeySpec) -> None:
    if spec.max_budget is not None and not 0 <= spec.max_budget <= 9e9:
        raise InvalidRequest("max_budget must be from 0 to 9e9 dollars", param="max_budget")
    try:
        Period.parse(spec.budget_period)
    except ValueError as exc:
        raise InvalidRequest(f"budget_period: {exc}", param="budget_period") from None
    for name in ("rpm", "tpm"):
        v = getattr(spec, name)
        if v is not None and v < 1:
            raise InvalidRequest(f"{name} must be at least 1", param=name)
    if spec.models is not None and not all(isinstance(m, str) and m for m in spec.models):
        raise InvalidRequest("models must be a list of model names", param="models")


_JOURNAL_KEEP = 10_000  # journal entries kept: a store further behind reloads everything
_CATCH_UP_MAX = 1_000  # past this many entries to take in, one reload is cheaper


def _journal_changes(db: sqlite3.Connection) -> None:
    """Make every write to ``keys`` and ``entities``, by any process or version, append
    which row it changed to the ``changes`` journal in the writing transaction (the
    triggers are added to a file made by an older routeguard; the caller holds the lock)."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS changes"
        " (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, name TEXT NOT NULL)"
    )
    for table, column in (("keys", "key_id"), ("entities", "name")):
        for event, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")), ("DELETE", ("OLD",))):
            logged = " ".join(
                f"INSERT INTO changes (tbl, name) VALUES ('{table}', {row}.{column});"
                for row in rows
            )
            db.execute(
                f"CREATE TRIGGER IF NOT EXISTS {table}_{event.lower()}_journaled AFTER {event}"
                f" ON {table} BEGIN {logged} END"
            )
