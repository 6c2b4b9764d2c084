"""MemoryBudget: the in-process budget backend, over the Rust ledger (``core.Ledger``).

Data flow: account names map to ledger ids once, at construction; each calendar period in
use (kind + time zone) becomes one Rust calendar whose window id this module moves forward
when the clock crosses the next boundary (one float comparison per call). ``reserve``
expands the chain, asks the ledger for a hold (all or nothing, lock-free) and wraps it in a
:class:`~routeguard.budget.ledger.Reservation`; a refusal comes back as
``core.BudgetRefused`` and leaves as :class:`~routeguard.errors.BudgetExceeded`.

Holds carry a TTL, as in Redis: a heap of expiry times is checked on every call and an
expired hold is released (a later ``settle`` still charges the cost, as a late charge). RPM
and TPM limits are GCRA limiters in ``core.RateLimiter``.

Transient accounts (an end user's, :mod:`routeguard.budget.transient`) are dropped once
idle past the registry's ``keep``: nothing held or in flight and full rate allowances. One
without spend in its window is exactly what a new one is; one with spend is folded into a
dormant record (a rolling window's by bucket, a calendar's with the ledger's window id),
charged again when the account is made again, for as long as the ledger would have kept it,
about a fifth of an account's memory. Their ledger accounts (reset) and limiters are reused
by the next account of that shape.

Every operation also exists as a plain method (``reserve_sync`` ...): they never wait, so
the async ones only wrap them; property tests drive the sync ones directly.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from routeguard._native import core
from routeguard.budget.accounts import (
    ROLLING_BUCKETS,
    Account,
    Accounts,
    Period,
    load_accounts,
)
from routeguard.budget.ledger import (
    DEFAULT_TTL_S,
    Reservation,
    budget_exceeded,
    check_amount,
    rate_limited,
    soft_exceeded,
)
from routeguard.budget.spendlog import SpendLog
from routeguard.budget.transient import DEFAULT_KEEP, Transients
from routeguard.config.budgets import BudgetAccountConfig

logger = logging.getLogger("routeguard.budget")
_MINUTE_NS = 60_000_000_000
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(
    method: Callable[Concatenate[MemoryBudget, _P], _R],
) -> Callable[Concatenate[MemoryBudget, _P], _R]:
    """Run ``method`` under the instance's bookkeeping lock."""

    @functools.wraps(method)
    def run(self: MemoryBudget, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


@dataclass(slots=True, frozen=True)
class _Dormant:
    """The spend of a dropped transient account, kept until it would have aged out: its
    period, the ledger's calendar window it was in (calendar periods), and its parts as
    ``(when, ns; amount)``."""

    period: Period
    window: int | None
    parts: tuple[tuple[int, int], ...]


@dataclass(slots=True)
class _Plan:
    """A chain made ready for the ledger: the accounts with their ancestors, leaf first, their
    ledger ids, and their rate limiters as (account, limiter id, unit) and as the limiter
    checks them (limiter id, whether it counts tokens); the lane admits on all of them in
    one native call."""

    names: tuple[str, ...]
    ids: list[int]
    rates: list[tuple[str, int, str]]
    units: list[tuple[int, bool]]
    lane: core.Lane  # ids and units as the native admission takes them


class MemoryBudget:
    """Budgets and rate limits for one process (see the module docstring).

    The Rust ledger underneath is lock-free and thread-safe; this wrapper's bookkeeping (open
    holds, the expiry queue, a reservation's state) sits behind one re-entrant lock, so
    several threads or event loops may share one budget: a reservation is settled, released
    or expired exactly once.
    """

    def __init__(
        self,
        accounts: Accounts | Sequence[BudgetAccountConfig | Mapping[str, Any]],
        *,
        clock: Callable[[], float] = time.time,
        default_ttl_s: float = DEFAULT_TTL_S,
        on_soft_limit: Callable[[str, Reservation], None] | None = None,
        spend_log: SpendLog | None = None,
        keep_transient: int = DEFAULT_KEEP,
    ) -> None:
        """``clock`` returns unix seconds (tests pass a fake one); ``spend_log`` persists
        settlements and gives back the spend logged before a restart; ``keep_transient``:
        how many transient accounts stay before idle ones are dropped."""
        self._lock = threading.RLock()
        self.transients = Transients(keep_transient)
        """Accounts made on use and dropped when idle (see :meth:`upsert`)."""
        # Ledger accounts and limiters of dropped transient accounts, clean, for reuse: by
        # window shape, and by limit (every limiter counts per minute).
        self._spare: dict[tuple[str, object], list[int]] = {}
        self._spare_limiters: dict[int, list[int]] = {}
        # Dropped transient accounts that had spent in their window, oldest first.
        self._dormant: dict[str, _Dormant] = {}
        self._log = spend_log
        self.accounts = accounts if isinstance(accounts, Accounts) else load_accounts(accounts)
        self._clock = clock
        self._ttl = default_ttl_s
        self._on_soft_limit = on_soft_limit
        self._ledger = core.Ledger()
        self._limiter = core.RateLimiter()
        self._ids: dict[str, int] = {}
        self._rates: dict[str, list[tuple[int, str]]] = {}
        self._calendars: dict[str, tuple[int, Period]] = {}  # period key -> its calendar
        self._boundary = math.inf
        now = clock()
        for acc in self.accounts:
            self._register(acc, now)
        self._refresh(now)
        # A chain as asked for -> its plan (see _Plan): expanded, its ledger ids and limiters.
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._open: dict[str, Reservation] = {}
        # Holds by expiry: default-TTL ones in a FIFO (their expiries only grow), others in
        # a heap. Settled entries stay until they reach the front or a compaction drops
        # them; `_next_expiry` makes the common call one float comparison.
        self._fifo: deque[Reservation] = deque()
        self._heap: list[tuple[float, int, Reservation]] = []
        self._seq = itertools.count()
        self._next_expiry = math.inf

    def _register(self, acc: Account, now: float, *, keep_rates: bool = False) -> None:
        """Give ``acc`` a ledger account (a dropped one of its shape if any) and its rate
        limiters (``keep_rates``: those it has, as it changes period)."""
        period = acc.period
        spare = self._spare.get(_shape(period))
        if spare:
            ident = spare.pop()
            self._ledger.set_limits(ident, acc.limit, acc.soft_limit)
        elif period.is_calendar:
            if period.key not in self._calendars:
                cal = self._ledger.add_calendar(period.window(now).id)
                self._calendars[period.key] = (cal, period)
                self._boundary = min(self._boundary, period.window(now).end)
            ident = self._ledger.add_account(
                acc.limit, acc.soft_limit, calendar=self._calendars[period.key][0]
            )
        elif period.kind == "rolling":
            ident = self._ledger.add_account(
                acc.limit,
                acc.soft_limit,
                window_ns=period.seconds * 1_000_000_000,
                buckets=ROLLING_BUCKETS,
            )
        else:
            ident = self._ledger.add_account(acc.limit, acc.soft_limit)
        self._ids[acc.name] = ident
        if not keep_rates:
            self._set_rates(acc)
        if self._log is not None:
            self._replay(acc, ident, now)
        if self._dormant:
            self._wake(acc, ident, now)

    def _wake(self, acc: Account, ident: int, now: float) -> None:
        """Charge ``acc`` the spend it had when it was dropped, as far as its window (or a
        new period's) still holds it."""
        rec = self._dormant.pop(acc.name, None)
        if rec is None:
            return
        for when_ns, amount in self._still_counting(rec, acc.period, now):
            self._ledger.charge([ident], amount, when_ns)

    def _still_counting(self, rec: _Dormant, period: Period, now: float) -> list[tuple[int, int]]:
        """The parts of ``rec``'s spend an account of ``period`` still counts at ``now``, as
        ``(when to charge them, ns; amount)``. The same period: as the ledger would (a
        calendar's window id, which never moves back; a rolling bucket while it is live,
        charged back into that bucket, ahead of ``now`` too after a clock step back). A new
        one (a reload changed it): each part as if spent at its latest possible time (the
        end of its bucket; a calendar or lifetime spend at the drop), so none is forgotten
        early."""
        now_ns = int(now * 1e9)
        old = rec.period
        bucket = _bucket_ns(old) if old.kind == "rolling" else 1
        if period == old:
            if period.kind == "total":
                return [(now_ns, rec.parts[0][1])]
            if period.is_calendar:
                cal = self._calendars[period.key][0]
                if rec.window == self._ledger.calendar(cal):
                    return [(now_ns, rec.parts[0][1])]
                return []
            cur = now_ns // bucket
            return [(when, a) for when, a in rec.parts if cur - when // bucket <= ROLLING_BUCKETS]
        out = []
        for when_ns, amount in rec.parts:
            latest = when_ns + bucket - 1
            if period.kind == "rolling":
                if latest + period.seconds * 1_000_000_000 > now_ns:
                    out.append((latest, amount))
            elif period.kind == "total" or latest >= period.window(now).start * 1e9:
                out.append((now_ns, amount))
        return out

    def _replay(self, acc: Account, ident: int, now: float) -> None:
        """Charge ``acc`` what the spend log holds for its current window."""
        period = acc.period
        window = period.window(now)
        for ts, amount in self._log.take(acc.name) if self._log is not None else ():
            if period.kind == "rolling":
                if ts >= now - period.seconds:  # a folded row may be stamped after `now`
                    self._ledger.charge([ident], amount, int(min(ts, now) * 1e9))
            elif window.start <= ts < window.end:
                self._ledger.charge([ident], amount, int(now * 1e9))

    def _set_rates(self, acc: Account) -> None:
        limiters = []
        if acc.rpm is not None:
            limiters.append((self._new_limiter(acc.rpm), "requests"))
        if acc.tpm is not None:
            limiters.append((self._new_limiter(acc.tpm), "tokens"))
        self._rates[acc.name] = limiters

    def _new_limiter(self, limit: int) -> int:
        """A limiter of ``limit`` a minute: a dropped account's (full) if one is spare."""
        spare = self._spare_limiters.get(limit)
        return spare.pop() if spare else self._limiter.add(limit, _MINUTE_NS)

    @_locked
    def upsert(self, account: Account, *, transient: bool = False) -> None:
        """Add an account at run time, or change its limits (a virtual key's budget).

        Spend so far is kept when only the limits change; a new period starts the account
        afresh (a transient one's keeps its spend, as a dropped one's: once it is idle).
        Changed RPM/TPM limits start with a full allowance. ``transient``: a leaf made on
        use (an end user's) that may be dropped once idle, past the registry's ``keep``
        (callers make it again on its next use).
        """
        old = self.accounts.by_name.get(account.name)
        now = self._clock()
        switch = old is not None and old.period != account.period
        keep_rates = False
        if switch and transient and old is not None:
            # A transient account takes a new period without losing its spend: folded and
            # woken under the new one (its limiters kept), once nothing is held or in flight
            # on it (until then it keeps its period).
            if now >= self._boundary:
                self._refresh(now)
            name = old.name
            if self.transients.in_flight(name) == 0 and not self._ledger.reserved(self._ids[name]):
                self._fold_out(old, int(now * 1e9))
                keep_rates = True
            else:
                account = dataclasses.replace(account, period=old.period)
                switch = False
        if old is not None and account == old and transient == (old.name in self.transients):
            return
        self.accounts.put(account)
        if old is not None:  # a new account is in no plan yet
            self._plans.clear()
        if transient:
            self.transients.add(account.name)
        else:
            self.transients.discard(account.name)
        if old is None or switch:
            self._register(account, now, keep_rates=keep_rates)
            if keep_rates and old is not None and (old.rpm, old.tpm) != (account.rpm, account.tpm):
                self._set_rates(account)
            if len(self.transients) > self.transients.keep:
                self._drop_idle(now)
            return
        if (old.limit, old.soft_limit) != (account.limit, account.soft_limit):
            self._ledger.set_limits(self._ids[account.name], account.limit, account.soft_limit)
        if (old.rpm, old.tpm) != (account.rpm, account.tpm):
            self._set_rates(account)
            self._plans.clear()

    def _drop_idle(self, now: float) -> None:
        """Drop idle transient accounts (see :meth:`Transients.sweep`), keeping their ledger
        accounts and limiters for reuse."""
        if now >= self._boundary:
            self._refresh(now)
        now_ns = int(now * 1e9)
        self._prune(now)
        gone = self.transients.sweep(lambda name: self._idle(name, now_ns))
        if not gone:
            return
        for name in gone:
            self._retire(self.accounts.by_name[name], now_ns)
        self.accounts.remove(gone)
        dropped = set(gone)
        self._plans = {k: p for k, p in self._plans.items() if dropped.isdisjoint(p.names)}

    def _idle(self, name: str, now_ns: int) -> bool:
        """Whether transient account ``name`` is idle: nothing in flight or held, and every
        rate limiter full (it is then what a new account is, but for its spend)."""
        return (
            self.transients.in_flight(name) == 0
            and self._ledger.reserved(self._ids[name]) == 0
            and all(self._limiter.is_full(lim, now_ns) for lim, _ in self._rates[name])
        )

    def _retire(self, acc: Account, now_ns: int) -> None:
        """Fold idle ``acc``'s spend into a dormant record and make its ledger account
        (reset) and limiters spare (the caller drops the account)."""
        self._fold_out(acc, now_ns)
        for lim, unit in self._rates.pop(acc.name):
            limit = acc.rpm if unit == "requests" else acc.tpm
            assert limit is not None
            self._spare_limiters.setdefault(limit, []).append(lim)

    def _fold_out(self, acc: Account, now_ns: int) -> None:
        """Fold ``acc``'s spend into a dormant record and make its ledger account spare,
        reset: nothing may be held or in flight on it (the lock keeps others off)."""
        ident = self._ids.pop(acc.name)
        parts = self._ledger.live_spend(ident, now_ns)
        if parts:
            self._dormant[acc.name] = self._fold(acc.period, parts, now_ns)
        self._ledger.reset(ident)
        self._spare.setdefault(_shape(acc.period), []).append(ident)

    def _fold(self, period: Period, parts: list[tuple[int, int]], now_ns: int) -> _Dormant:
        """A dropped account's live spend as a dormant record: a rolling window's by bucket
        (each at its bucket's start); a calendar's with the ledger's window id, stamped at
        the drop (its latest possible time); a lifetime's stamped at the drop."""
        if period.kind == "rolling":
            return _Dormant(period, None, tuple(parts))
        cal = self._calendars[period.key][0] if period.is_calendar else None
        window = None if cal is None else self._ledger.calendar(cal)
        return _Dormant(period, window, ((now_ns, sum(a for _, a in parts)),))

    def _prune(self, now: float) -> None:
        """Forget dormant spend no window holds any more (a bounded look at the oldest, per
        sweep; a lifetime's never goes)."""
        dormant = self._dormant
        for _ in range(min(len(dormant), 64)):
            name, rec = next(iter(dormant.items()))
            if rec.period.kind == "total" or self._still_counting(rec, rec.period, now):
                dormant[name] = dormant.pop(name)  # to the back: the others get their look
                continue
            del dormant[name]

    # ------------------------------------------------------------------ time

    def _refresh(self, now: float) -> None:
        """Move every calendar to the window containing ``now``."""
        boundary = math.inf
        for cal, period in self._calendars.values():
            window = period.window(now)
            self._ledger.set_calendar(cal, window.id)
            boundary = min(boundary, window.end)
        self._boundary = boundary

    def _tick(self) -> tuple[float, int]:
        """The time now (seconds, nanoseconds), after rolling calendars and expiring holds."""
        now = self._clock()
        if now >= self._boundary:
            self._refresh(now)
        if now >= self._next_expiry:
            self._expire(now)
        return now, int(now * 1e9)

    def _expire(self, now: float) -> None:
        due: list[Reservation] = []
        while self._fifo and self._fifo[0].expires_at <= now:
            due.append(self._fifo.popleft())
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        self._next_expiry = min(
            self._fifo[0].expires_at if self._fifo else math.inf,
            self._heap[0][0] if self._heap else math.inf,
        )
        for res in due:
            hold = res.handle
            if res.state == "open" and isinstance(hold, core.Hold):
                self._open.pop(res.request_id, None)
                self._ledger.release(hold)
                res.handle = None
                res.state = "expired"
                logger.info("hold of reservation %s expired and was released", res.request_id)

    def _plan(self, chain: Sequence[str]) -> _Plan:
        """``chain``'s plan, made once (upserts drop them all)."""
        key = chain if type(chain) is tuple else tuple(chain)
        plan = self._plans.get(key)
        if plan is None:
            names = self.accounts.chain(key)
            rates = [(name, limiter, unit) for name in names
                     for limiter, unit in self._rates[name]]  # fmt: skip
            units = [(limiter, unit == "tokens") for _, limiter, unit in rates]
            ids = [self._ids[n] for n in names]
            lane = core.Lane(self._ledger, self._limiter, ids, units)
            plan = _Plan(names, ids, rates, units, lane)
            if len(self._plans) >= 100_000:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _ids_of(self, names: tuple[str, ...]) -> list[int]:
        """The ledger ids of ``names`` as they are (an expanded chain a hold recorded: not
        expanded again, which after a move would add the new ancestors)."""
        return [self._ids[n] for n in names]

    # ------------------------------------------------------------------ sync operations

    @_locked
    def reserve_sync(
        self, chain: Sequence[str], amount: int, request_id: str, ttl_s: float | None = None
    ) -> Reservation:
        """Hold ``amount`` on the chain (and its ancestors) or raise BudgetExceeded."""
        check_amount(amount)
        now, now_ns = self._tick()
        existing = self._open.get(request_id)
        if existing is not None:
            return existing
        return self._hold(self._plan(chain), amount, request_id, ttl_s, now, now_ns)

    def _hold(
        self,
        plan: _Plan,
        amount: int,
        request_id: str,
        ttl_s: float | None,
        now: float,
        now_ns: int,
    ) -> Reservation:
        """Under the lock: the ledger's hold on ``plan``'s accounts, recorded as open."""
        try:
            hold = self._ledger.reserve(plan.ids, amount, now_ns)
        except core.BudgetRefused as refused:
            raise self._refused(plan, refused, now) from None
        return self._opened(plan, hold, amount, request_id, ttl_s, now)

    def _refused(self, plan: _Plan, refused: core.BudgetRefused, now: float) -> Exception:
        """The BudgetExceeded a ledger's refusal on ``plan`` is raised as."""
        _, position, spent, reserved, _, requested = refused.args
        account = self.accounts[plan.names[position]]
        return budget_exceeded(
            account, spent=spent, reserved=reserved, requested=requested, now=now
        )

    def _opened(
        self,
        plan: _Plan,
        hold: core.Hold,
        amount: int,
        request_id: str,
        ttl_s: float | None,
        now: float,
    ) -> Reservation:
        """Under the lock: the ledger's ``hold`` on ``plan``'s accounts, recorded as open."""
        names = plan.names
        expires_at = now + (self._ttl if ttl_s is None else ttl_s)
        mask = hold.soft_mask
        soft = soft_exceeded(names, mask) if mask else ()
        res = Reservation(request_id, names, amount, expires_at, soft, "open", hold)
        self._open[request_id] = res
        if self.transients.live:
            self.transients.held(names)
        if ttl_s is None:
            self._fifo.append(res)
            if len(self._fifo) > 2 * len(self._open) + 1024:  # drop settled entries
                self._fifo = deque(r for r in self._fifo if r.state == "open")
        else:
            heapq.heappush(self._heap, (expires_at, next(self._seq), res))
            if len(self._heap) > 2 * len(self._open) + 1024:
                self._heap = [e for e in self._heap if e[2].state == "open"]
                heapq.heapify(self._heap)
        if expires_at < self._next_expiry:
            self._next_expiry = expires_at
        if soft and self._on_soft_limit is not None:
            for name in soft:
                self._on_soft_limit(name, res)
        return res

    @_locked
    def settle_sync(self, reservation: Reservation, actual: int) -> int:
        """Charge ``actual``; returns the overage. ValueError if already settled/released."""
        check_amount(actual, "actual")
        _, now_ns = self._tick()
        state = reservation.state
        if state == "open" and isinstance(reservation.handle, core.Hold):
            self._open.pop(reservation.request_id, None)
            reservation.state = "settled"
            overage = self._ledger.settle(reservation.handle, actual, now_ns)
            reservation.handle = None  # frees the Rust hold now, not when the record dies
            if self.transients.live:
                self.transients.done(reservation.chain)
            if self._log is not None:
                self._log.append(now_ns / 1e9, reservation.request_id, reservation.chain, actual)
            if overage:
                logger.warning(
                    "reservation %s: actual cost %d exceeded the hold %d micro-dollars",
                    reservation.request_id,
                    actual,
                    reservation.amount,
                )
            return overage
        if state in ("expired", "unbacked"):
            reservation.state = "settled"
            self._ledger.charge(self._ids_of(reservation.chain), actual, now_ns)
            if self.transients.live:
                self.transients.done(reservation.chain)
            if self._log is not None:
                self._log.append(now_ns / 1e9, reservation.request_id, reservation.chain, actual)
            logger.info(
                "reservation %s settled after its hold expired: charged in full",
                reservation.request_id,
            )
            return max(0, actual - reservation.amount)
        raise ValueError(f"reservation {reservation.request_id!r} was already {state}")

    @_locked
    def release_sync(self, reservation: Reservation) -> None:
        """Give the hold back; a no-op on a closed reservation."""
        if reservation.state == "open" and isinstance(reservation.handle, core.Hold):
            self._open.pop(reservation.request_id, None)
            self._ledger.release(reservation.handle)
            reservation.handle = None
        if reservation.is_open:
            reservation.state = "released"
            if self.transients.live:
                self.transients.done(reservation.chain)

    @_locked
    def spent_sync(self, account: str) -> int:
        """Committed micro-dollars of ``account`` in its current window (a dropped
        transient account's: what it will be charged again when it is made again)."""
        now, now_ns = self._tick()
        if account not in self.accounts.by_name:
            dormant = self._dormant_spend(account, now)
            if dormant is not None:
                return dormant
        return self._ledger.spent(self._ids[self.accounts[account].name], now_ns)

    def _dormant_spend(self, name: str, now: float) -> int | None:
        """The spend a dropped transient account ``name`` still has at ``now`` (None: not
        dropped with spend)."""
        rec = self._dormant.get(name)
        if rec is None:
            return None
        return sum(amount for _, amount in self._still_counting(rec, rec.period, now))

    @_locked
    def reserved_sync(self, account: str) -> int:
        """Micro-dollars held on ``account`` by requests in flight."""
        now, _ = self._tick()
        if account not in self.accounts.by_name and self._dormant_spend(account, now) is not None:
            return 0  # dropped: nothing was held
        return self._ledger.reserved(self._ids[self.accounts[account].name])

    @_locked  # its plan is made from the limiters an upsert replaces (see _plan)
    def check_rate_sync(self, chain: Sequence[str], tokens: int = 0, requests: int = 1) -> None:
        """Consume on every RPM/TPM limit of the chain, all or none, or raise RateLimited."""
        self._rate(self._plan(chain), tokens, requests, int(self._clock() * 1e9))

    def _rate(self, plan: _Plan, tokens: int, requests: int, now_ns: int) -> None:
        """Consume ``requests`` and ``tokens`` on ``plan``'s limiters, all or none."""
        if not plan.units:
            return
        # A negative cost consumes nothing, as a zero one (the limiter takes unsigned costs).
        refused = self._limiter.check_units(plan.units, max(requests, 0), max(tokens, 0), now_ns)
        if refused is not None:
            raise self._rate_refused(plan, requests, tokens, *refused)

    def _rate_refused(
        self, plan: _Plan, requests: int, tokens: int, position: int, wait_ns: int | None
    ) -> Exception:
        """The RateLimited a refusal of ``plan``'s limiter at ``position`` is raised as."""
        name, _, unit = plan.rates[position]
        cost = requests if unit == "requests" else tokens
        retry_after = None if wait_ns is None else wait_ns / 1e9
        return rate_limited(self.accounts[name], unit, cost, retry_after)

    # ------------------------------------------------------------------ the interface

    async def reserve(
        self, chain: Sequence[str], amount: int, request_id: str, ttl_s: float | None = None
    ) -> Reservation:
        """See :meth:`reserve_sync`."""
        return self.reserve_sync(chain, amount, request_id, ttl_s)

    async def admit(
        self,
        chain: Sequence[str],
        amount: int,
        request_id: str,
        tokens: int = 0,
        requests: int = 1,
        ttl_s: float | None = None,
    ) -> Reservation:
        """See :meth:`admit_sync`."""
        return self.admit_sync(chain, amount, request_id, tokens, requests, ttl_s)

    def admit_sync(
        self,
        chain: Sequence[str],
        amount: int,
        request_id: str,
        tokens: int = 0,
        requests: int = 1,
        ttl_s: float | None = None,
    ) -> Reservation:
        """``check_rate`` then ``reserve``; a request id already held consumes nothing."""
        check_amount(amount)
        with self._lock:
            now, now_ns = self._tick()
            existing = self._open.get(request_id)
            if existing is not None:
                return existing
            plan = self._plan(chain)
            # A negative cost consumes nothing, as a zero one; a chain without limiters
            # reads neither (whatever they are, as before the lane).
            costs = (max(requests, 0), max(tokens, 0)) if plan.units else (0, 0)
            try:  # the rate limits, then the hold: one native call
                hold = plan.lane.admit(amount, *costs, now_ns)
            except core.RateRefused as refused:
                raise self._rate_refused(plan, requests, tokens, *refused.args) from None
            except core.BudgetRefused as refused:
                raise self._refused(plan, refused, now) from None
            return self._opened(plan, hold, amount, request_id, ttl_s, now)

    async def settle(self, reservation: Reservation, actual: int) -> int:
        """See :meth:`settle_sync`."""
        return self.settle_sync(reservation, actual)

    async def release(self, reservation: Reservation) -> None:
        """See :meth:`release_sync`."""
        self.release_sync(reservation)

    async def spent(self, account: str) -> int:
        """See :meth:`spent_sync`."""
        return self.spent_sync(account)

    async def reserved(self, account: str) -> int:
        """See :meth:`reserved_sync`."""
        return self.reserved_sync(account)

    async def check_rate(self, chain: Sequence[str], tokens: int = 0, requests: int = 1) -> None:
        """See :meth:`check_rate_sync`."""
        self.check_rate_sync(chain, tokens, requests)

    async def close(self) -> None:
        """Write out the spend log's queued rows (the ledger itself needs no closing)."""
        if self._log is not None:
            self._log.flush()


def _bucket_ns(period: Period) -> int:
    """The ledger's bucket of a rolling ``period`` (its width over ROLLING_BUCKETS, up)."""
    return -(-period.seconds * 1_000_000_000 // ROLLING_BUCKETS)


def _shape(period: Period) -> tuple[str, object]:
    """What a ledger account is made with besides its limits: its calendar, rolling width
    or lifetime (accounts of one shape can take over each other's dropped ledger account)."""
    if period.is_calendar:
        return ("calendar", period.key)
    return (period.kind, period.seconds)
