"""The Rust ledger through its Python binding, and a hypothesis model test of MemoryBudget.

The model test interleaves the lifecycles of many requests at random (reserve, settle with
any actual cost, release, the clock jumping so holds expire and windows roll) and checks
after every step that the backend agrees with a plain-Python model of the semantics: the
same admissions and refusals, the same spent and reserved on every account.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from routeguard import BudgetExceeded
from routeguard._native import core
from routeguard.budget import MemoryBudget, Period, Reservation

# ------------------------------------------------------------------ the binding


def test_refusal_carries_the_account_and_the_figures() -> None:
    ledger = core.Ledger()
    cal = ledger.add_calendar(7)
    org = ledger.add_account(1_000, calendar=cal)
    team = ledger.add_account(500, 400, calendar=cal)
    hold = ledger.reserve([team, org], 450, 0)
    assert (hold.chain, hold.amount, hold.soft_mask, hold.is_open) == ([team, org], 450, 1, True)
    with pytest.raises(core.BudgetRefused) as caught:
        ledger.reserve([org, team], 100, 0)
    assert caught.value.args == (team, 1, 0, 450, 500, 100)
    assert ledger.used(org, 0) == 450, "the org's hold was rolled back"
    assert ledger.settle(hold, 600, 0) == 150
    assert not hold.is_open
    with pytest.raises(ValueError, match="already settled"):
        ledger.settle(hold, 1, 0)
    assert ledger.release(hold) is False
    assert (ledger.spent(team, 0), ledger.reserved(team), len(ledger)) == (600, 0, 2)


def test_a_dropped_hold_releases_itself() -> None:
    ledger = core.Ledger()
    acc = ledger.add_account(100)
    hold = ledger.reserve([acc], 60, 0)
    assert ledger.reserved(acc) == 60
    del hold
    gc.collect()
    assert ledger.reserved(acc) == 0


def test_bad_calls_raise_python_errors() -> None:
    ledger, other = core.Ledger(), core.Ledger()
    acc = ledger.add_account(100)
    with pytest.raises(KeyError):
        ledger.reserve([acc + 1], 1, 0)
    with pytest.raises(ValueError, match="twice"):
        ledger.reserve([acc, acc], 1, 0)
    with pytest.raises(OverflowError):
        ledger.reserve([acc], -1, 0)
    with pytest.raises(ValueError, match="not both"):
        ledger.add_account(1, calendar=0, window_ns=10)
    with pytest.raises(ValueError, match="another Ledger"):
        other.settle(ledger.reserve([acc], 1, 0), 1, 0)


def test_rate_limiter_binding() -> None:
    limiter = core.RateLimiter()
    rpm = limiter.add(2, 60_000_000_000)
    assert limiter.check([(rpm, 1), (rpm, 1)], 0) is None
    assert limiter.check([(rpm, 1)], 0) == (0, 30_000_000_000)
    assert limiter.check([(rpm, 3)], 0) == (0, None)
    assert limiter.wait_time(rpm, 1, 30_000_000_000) == 0
    assert len(limiter) == 1


def test_a_lane_checks_the_rates_then_holds() -> None:
    """``Lane.admit`` is ``check_units`` then ``reserve`` in one call: a rate refusal takes
    nothing, a budget refusal leaves the rates consumed, as the two calls leave them."""
    ledger, limiter = core.Ledger(), core.RateLimiter()
    org, key = ledger.add_account(1_000), ledger.add_account(100)
    rpm, tpm = limiter.add(2, 60_000_000_000), limiter.add(50, 60_000_000_000)
    lane = core.Lane(ledger, limiter, [key, org], [(rpm, False), (tpm, True)])
    hold = lane.admit(60, 1, 10, 0)
    assert (hold.chain, hold.amount, ledger.reserved(key), ledger.reserved(org)) == (
        [key, org], 60, 60, 60,
    )  # fmt: skip
    with pytest.raises(core.BudgetRefused) as refused:
        lane.admit(60, 1, 10, 0)  # the second request fits the RPM, not the key's budget
    assert refused.value.args == (key, 0, 0, 60, 100, 60)
    with pytest.raises(core.RateRefused) as limited:
        lane.admit(1, 1, 10, 0)  # the refused admission took the RPM's second request
    assert limited.value.args == (0, 30_000_000_000)
    assert ledger.reserved(key) == 60, "a refused admission holds nothing"
    # 20 tokens taken by the two admissions that passed the rates, none by the third:
    assert limiter.check_units([(tpm, True)], 0, 30, 0) is None
    assert limiter.check_units([(tpm, True)], 0, 1, 0) == (0, 1_200_000_000)
    tokens_only = core.Lane(ledger, limiter, [org], [(tpm, True)])
    with pytest.raises(core.RateRefused) as never:
        tokens_only.admit(1, 1, 51, 0)  # past the TPM's whole allowance: never passes
    assert never.value.args == (0, None)
    free = core.Lane(ledger, limiter, [org], [(tpm, True)]).admit(5, 1, 0, 0)
    assert free.amount == 5, "a limiter a request costs nothing on is not asked"
    assert ledger.settle(hold, 50, 0) == 0
    with pytest.raises(KeyError):
        core.Lane(ledger, limiter, [org + 7], []).admit(1, 1, 0, 0)


@pytest.mark.parametrize(("tokens", "requests"), [(2**64, 1), (1, 2**64), (1.5, 1)])
def test_a_chain_without_rate_limits_admits_whatever_the_costs(
    tokens: object, requests: object
) -> None:
    """No limiter reads the costs of a chain without RPM/TPM: they are not converted (the
    lane took them as u64 and refused these, which the two calls before it admitted)."""
    budget = MemoryBudget([{"name": "org", "limit": 1.0}])
    res = budget.admit_sync(["org"], 10, "r1", tokens, requests)  # type: ignore[arg-type]
    assert res.state == "open" and budget.reserved_sync("org") == 10


# ------------------------------------------------------------------ the model test

START = datetime(2026, 11, 29, 23, 0, tzinfo=UTC).timestamp()
ACCOUNTS = [
    {"name": "org", "limit": 1.9, "period": "monthly"},
    {"name": "team", "parent": "org", "limit": 1.6, "period": "daily"},
    {"name": "key-a", "parent": "team", "limit": 1.0, "period": "rolling:60"},
    {"name": "key-b", "parent": "team", "limit": 1.2, "period": "total"},
]
CHAINS = {"key-a": ("key-a", "team", "org"), "key-b": ("key-b", "team", "org")}
TTL = 30.0


@dataclass
class Model:
    """The semantics, slowly: every settlement remembered with its time."""

    now: float = START
    held: dict[str, int] = field(default_factory=dict)
    spends: list[tuple[str, float, int]] = field(default_factory=list)
    limits: dict[str, int] = field(
        default_factory=lambda: {
            "org": 1_900_000,
            "team": 1_600_000,
            "key-a": 1_000_000,
            "key-b": 1_200_000,
        }
    )
    periods: dict[str, Period] = field(
        default_factory=lambda: {
            a["name"]: Period.parse(str(a.get("period", "monthly"))) for a in ACCOUNTS
        }
    )

    def spent(self, name: str) -> int:
        period = self.periods[name]
        if period.kind == "rolling":  # 60 buckets of 1 s; live for 60 buckets after its own
            cur = int(self.now * 1e9) // 1_000_000_000
            return sum(
                a for n, t, a in self.spends if n == name and cur - int(t * 1e9) // 10**9 <= 60
            )
        if period.kind == "total":
            return sum(a for n, _, a in self.spends if n == name)
        wid = period.window(self.now).id
        return sum(a for n, t, a in self.spends if n == name and period.window(t).id == wid)


op = st.one_of(
    st.tuples(
        st.just("reserve"),
        st.sampled_from(["key-a", "key-b"]),
        st.integers(0, 900_000) | st.sampled_from([150_000, 400_000, 700_000]),
    ),
    st.tuples(st.just("settle"), st.integers(0, 10**6), st.integers(0, 1_300)),
    st.tuples(st.just("release"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 1.0, 7.0, 31.0, 61.0, 3_600.0]), st.just(0)),
)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(op, min_size=20, max_size=80))
def test_memory_budget_matches_the_model(ops: list[tuple[str, object, object]]) -> None:
    model = Model()
    budget = MemoryBudget(ACCOUNTS, clock=lambda: model.now, default_ttl_s=TTL)
    open_: list[Reservation] = []
    expired: set[str] = set()
    for n, (kind, a, b) in enumerate(ops):
        if kind == "reserve":
            assert isinstance(a, str) and isinstance(b, int)
            chain = CHAINS[a]
            refuse = next(
                (
                    name
                    for name in chain
                    if model.spent(name) + model.held.get(name, 0) + b > model.limits[name]
                ),
                None,
            )
            try:
                res = budget.reserve_sync([a], b, f"r{n}")
            except BudgetExceeded as exc:
                event(f"refused by {refuse}")
                assert exc.account == refuse
                assert (exc.spent, exc.reserved) == (model.spent(refuse), model.held.get(refuse, 0))
            else:
                assert refuse is None
                for name in chain:
                    model.held[name] = model.held.get(name, 0) + b
                open_.append(res)
        elif kind in ("settle", "release") and open_:
            assert isinstance(a, int) and isinstance(b, int)
            res = open_.pop(a % len(open_))
            if res.request_id in expired:
                event(f"{kind} after the hold expired")
            if kind == "settle":
                actual = res.amount * b // 1_000
                budget.settle_sync(res, actual)
                model.spends += [(name, model.now, actual) for name in res.chain]
            else:
                budget.release_sync(res)
            if res.request_id not in expired:
                for name in res.chain:
                    model.held[name] -= res.amount
        elif kind == "wait":
            assert isinstance(a, float)
            model.now += a
        for res in open_:  # TTL expiry, as the backend does on its next call
            if res.request_id not in expired and res.expires_at <= model.now:
                expired.add(res.request_id)
                for name in res.chain:
                    model.held[name] -= res.amount
        for name in model.limits:
            assert budget.spent_sync(name) == model.spent(name), name
            assert budget.reserved_sync(name) == model.held.get(name, 0), name


def test_memory_budget_shared_by_threads_settles_each_reservation_once() -> None:
    import sys
    import threading

    budget = MemoryBudget(
        [{"name": "org", "limit": 1e6}, {"name": "team", "parent": "org", "limit": 1e6}],
        default_ttl_s=3600,
    )
    holds = [budget.reserve_sync(["team"], 900, f"r{i}") for i in range(3_000)]
    wins = [0, 0, 0]
    start = threading.Barrier(3)

    def worker(w: int) -> None:
        start.wait()
        for res in holds:  # all three threads settle the same reservations, in step
            try:
                budget.settle_sync(res, 700)
            except ValueError:  # already settled by another thread
                continue
            wins[w] += 1

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert sum(wins) == 3_000, f"each reservation settled exactly once: {wins}"
    assert budget.spent_sync("team") == budget.spent_sync("org") == 3_000 * 700
    assert budget.reserved_sync("team") == 0
