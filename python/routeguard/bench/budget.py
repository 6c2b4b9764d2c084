"""Suite ``budget``: one reserve plus one settle on a three-account chain (key -> team -> org),
the Rust ledger from Python and the full ``MemoryBudget``, against the obvious pure-Python
ledger (a dict of totals under one ``threading.Lock``)."""

from __future__ import annotations

import threading
from itertools import count
from typing import Any

from routeguard._native import core
from routeguard.bench.report import Row
from routeguard.bench.suite import Options
from routeguard.bench.timing import summarize, time_calls
from routeguard.budget import MemoryBudget

ACCOUNTS: list[dict[str, Any]] = [
    {"name": "org", "limit": 1e9},
    {"name": "team", "parent": "org", "limit": 1e9},
    {"name": "key", "parent": "team", "limit": 1e9},
]
PEER = "Python dict ledger under a lock"


class LockedLedger:
    """The peer: a correct but plain Python ledger (one lock, dict totals)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.used = {"key": 0, "team": 0, "org": 0}
        self.limit = 10**15

    def reserve(self, chain: tuple[str, ...], amount: int) -> tuple[tuple[str, ...], int]:
        """Hold ``amount`` on every account of ``chain``, or raise if one would overflow."""
        with self.lock:
            if any(self.used[n] + amount > self.limit for n in chain):
                raise RuntimeError("refused")
            for n in chain:
                self.used[n] += amount
        return chain, amount

    def settle(self, hold: tuple[tuple[str, ...], int], actual: int) -> None:
        """Replace a hold by the actual amount."""
        chain, amount = hold
        with self.lock:
            for n in chain:
                self.used[n] += actual - amount


def run(opts: Options) -> list[Row]:
    """Per-pair latency of the Rust ledger and of MemoryBudget against the locked dict."""
    n = opts.n(200_000, 20_000)
    peer = LockedLedger()
    chain = ("key", "team", "org")
    opts.progress.step(f"peer ledger, {n} pairs")
    base = summarize(time_calls(lambda: peer.settle(peer.reserve(chain, 100), 50), n))

    ledger = core.Ledger()
    cal = ledger.add_calendar(1)
    ids = [ledger.add_account(10**15, calendar=cal) for _ in range(3)]
    reserve, settle = ledger.reserve, ledger.settle
    opts.progress.step(f"core.Ledger, {n} pairs")
    rust = summarize(time_calls(lambda: settle(reserve(ids, 100, 0), 50, 0), n))

    memory = MemoryBudget(ACCOUNTS)
    ids_seen = count()
    m_reserve, m_settle = memory.reserve_sync, memory.settle_sync
    opts.progress.step(f"MemoryBudget, {n} pairs")
    layer = summarize(
        time_calls(lambda: m_settle(m_reserve(["key"], 100, f"r{next(ids_seen)}"), 50), n)
    )
    b = base.scaled(1e-3)
    return [
        Row("budget", "reserve+settle, core.Ledger", rust.p50 * 1e-3, b.p50, PEER,
            detail={"ours": rust.scaled(1e-3).as_dict(), "peer": b.as_dict()}),
        Row("budget", "reserve+settle, MemoryBudget", layer.p50 * 1e-3, b.p50, PEER,
            detail={"ours": layer.scaled(1e-3).as_dict(), "peer": b.as_dict()}),
    ]  # fmt: skip
