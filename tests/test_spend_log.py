"""The in-process budget survives a restart: settlements are logged to SQLite and charged
again to each account's current window when the next process starts."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from routeguard.budget import spendlog
from routeguard.budget.keys import KeySpec
from routeguard.budget.memory import MemoryBudget
from routeguard.budget.spendlog import SpendLog
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from waiting import eventually

ACCOUNTS: list[dict[str, Any]] = [
    {"name": "org", "limit": 100.0, "period": "total"},
    {"name": "team", "parent": "org", "limit": 10.0, "period": "monthly"},
    {"name": "hourly", "limit": 5.0, "period": "rolling:3600"},
]
NOV_15 = 1_763_200_000.0  # 2025-11-15 09:46 UTC
DEC_2 = NOV_15 + 17 * 86_400


def _budget(db: Path, now: list[float]) -> MemoryBudget:
    return MemoryBudget(ACCOUNTS, clock=lambda: now[0], spend_log=SpendLog(db))


def _restart(old: MemoryBudget, db: Path, now: list[float]) -> MemoryBudget:
    assert old._log is not None
    old._log.close()  # what a shutdown does: the queued rows are written out
    return _budget(db, now)


def test_spend_is_restored_after_a_restart(tmp_path: Path) -> None:
    db, now = tmp_path / "rg.db", [NOV_15]
    first = _budget(db, now)
    for i, amount in enumerate((1_000_000, 250_000, 3)):
        res = first.reserve_sync(["team"], 2_000_000, f"r{i}")
        first.settle_sync(res, amount)
    res = first.reserve_sync(["hourly"], 1_000, "h")
    first.settle_sync(res, 700)
    held = first.reserve_sync(["team"], 500_000, "in-flight")  # dies with the process
    assert held.state == "open"

    now[0] += 60
    second = _restart(first, db, now)
    assert second.spent_sync("team") == second.spent_sync("org") == 1_250_003
    assert second.spent_sync("hourly") == 700
    assert second.reserved_sync("team") == 0  # holds are not persisted: they never spent


def test_windows_that_ended_are_not_restored(tmp_path: Path) -> None:
    db, now = tmp_path / "rg.db", [NOV_15]
    first = _budget(db, now)
    first.settle_sync(first.reserve_sync(["team"], 3_000_000, "a"), 3_000_000)
    first.settle_sync(first.reserve_sync(["hourly"], 10, "b"), 10)
    now[0] = DEC_2  # another month, and long past the rolling hour
    second = _restart(first, db, now)
    assert second.spent_sync("team") == 0
    assert second.spent_sync("hourly") == 0
    assert second.spent_sync("org") == 3_000_000  # a total budget never resets


def test_a_restored_budget_still_refuses_overspend(tmp_path: Path) -> None:
    db, now = tmp_path / "rg.db", [NOV_15]
    first = _budget(db, now)
    first.settle_sync(first.reserve_sync(["team"], 9_500_000, "a"), 9_500_000)
    second = _restart(first, db, now)
    second.reserve_sync(["team"], 500_000, "fits")
    try:
        second.reserve_sync(["team"], 1, "over")
    except Exception as exc:
        assert "team" in str(exc)
    else:
        raise AssertionError("a restarted budget admitted spend past its limit")


async def test_a_keys_budget_survives_a_gateway_restart(tmp_path: Path) -> None:
    with MockServer() as mock:
        dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k",
               "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
        cfg = {"model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
               "server": {"database": str(tmp_path / "rg.db")}}  # fmt: skip
        gw = Gateway.from_config(cfg)
        _, rec = gw.keys.create(KeySpec(max_budget=5.0))
        req = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]}
        for _ in range(3):
            await gw.chat_result(dict(req), key=rec)
        assert gw.budget is not None
        spent = await gw.budget.backend.spent(rec.key_id)
        await gw.aclose()
        assert spent > 0

        again = Gateway.from_config(cfg)
        assert again.budget is not None
        same = again.keys.get(rec.key_id)
        assert again.budget.key_account(same) == rec.key_id
        assert await again.budget.backend.spent(rec.key_id) == spent
        await again.aclose()


COMPACTED: list[dict[str, Any]] = [
    {"name": "org", "limit": 1e6, "period": "total"},
    {"name": "team", "parent": "org", "limit": 1e6, "period": "monthly"},
    {"name": "kathmandu", "parent": "org", "limit": 1e6, "period": "daily",
     "timezone": "Asia/Kathmandu"},  # UTC+05:45: its midnight is a quarter-hour edge
    {"name": "rolling", "limit": 1e6, "period": "rolling:7200"},
]  # fmt: skip


def test_compaction_folds_old_rows_and_restores_the_same_spend(tmp_path: Path) -> None:
    rng = random.Random(7)
    start = NOV_15 - 20 * 86_400  # rows over the 20 days up to now, across a month's edge
    stamps = sorted(start + rng.random() * 20 * 86_400 for _ in range(12_000))
    now = [start]
    plain, folded = tmp_path / "plain.db", tmp_path / "folded.db"
    log = SpendLog(plain, keep_s=1e12, clock=lambda: now[0])  # never compacts
    for i, ts in enumerate(stamps):
        chain = rng.choice([("team", "org"), ("kathmandu", "org"), ("rolling",)])
        log.append(ts, f"r{i}", chain, rng.randrange(1, 10_000))
    log.close()
    folded.write_bytes(plain.read_bytes())  # the same rows, to be compacted
    now[0] = NOV_15
    kept = SpendLog(folded, keep_s=3_600, clock=lambda: now[0])  # compacts as it opens
    rows = len(kept)
    assert rows < 12_000 / 2, "older rows were folded"
    assert kept.compact(NOV_15 - 3_600) == 0, "folding again changes nothing"
    kept.close()
    for when in (NOV_15, NOV_15 + 1_800, NOV_15 + 7_000):
        now[0] = when
        exact = MemoryBudget(
            COMPACTED, clock=lambda: now[0], spend_log=SpendLog(plain, keep_s=1e12)
        )
        again = MemoryBudget(COMPACTED, clock=lambda: now[0], spend_log=SpendLog(folded))
        for name in ("org", "team", "kathmandu"):
            assert again.spent_sync(name) == exact.spent_sync(name), (name, when)
        # a rolling window may see folded spend up to one bucket longer, never shorter
        assert again.spent_sync("rolling") >= exact.spent_sync("rolling")
        assert exact.spent_sync("team") > 0 and exact.spent_sync("kathmandu") > 0
        for budget in (exact, again):
            assert budget._log is not None
            budget._log.close()


def test_compaction_groups_only_the_rows_since_the_last_one(tmp_path: Path) -> None:
    """The writer's hourly compaction holds the database's write lock: it groups the rows
    written since the last one, not every row the log has kept (it regrouped, deleted and
    rewrote them all), counted in SQLite VM steps. A row written later with an older
    stamp is still folded, and the spend restored is the same."""
    now = [NOV_15]
    log = SpendLog(tmp_path / "rg.db", keep_s=1e12, clock=lambda: now[0])
    start = NOV_15 - 30 * 86_400
    for i in range(12_000):  # three rows per bucket and chain: most fold away
        log.append(start + (i // 2) * 300.0, f"r{i}", (f"k{i % 2}", "org"), 5)
    assert log.flush()
    assert log.compact(NOV_15 - 3_600) > 7_000
    kept = len(log)
    for i in range(20):  # newer rows: two buckets of one chain
        log.append(NOV_15 + 60.0 * i, f"n{i}", ("k0", "org"), 7)
    assert log.flush()
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    log._db.set_progress_handler(step, 100)
    now[0] = NOV_15 + 7_200
    assert log.compact(now[0] - 3_600) == 18
    log._db.set_progress_handler(None, 100)
    assert steps[0] < 50, f"{steps[0] * 100} SQLite steps: every kept row was regrouped"
    log.append(start + 86_400 + 1.0, "late", ("k1", "org"), 11)  # into a folded bucket
    assert log.flush()
    assert log.compact(now[0] - 3_600) == 1
    assert len(log) == kept + 2
    log.close()
    budget = MemoryBudget(ACCOUNTS, clock=lambda: now[0], spend_log=SpendLog(tmp_path / "rg.db"))
    assert budget.spent_sync("org") == 12_000 * 5 + 20 * 7 + 11


def test_a_busy_database_delays_settlements_but_never_stops_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer holding the file past SQLite's busy timeout (the spend records, a
    key write, or this log's own compaction in another process) made the insert raise and
    the writer thread die: no settlement was logged again, and a restart forgot them. The
    batch now waits and is written once the file is free."""
    db = tmp_path / "rg.db"
    log = SpendLog(db)
    log._db.execute("PRAGMA busy_timeout = 20")  # not 5 s: the test need not wait
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    log.append(NOV_15, "r1", ["team", "org"], 1_000)

    def tried() -> None:
        assert "cannot write" in caplog.text or not log._writer.is_alive()

    with caplog.at_level(logging.WARNING, logger="routeguard.budget"):
        eventually(tried)
    assert log._writer.is_alive()
    other.execute("COMMIT")
    other.close()
    assert log.flush()
    assert len(log) == 1
    log.close()


def test_the_writer_compacts_while_running(tmp_path: Path) -> None:
    now = [NOV_15]
    log = SpendLog(tmp_path / "rg.db", keep_s=0.2, clock=lambda: now[0])
    for i in range(200):
        log.append(NOV_15 - 86_400 + i, f"r{i}", ("org",), 5)  # one bucket, a day ago

    def folded() -> None:
        assert len(log) == 1, "folded into one row by the writer thread"

    eventually(folded)
    log.close()
    budget = MemoryBudget(ACCOUNTS, clock=lambda: now[0], spend_log=SpendLog(tmp_path / "rg.db"))
    assert budget.spent_sync("org") == 1_000


def test_rows_wait_for_their_batch_but_flush_and_close_do_not(tmp_path: Path) -> None:
    """The writer lets rows gather for ``linger_s`` before one commit; ``flush`` and
    ``close`` cut that wait short (a linger of a minute here: waiting it out fails)."""
    db = tmp_path / "rg.db"
    log = SpendLog(db, linger_s=60.0)
    for i in range(20):
        log.append(NOV_15 + i, f"r{i}", ["team", "org"], 1_000)
    assert log.flush(timeout=5.0)
    assert len(log) == 20
    log.append(NOV_15 + 30, "last", ["team"], 7)  # queued, then written out by close
    log.close()
    reopened = SpendLog(db)
    assert sum(amount for _, amount in reopened.take("team")) == 20 * 1_000 + 7
    reopened.close()


def _journals(db: Path) -> list[Path]:
    return sorted(db.parent.glob(db.name + "-spend-*.journal"))


def _kill_when(script: str, says: str) -> None:
    """Run ``script`` in a fresh interpreter and SIGKILL it once it prints ``says``."""
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == says
        finally:
            proc.kill()
            proc.wait(30)


def test_a_killed_process_loses_no_settlement(tmp_path: Path) -> None:
    """SIGKILL while every settlement is still queued for SQLite (a minute's linger): the
    journal left behind gives all of them to the next process, once."""
    db = tmp_path / "rg.db"
    script = (
        "import sys, time\n"
        "from routeguard.budget.spendlog import SpendLog\n"
        f"log = SpendLog({str(db)!r}, linger_s=60.0)\n"
        "for i in range(50):\n"
        "    log.append(1_763_200_000.0 + i, f'r{i}', ['team', 'org'], 1_000 + i)\n"
        "print('settled', flush=True)\n"
        "time.sleep(600)\n"
    )
    _kill_when(script, "settled")
    assert len(_journals(db)) == 1
    reopened = SpendLog(db)
    assert sum(a for _, a in reopened.take("team")) == sum(1_000 + i for i in range(50))
    assert reopened._journal is not None
    assert [str(p) for p in _journals(db)] == [reopened._journal.path]  # the dead one is gone
    reopened.close()
    again = SpendLog(db)  # taken in once: not again
    assert sum(a for _, a in again.take("org")) == sum(1_000 + i for i in range(50))
    again.close()
    assert _journals(db) == []


def _orphan(db: Path, rows: list[tuple[float, str, str, int]], tail: bytes = b"") -> Path:
    """A journal as a dead process leaves it (no lock held)."""
    path = Path(f"{os.path.realpath(db)}-spend-999999-dead.journal")
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in rows) + tail)
    path.chmod(0o600)
    return path


def test_a_journal_whose_rows_were_committed_is_not_counted_twice(tmp_path: Path) -> None:
    """The process died between its commit and deleting its journal: rows the database
    already holds (same request id) are skipped, the others added; a line cut short by the
    crash is skipped."""
    db = tmp_path / "rg.db"
    log = SpendLog(db)
    committed = [(NOV_15 + i, f"r{i}", "team org", 1_000) for i in range(3)]
    for ts, rid, chain, amount in committed:
        log.append(ts, rid, chain.split(), amount)
    log.close()
    db.chmod(0o600)
    _orphan(db, [*committed, (NOV_15 + 5, "r5", "team org", 7)], tail=b'[1763200009.0,"r9","te')
    reopened = SpendLog(db)
    assert sum(a for _, a in reopened.take("team")) == 3 * 1_000 + 7
    reopened.close()
    assert _journals(db) == []


def test_a_dead_process_journal_of_more_rows_than_one_insert_is_taken_in(
    tmp_path: Path,
) -> None:
    """A journal of more than one INSERT statement's rows (64) was never taken in: the
    batch insert opened a transaction inside the take-in's own, which SQLite refuses. The
    warning came at every start, and the dead process's settlements were never counted, so
    its spend was free. (Found by review.)"""
    db = tmp_path / "rg.db"
    SpendLog(db).close()
    db.chmod(0o600)
    rows = [(NOV_15 + i, f"r{i}", "team org", 1_000) for i in range(150)]
    path = _orphan(db, rows)
    reopened = SpendLog(db)
    try:
        assert sum(a for _, a in reopened.take("team")) == 150 * 1_000
        assert not path.exists()
    finally:
        reopened.close()


@pytest.mark.parametrize(
    "torn",
    [b'[1763200009.0,"r9","te', b'[1763200009.0,"r9","te\0\0\0am",9]\n', b"\0" * 9 + b'am",9]'],
)
def test_a_mapped_journal_is_read_to_its_last_whole_line(tmp_path: Path, torn: bytes) -> None:
    """A segment is mapped with its space reserved: what a dead process leaves is its lines,
    perhaps one torn by the kill (cut short, or with bytes never stored, which read as
    zeros), then zeros to the end of the space; the whole lines count, nothing else."""
    db = tmp_path / "rg.db"
    SpendLog(db).close()
    db.chmod(0o600)
    rows = [(NOV_15 + i, f"r{i}", "team", 1_000 + i) for i in range(3)]
    _orphan(db, rows, tail=torn + b"\0" * spendlog.SEGMENT_BYTES)
    reopened = SpendLog(db)
    assert sum(a for _, a in reopened.take("team")) == 3_003
    reopened.close()


@pytest.mark.parametrize("reserved", [True, False])
def test_a_segment_takes_lines_past_its_reserved_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reserved: bool
) -> None:
    """Lines beyond the mapped space (a burst within one batch), or in a segment whose space
    could not be reserved (no mapping at all), are written to the file after the others."""
    monkeypatch.setattr(spendlog, "SEGMENT_BYTES", 300)
    if not reserved:

        def full(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", full)
    db = tmp_path / "rg.db"
    SpendLog(db).close()
    journal = spendlog._Journal(str(db))
    assert journal._segment is not None and (journal._segment.map is not None) == reserved
    rows = [(NOV_15 + i, f"request-{i}", "team org", 1_000 + i) for i in range(40)]
    queued: list[spendlog.Row] = []
    for row in rows:
        journal.append(row, queued.append)
    assert queued == rows
    assert journal.path is not None
    fd = os.open(journal.path, os.O_RDONLY)
    try:
        assert os.fstat(fd).st_size > 300
        assert spendlog._read_rows(fd, journal.path) == rows
    finally:
        os.close(fd)
        journal.close(committed=True)
    assert _journals(db) == []


def test_a_live_process_journal_is_left_to_it(tmp_path: Path) -> None:
    """A second log on the same database does not take in a journal whose process is alive
    (its rows reach SQLite through their own writer, once)."""
    db = tmp_path / "rg.db"
    first = SpendLog(db, linger_s=60.0)
    first.append(NOV_15, "mine", ["team"], 500)
    second = SpendLog(db)
    assert second.take("team") == []
    second.close()
    first.close()
    third = SpendLog(db)
    assert sum(a for _, a in third.take("team")) == 500
    third.close()


def test_a_journal_others_may_write_is_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file planted under a journal's name that others may write is not taken in."""
    db = tmp_path / "rg.db"
    SpendLog(db).close()
    db.chmod(0o600)
    planted = _orphan(db, [(NOV_15, "x", "team", 10**9)])
    planted.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="routeguard.budget"):
        log = SpendLog(db)
    assert log.take("team") == []
    assert planted.exists() and "not read" in caplog.text
    log.close()


def test_a_process_that_exits_without_closing_commits_and_tidies(tmp_path: Path) -> None:
    """A log the program never closes (a gateway's is only flushed) commits its queued rows
    at exit and removes its journal."""
    db = tmp_path / "rg.db"
    script = (
        "from routeguard.budget.spendlog import SpendLog\n"
        f"log = SpendLog({str(db)!r}, linger_s=60.0)\n"
        "log.append(1_763_200_000.0, 'r', ['team'], 42)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert _journals(db) == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT request_id, amount FROM spend").fetchall() == [("r", 42)]


def test_rows_a_failed_commit_dropped_stay_in_their_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settlement made just after the writer swapped segments lands in the new one and
    joins the round's batch; when that batch is given up (the file busy past RETRY_S) its
    rows must stay in a journal. The new segment was deleted as committed by the next round
    that succeeded: the settlement was in neither the database nor a journal."""
    monkeypatch.setattr(spendlog, "RETRY_S", 0.0)
    db = tmp_path / "rg.db"
    log = SpendLog(db, linger_s=0.0)
    log._db.execute("PRAGMA busy_timeout = 20")
    journal = log._journal
    assert journal is not None
    rotate = journal.rotate

    def swap_then_settle() -> tuple[int, str]:
        old = rotate()
        journal.rotate = rotate  # type: ignore[method-assign]
        log.append(NOV_15 + 1, "late", ["team"], 7)  # lands in the new segment
        return old

    journal.rotate = swap_then_settle  # type: ignore[method-assign]
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    log.append(NOV_15, "first", ["team"], 1_000)
    assert log.flush()  # given up: both rows dropped from the queue
    other.execute("COMMIT")
    other.close()
    log.append(NOV_15 + 2, "next", ["team"], 50)
    assert log.flush()  # committed: the segment holding "late" retired
    log.close()
    reopened = SpendLog(db)  # takes in the journals left behind
    assert sum(a for _, a in reopened.take("team")) == 1_000 + 7 + 50
    reopened.close()


def test_an_idle_journal_is_retired_before_its_rows_are_folded(tmp_path: Path) -> None:
    """A settlement committed in the round of the swap stays in the current segment until
    the next round, which only a new settlement started: an idle process kept it past the
    compaction that folded its row (request id gone), and a SIGKILL then had it counted
    twice at the next start."""
    db = tmp_path / "rg.db"
    script = (
        "import sqlite3, time\n"
        "from routeguard.budget.spendlog import SpendLog\n"
        f"log = SpendLog({str(db)!r}, keep_s=0.5, linger_s=0.0)\n"
        "journal = log._journal\n"
        "rotate = journal.rotate\n"
        "def swap_then_settle():\n"
        "    old = rotate()\n"
        "    journal.rotate = rotate\n"
        f"    log.append({NOV_15 + 1}, 'late', ['team'], 7)\n"
        "    return old\n"
        "journal.rotate = swap_then_settle\n"
        f"log.append({NOV_15}, 'first', ['team'], 1_000)\n"
        f"conn = sqlite3.connect({str(db)!r})\n"
        "while not conn.execute(\"SELECT COUNT(*) FROM spend WHERE request_id = 'compacted'\""
        ").fetchone()[0]:\n"
        "    time.sleep(0.05)\n"
        "print('folded', flush=True)\n"
        "time.sleep(600)\n"
    )
    _kill_when(script, "folded")
    reopened = SpendLog(db)
    assert sum(a for _, a in reopened.take("team")) == 1_000 + 7
    reopened.close()


def test_a_fifo_under_a_journals_name_does_not_hang_the_start(tmp_path: Path) -> None:
    """Anyone who may write in the database's directory could put a FIFO under a journal's
    name: opening it to read waited for a writer, forever, before any check."""
    db = tmp_path / "rg.db"
    SpendLog(db).close()
    fifo = f"{os.path.realpath(db)}-spend-1-fifo.journal"
    os.mkfifo(fifo, 0o600)
    script = f"from routeguard.budget.spendlog import SpendLog\nSpendLog({str(db)!r}).close()\n"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert os.path.exists(fifo)  # not ours to remove


def test_a_new_segment_deleted_before_it_was_locked_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment exists under its name a moment before its owner locks it: another process
    taking in journals then can lock it, find it empty and delete it, and the owner went on
    writing settlements into a file no one would ever read."""
    db = tmp_path / "rg.db"
    SpendLog(db).close()
    other = sqlite3.connect(db, isolation_level=None)
    flock = fcntl.flock
    raced: list[bool] = []

    def late_lock(fd: int, op: int) -> None:
        if not raced:
            raced.append(True)
            spendlog.take_in_journals(other, str(db))  # another process's start, just then
        flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", late_lock)
    journal = spendlog._Journal(str(db))
    monkeypatch.setattr(fcntl, "flock", flock)
    assert raced and journal.path is not None and os.path.exists(journal.path)
    journal.close(committed=True)
    other.close()


def test_a_forked_child_leaves_its_parents_journal_alone(tmp_path: Path) -> None:
    """A child forked from a process with an open log shares its journal's descriptor:
    closing the log there deleted the parent's live segment, rows not yet committed
    included."""
    db = tmp_path / "rg.db"
    log = SpendLog(db, linger_s=60.0)
    log.append(NOV_15, "r", ["team"], 500)
    assert log._journal is not None
    path = log._journal.path
    assert path is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            log.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.exists(path)
    log.close()
    assert sum(a for _, a in SpendLog(db).take("team")) == 500


def test_a_request_id_settled_twice_is_taken_in_twice(tmp_path: Path) -> None:
    """A library caller may use its own request ids, and one settled again (a retry under
    the same id) is a second settlement: matching a journal's rows by request id alone
    dropped it when the process died after committing the first and before the second."""
    db = tmp_path / "rg.db"
    log = SpendLog(db)
    log.append(NOV_15, "job-1", ["team"], 1_000)
    log.close()
    db.chmod(0o600)
    _orphan(db, [(NOV_15, "job-1", "team", 1_000), (NOV_15 + 0.5, "job-1", "team", 500)])
    reopened = SpendLog(db)
    assert sum(a for _, a in reopened.take("team")) == 1_500
    reopened.close()


def test_a_journal_closed_at_exit_is_not_reopened_by_the_writer(tmp_path: Path) -> None:
    """At exit the journal is closed while the writer thread still runs: a swap of segments
    it had begun installed a fresh segment in the closed journal (appends wrote again, the
    file stayed behind) and handed back descriptor -1, whose close raised in the writer."""
    db = tmp_path / "rg.db"
    SpendLog(db).close()
    journal = spendlog._Journal(str(db))
    journal.close(committed=True)
    with pytest.raises(OSError):
        journal.rotate()
    assert journal.path is None and _journals(db) == []
