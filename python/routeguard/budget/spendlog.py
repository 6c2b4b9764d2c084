"""SpendLog: the in-process budget's write-through log in SQLite, so spend survives a restart.

Data flow: every settlement (and every late charge) of :class:`~routeguard.budget.memory.
MemoryBudget` is appended at once, as one line, to this process's journal beside the
database (``<database>-spend-<pid>-<random>.journal``: a segment whose space is reserved
and mapped up front, so a line is copied into the page cache with no system call, no thread
and no lock file), and queued as one row ``(ts, request_id, chain, amount)`` for a writer thread.
The writer, woken by the first row of a batch, lets rows gather for ``linger_s`` (a second by
default) and commits them in one statement to the same SQLite file as the virtual keys
(``server.database``); before it takes a batch it starts a fresh journal, and once every row
of the old one is committed it deletes it. So a process killed at any point (SIGKILL
included) loses no settlement it made: its journal stays behind, and the next SpendLog to
open the database (at start, or before a compaction) takes it in, under the journal's lock
(held by its owner for its whole life, so a live process's journal is never read), skipping
rows the database already holds, each matched once by stamp, request id, chain and amount
(the owner died between its commit and the delete). The event loop pays one small copy
per settlement and never waits on SQLite; the writer commits about once a second instead of
once per few milliseconds.

On start the rows are read back and grouped by account; when an account is registered (at
start, or later for a virtual key's own account) its rows are charged to the ledger again:
for a calendar period only the rows of the current window, for a rolling window only the rows
still inside it, for ``total`` all of them. A process killed before settling leaves nothing
to replay, as its hold only ever lived in memory.

Compaction keeps the file (and the start-up replay) small: rows older than ``keep_s`` (an
hour by default) are folded into one row per chain and 15-minute bucket, stamped just before
the bucket's end. Every calendar boundary (midnight, week, month in any time zone: UTC
offsets are whole quarter hours) falls on a bucket edge, so calendar windows and ``total``
sums are restored exactly; a rolling window sees folded spend up to 15 minutes longer than
the rows themselves would say, which errs towards refusing, never towards overspend. It
runs when the log opens and then every ``keep_s`` on the writer thread, each time after the
journals left by dead processes are taken in (so a journal's rows are always matched
before compaction can fold them); request ids of folded rows are not kept.

Durability: a journal line is in the OS's page cache once ``append`` returns, so it survives
the process; SQLite runs in WAL mode with ``synchronous=NORMAL``, so a committed batch does
too. An OS crash or power loss may lose the last writes of both (as it may lose SQLite's last
commits); a line cut short by one, or by a kill in the middle of its copy (bytes not yet
stored read as zeros, as does the reserved space after the last line), is skipped when the
journal is read. A segment whose space cannot be reserved is written with ``pwrite``; a
journal that cannot be written (a full disk) is logged once and the settlements still reach
SQLite through the writer, as before journals existed.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import glob
import logging
import math
import mmap
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from routeguard.budget.ledger import MAX_AMOUNT
from routeguard.handoff import Handoff, drain
from routeguard.sidecar import NOFOLLOW, trusted
from routeguard.sqlite_tx import insert_rows, transaction

log = logging.getLogger("routeguard.budget")
BUCKET_S = 900.0  # every UTC offset, hence every calendar boundary, is a whole quarter hour
FOLDED = "compacted"  # the request id of a folded row
RETRY_S = 60.0  # how long a batch the database refuses is retried before it is dropped
Row = tuple[float, str, str, int]  # (ts, request id, chain joined by spaces, micro-USD)
_row_decoder = msgspec.json.Decoder(tuple[float, str, str, int])
_encode = msgspec.json.Encoder().encode


SEGMENT_BYTES = 1 << 20  # a segment's space, reserved and mapped up front (~10k settlements)


class _Segment:
    """One journal file: its descriptor (locked), its path, the mapping its lines are copied
    into (None when its space could not be reserved) and where the next line goes. A line
    past the mapped space, or in a file without a mapping, is written at that offset."""

    __slots__ = ("end", "fd", "map", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.end = 0
        self.map: mmap.mmap | None = None
        try:
            # Blocks reserved before the mapping is written: a full disk then cannot turn
            # a store into the page into a SIGBUS.
            os.posix_fallocate(fd, 0, SEGMENT_BYTES)
            self.map = mmap.mmap(fd, SEGMENT_BYTES)
        except (OSError, ValueError, AttributeError):
            self.map = None  # no reserved space (or no posix_fallocate): plain writes

    def write(self, line: bytes) -> None:
        """Put ``line`` after the last one (OSError from a write that failed)."""
        start = self.end
        end = start + len(line)
        mapped = self.map
        if mapped is not None and end <= SEGMENT_BYTES:
            mapped[start:end] = line  # in the page cache now: it outlives the process
            self.end = end
        else:
            self.end = start + os.pwrite(self.fd, line, start)

    def close(self) -> None:
        """Unmap and close (the lock goes with the descriptor)."""
        if self.map is not None:
            self.map.close()
            self.map = None
        os.close(self.fd)


class _Journal:
    """One process's journal: settlements appended as JSON lines before they are committed,
    in segments the writer starts afresh before each batch (see the module docstring)."""

    def __init__(self, database: str) -> None:
        self._real = os.path.realpath(database)
        self._db_stat = os.stat(self._real)
        self._lock = threading.Lock()  # a write and the swap of segments exclude each other
        self._failed = False
        self.rows = 0
        """Rows appended to the current segment (the writer retires a segment with rows)."""
        self.since = math.inf
        """The oldest stamp in the current segment (compaction folds none from there on)."""
        self._segment: _Segment | None = self._open()

    @property
    def path(self) -> str | None:
        """The current segment's file (None once closed)."""
        segment = self._segment
        return None if segment is None else segment.path

    def _open(self) -> _Segment:
        """A fresh segment, locked for this process's life."""
        for _ in range(3):
            path = f"{self._real}-spend-{os.getpid()}-{secrets.token_hex(6)}.journal"
            mode = self._db_stat.st_mode & 0o666
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW  # read too: to be mapped
            fd = os.open(path, flags, mode)
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, mode)  # the database's mode, whatever the umask
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                os.unlink(path)
                raise
            if os.fstat(fd).st_nlink:
                return _Segment(fd, path)
            # Another process taking in journals found it, not yet locked, empty, and
            # deleted it: what went on being written there would never be read.
            os.close(fd)
        raise OSError(errno.EAGAIN, "journal segments deleted before they were locked")

    def append(self, row: Row, queue: Callable[[Row], object]) -> None:
        """Append ``row`` as one line, then ``queue`` it for the writer, both before a swap
        of segments or both after (so a segment's rows are queued when it is retired). A
        full disk: logged once, the row still reaches SQLite through the writer."""
        line = _encode(row) + b"\n"
        with self._lock:
            queue(row)
            self.rows += 1
            if row[0] < self.since:
                self.since = row[0]
            segment = self._segment
            if segment is None:
                return  # closed: the writer alone carries it (see SpendLog._retire_journal)
            try:
                segment.write(line)
            except OSError as exc:
                if not self._failed:
                    self._failed = True
                    log.error(
                        "budget spend log: journal %s cannot be written (%s): settlements not "
                        "yet committed would not survive a crash",
                        segment.path, exc.strerror,
                    )  # fmt: skip

    def rotate(self) -> _Segment:
        """Start a new segment; returns the old one for :meth:`retire`."""
        fresh = self._open()
        with self._lock:
            old = self._segment
            if old is not None:
                self._segment = fresh
                self.rows = 0
                self.since = math.inf
        if old is None:  # closed meanwhile (at exit, the writer still running): not reopened
            self.retire(fresh, committed=True)
            raise OSError(errno.EBADF, "journal closed")
        return old

    @staticmethod
    def retire(segment: _Segment, *, committed: bool) -> None:
        """Close an old segment: deleted when its rows are committed, else left (unlocked)
        for the next reader of the database to take in."""
        if committed:
            try:
                os.unlink(segment.path)
            except OSError as exc:
                log.warning("budget spend log: journal %s not removed (%s)", segment.path,
                            exc.strerror)  # fmt: skip
        segment.close()

    def close(self, *, committed: bool) -> None:
        """Retire the current segment (see :meth:`retire`); appends after it write nothing
        (never to whatever file reuses the descriptor's number)."""
        with self._lock:
            segment, self._segment = self._segment, None
            if segment is not None:
                self.retire(segment, committed=committed)

    def forget(self) -> None:
        """In a forked child: drop the parent's segment without writing, deleting or
        unlocking it (the parent's descriptor keeps the lock; the mapping is unmapped here
        only)."""
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.close()


def take_in_journals(db: sqlite3.Connection, database: str) -> int:
    """Commit the rows of journals whose process died (not locked) that the database does not
    hold yet (whole rows, each matched once), then delete them; returns the rows added. Files that
    are not the database's owner's, or that others may write, are left alone and logged."""
    real = os.path.realpath(database)
    db_stat = os.stat(real)
    added = 0
    for path in sorted(glob.glob(glob.escape(real) + "-spend-*.journal")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)  # a FIFO: no wait
        except OSError:
            continue  # taken in and deleted by another process meanwhile, or a symlink
        try:
            st = os.fstat(fd)
            if st.st_nlink == 0:
                continue  # taken in and deleted by another process since our open
            if not trusted(st, db_stat):
                log.warning("budget spend log: %s is not a file of the database's owner, "
                            "protected as the database is; not read", path)  # fmt: skip
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its process is alive (or another one is taking it in)
            if os.fstat(fd).st_nlink == 0:
                continue  # taken in and deleted between our open and our lock
            rows = _read_rows(fd, path)
            if rows:
                with transaction(db, immediate=True):
                    # Whole rows, once each: a request id may be settled more than once.
                    have = Counter(db.execute(
                        "SELECT ts, request_id, chain, amount FROM spend WHERE ts BETWEEN ? AND ?",
                        (min(r[0] for r in rows), max(r[0] for r in rows))))  # fmt: skip
                    new = []
                    for r in rows:
                        if have[r]:
                            have[r] -= 1
                        else:
                            new.append(r)
                    if new:
                        insert_rows(db, "spend", 4, new)
                if new:
                    log.warning(
                        "budget spend log: %d settlement(s) of a process that died before "
                        "committing them taken in from %s", len(new), path,
                    )  # fmt: skip
                added += len(new)
            os.unlink(path)
        finally:
            os.close(fd)  # the lock goes with it
    return added


def _read_rows(fd: int, path: str) -> list[Row]:
    """The well-formed rows of a journal (a line cut short by a crash, or anything else that
    is not a settlement, is skipped and counted in a warning)."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    data = b"".join(chunks)
    rows: list[Row] = []
    bad = 0
    for piece in data.split(b"\n"):
        line = piece.rstrip(b"\0")  # the reserved space after the last line reads as zeros
        if not line:
            continue
        try:
            row = _row_decoder.decode(line)
        except msgspec.DecodeError:
            bad += 1
            continue
        if 0 < row[3] <= MAX_AMOUNT and math.isfinite(row[0]) and row[1] != FOLDED:
            rows.append(row)
        else:
            bad += 1
    if bad:
        log.warning("budget spend log: %d line(s) of %s are not settlements; skipped", bad, path)
    return rows


class SpendLog:
    """Append-only settlements in SQLite, replayed per account on start."""

    def __init__(
        self,
        path: str | Path,
        *,
        keep_s: float = 3600.0,
        linger_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the log in the SQLite file at ``path``; rows older than
        ``keep_s`` by ``clock`` are folded, rows wait up to ``linger_s`` to be committed
        together (see the module docstring)."""
        self._path = str(path)
        self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
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
        self._take_in_journals()
        self.compact(clock() - keep_s)
        self._compacted_at = time.monotonic()
        with self._lock:
            rows = self._db.execute("SELECT ts, chain, amount FROM spend ORDER BY ts").fetchall()
        self._handoff: Handoff[tuple[float, str, str, int]] = Handoff(
            "budget spend log", linger=linger_s, logger=log
        )  # no cap: a settlement is never dropped
        self._journal: _Journal | None = None
        if self._path not in ("", ":memory:") and not self._path.startswith("file:"):
            try:
                self._journal = _Journal(self._path)
            except OSError as exc:
                log.error("budget spend log: no journal beside %s (%s): settlements not yet "
                          "committed would not survive a crash", self._path, exc)  # fmt: skip
        # The current segment holds rows a failed commit dropped: kept when it is retired.
        self._kept = False
        self._writer = threading.Thread(target=self._write, name="routeguard-spendlog", daemon=True)
        self._writer.start()
        _OPEN.add(self)
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
            row = (ts, request_id, " ".join(chain), amount)
            if self._journal is not None:
                self._journal.append(row, self._handoff.put)
            else:
                self._handoff.put(row)

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
            # A fresh journal first: every row of the old one is queued now, so this round
            # commits all of them before the old one is deleted. Also when idle: rows that
            # came after the last swap, committed by now, are not kept until a compaction
            # folds them (their request ids gone, a crash would then count them twice).
            journal = self._journal
            old = self._rotate() if journal is not None and journal.rows else None
            kept = False
            if old is not None:
                kept, self._kept = self._kept, False
            ok = True
            stop = False
            for batch in drain(self._handoff, 4096):
                if batch.items:
                    ok = self._commit(batch.items) and ok
                batch.done()
                stop = batch.stop
            if old is not None:
                _Journal.retire(old, committed=ok and not kept)
            if stop:
                return
            self._maybe_compact()

    def _retire_journal(self, *, committed: bool) -> None:
        """Close this log's journal (deleted when ``committed``); later settlements reach
        SQLite through the writer alone."""
        journal, self._journal = self._journal, None
        if journal is not None:
            journal.close(committed=committed)

    def _at_exit(self) -> None:
        """At interpreter exit (a log the program never closed, as a gateway's is not):
        commit what is queued and remove the journal, unless a row could not be committed."""
        if self._journal is not None and self._writer.is_alive():
            done = self._handoff.flush(self._writer, 10.0)
            self._retire_journal(committed=done and not self._kept)

    def _rotate(self) -> _Segment | None:
        """Start a fresh journal segment (writer thread); None without a journal, or when a
        new one cannot be made (the rows stay in the current one until a later round)."""
        if self._journal is None:
            return None
        try:
            return self._journal.rotate()
        except OSError as exc:
            log.warning("budget spend log: no new journal segment (%s)", exc.strerror)
            return None

    def _take_in_journals(self) -> None:
        """Commit what journals of dead processes hold (see :func:`take_in_journals`)."""
        if self._path in ("", ":memory:") or self._path.startswith("file:"):
            return
        try:
            with self._lock:
                take_in_journals(self._db, self._path)
        except (OSError, sqlite3.Error) as exc:  # busy, or unreadable: the journals stay
            log.warning("budget spend log: journals of other processes not taken in (%s)", exc)

    def _commit(self, batch: list[tuple[float, str, str, int]]) -> bool:
        """Insert ``batch`` in one transaction (writer thread only). While another writer
        holds the file past SQLite's busy timeout the batch waits and is retried (a failed
        write killed the writer: no settlement was logged again), for up to
        :data:`RETRY_S`; then it is dropped, logged as an error (False; its journal is left
        for the next start to take in)."""
        waited = 0.0
        while True:
            try:
                with self._lock:
                    insert_rows(self._db, "spend", 4, batch)
                    # A row stamped before the folded edge: the next compaction reaches it.
                    self._folded_to = min(self._folded_to, min(r[0] for r in batch))
                if waited:
                    log.info("budget spend log: written again after %.1f s", waited)
                return True
            except sqlite3.Error as exc:
                if waited >= RETRY_S:
                    self._kept = True  # some of its rows may be in the current segment
                    log.error(
                        "budget spend log: %d settlement(s) of %d micro-USD not written (%s): "
                        "left in the journal for the next start to take in",
                        len(batch), sum(r[3] for r in batch), exc,
                    )  # fmt: skip
                    return False
                if not waited:
                    log.warning("budget spend log: cannot write (%s); retrying", exc)
                time.sleep(0.5)
                waited += 0.5

    def _maybe_compact(self) -> None:
        """Compact if ``keep_s`` passed since the last time (writer thread only)."""
        if time.monotonic() - self._compacted_at >= self._keep_s:
            self._compacted_at = time.monotonic()
            try:
                self._take_in_journals()  # before folding: their rows are matched by id
                # Nor the rows of this process's live segment, committed or not.
                journal = self._journal
                since = math.inf if journal is None else journal.since
                self.compact(min(self._clock() - self._keep_s, since))
            except sqlite3.Error as exc:  # the file is busy: compacted next time
                log.warning("budget spend log: not compacted (%s)", exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is committed; False if ``timeout`` passed first."""
        return self._handoff.flush(self._writer, timeout)

    def take(self, account: str) -> list[tuple[float, int]]:
        """The logged ``(ts, amount)`` rows of ``account``, oldest first, handed out once."""
        return self._pending.pop(account, [])

    def close(self) -> None:
        """Write out what is queued, stop the writer, remove the journal (kept if its rows
        could not be committed) and close the database."""
        self._handoff.stop(self._writer, None)
        self._retire_journal(committed=not self._kept and not self._writer.is_alive())
        with self._lock:
            self._db.close()


_OPEN: weakref.WeakSet[SpendLog] = weakref.WeakSet()


def _forget_journals() -> None:
    """In a forked child: the journals are the parent's (same descriptors, same lock), never
    to be written, deleted or kept locked here; the child's settlements go to the queue."""
    for spend_log in list(_OPEN):
        journal, spend_log._journal = spend_log._journal, None
        if journal is not None:
            journal.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_journals)


@atexit.register
def _retire_journals() -> None:
    """Remove the journals of the logs still open at exit once their rows are committed (a
    journal left behind is taken in at the next start all the same: this only tidies)."""
    for spend_log in list(_OPEN):
        spend_log._at_exit()
