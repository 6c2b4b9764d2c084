"""The budget semantics, one test matrix applied to every backend (memory and Redis).

Each test gets ``make(accounts, **options)``, which builds the backend under test on a fake
clock (``clock``), so windows, TTLs and rate limits move only when the test says so. The
Redis variant runs against a real ``redis-server`` (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable
from typing import Any

import pytest

from budget_backends import FakeClock, Make
from routeguard import BudgetExceeded, RateLimited
from routeguard.budget import MemoryBudget, Reservation
from routeguard.config.budgets import BudgetAccountConfig

USD = 1_000_000


TREE: list[dict[str, Any]] = [
    {"name": "org", "limit": 10.0, "period": "monthly"},
    {"name": "team-a", "parent": "org", "limit": 1.0, "soft_limit": 0.8},
    {"name": "key-1", "parent": "team-a", "limit": 0.5},
    {"name": "key-2", "parent": "team-a"},
]


async def test_reserve_settle_release_move_spent_and_reserved(make: Make) -> None:
    budget = await make(TREE)
    res = await budget.reserve(["key-1"], 300_000, "r1")
    assert res.chain == ("key-1", "team-a", "org"), "ancestors are always covered"
    for name in res.chain:
        assert await budget.reserved(name) == 300_000
    assert await budget.settle(res, 120_000) == 0
    assert res.state == "settled"
    for name in res.chain:
        assert (await budget.spent(name), await budget.reserved(name)) == (120_000, 0)
    res2 = await budget.reserve(["key-2"], 200_000, "r2")
    await budget.release(res2)
    await budget.release(res2)  # a no-op the second time
    assert await budget.reserved("team-a") == 0
    assert await budget.spent("key-2") == 0
    with pytest.raises(ValueError, match="already settled"):
        await budget.settle(res, 1)


async def test_refusal_names_the_account_and_charges_nothing(make: Make) -> None:
    budget = await make(TREE)
    first = await budget.reserve(["key-2"], 700_000, "r1")
    await budget.settle(first, 600_000)
    held = await budget.reserve(["key-2"], 150_000, "r2")
    with pytest.raises(BudgetExceeded) as caught:
        await budget.reserve(["key-2"], 300_000, "r3")
    err = caught.value
    assert (err.account, err.spent, err.reserved, err.limit, err.requested) == (
        "team-a",
        600_000,
        150_000,
        1_000_000,
        300_000,
    )
    assert err.resets_at is not None and err.resets_at.date().isoformat() == "2026-12-01"
    assert err.status_code == 429 and err.error_type == "budget_exceeded"
    assert str(err) == (
        "budget 'team-a' exceeded: spent $0.60 of $1.00 this month (resets 2026-12-01); "
        "this request needs up to $0.30 and $0.15 is held by requests in flight"
    )
    assert await budget.reserved("key-2") == 150_000, "the refused hold was rolled back"
    assert await budget.reserved("org") == 150_000
    await budget.release(held)
    assert await budget.reserve(["key-2"], 400_000, "r4")


async def test_leaf_limit_refuses_before_the_team(make: Make) -> None:
    budget = await make(TREE)
    with pytest.raises(BudgetExceeded) as caught:
        await budget.reserve(["key-1"], 600_000, "r1")
    assert caught.value.account == "key-1"
    assert await budget.reserved("org") == 0


async def test_soft_limit_is_flagged_and_reported(make: Make) -> None:
    alerts: list[tuple[str, str]] = []
    budget = await make(TREE, on_soft_limit=lambda name, res: alerts.append((name, res.request_id)))
    quiet = await budget.reserve(["key-2"], 700_000, "r1")
    assert quiet.soft_exceeded == ()
    loud = await budget.reserve(["key-2"], 100_000, "r2")
    assert loud.soft_exceeded == ("team-a",)
    assert alerts == [("team-a", "r2")]


async def test_overage_is_charged_in_full(make: Make) -> None:
    budget = await make(TREE)
    res = await budget.reserve(["key-1"], 100_000, "r1")
    assert await budget.settle(res, 450_000) == 350_000
    assert await budget.spent("key-1") == 450_000
    with pytest.raises(BudgetExceeded):
        await budget.reserve(["key-1"], 60_000, "r2")


async def test_reserve_is_idempotent_per_request_id(make: Make) -> None:
    budget = await make(TREE)
    a = await budget.reserve(["key-1"], 100_000, "same")
    b = await budget.reserve(["key-1"], 100_000, "same")
    assert b.request_id == a.request_id
    assert await budget.reserved("key-1") == 100_000
    await budget.settle(a, 100_000)
    assert await budget.spent("key-1") == 100_000


async def test_an_expired_hold_is_reclaimed_and_a_late_settle_still_charges(
    make: Make, clock: FakeClock
) -> None:
    budget = await make(TREE)
    res = await budget.reserve(["key-1"], 400_000, "slow", ttl_s=5)
    clock.advance(4)
    assert await budget.reserved("team-a") == 400_000
    clock.advance(2)
    assert await budget.reserved("team-a") == 0
    assert await budget.reserved("key-1") == 0
    other = await budget.reserve(["key-1"], 500_000, "next")
    await budget.release(other)
    await budget.settle(res, 300_000)
    assert await budget.spent("key-1") == 300_000
    assert await budget.spent("org") == 300_000


async def test_calendar_rollover_resets_spend_and_carries_holds(
    make: Make, clock: FakeClock
) -> None:
    budget = await make(TREE)
    spent = await budget.reserve(["key-2"], 800_000, "r1")
    await budget.settle(spent, 800_000)
    in_flight = await budget.reserve(["key-2"], 150_000, "r2", ttl_s=86_400)
    clock.advance(13 * 3600)  # 2026-12-01 01:00 UTC: a new month
    assert await budget.spent("team-a") == 0
    assert await budget.reserved("team-a") == 150_000
    with pytest.raises(BudgetExceeded) as caught:
        await budget.reserve(["key-2"], 900_000, "r3")
    assert (caught.value.spent, caught.value.reserved) == (0, 150_000)
    assert caught.value.resets_at is not None
    assert caught.value.resets_at.date().isoformat() == "2027-01-01"
    await budget.settle(in_flight, 100_000)
    assert await budget.spent("team-a") == 100_000, "charged to the month it settled in"


async def test_daily_window_follows_its_time_zone(make: Make, clock: FakeClock) -> None:
    accounts = [{"name": "ny", "limit": 1.0, "period": "daily", "timezone": "America/New_York"}]
    budget = await make(accounts)
    # 12:00 UTC is 07:00 in New York; its day ends at 05:00 UTC next day.
    res = await budget.reserve(["ny"], 900_000, "r1")
    await budget.settle(res, 900_000)
    clock.advance(16 * 3600)  # 04:00 UTC: still the same New York day
    with pytest.raises(BudgetExceeded) as caught:
        await budget.reserve(["ny"], 200_000, "r2")
    assert "today" in str(caught.value)
    clock.advance(3600)  # 05:00 UTC: midnight in New York
    assert await budget.spent("ny") == 0


async def test_rolling_window_frees_spend_as_it_ages(make: Make, clock: FakeClock) -> None:
    budget = await make([{"name": "burst", "limit": 1.0, "period": "rolling:60"}])
    res = await budget.reserve(["burst"], 1_000_000, "r1")
    await budget.settle(res, 1_000_000)
    clock.advance(59)
    with pytest.raises(BudgetExceeded) as caught:
        await budget.reserve(["burst"], 1, "r2")
    assert caught.value.resets_at is None
    assert "in the last 1 min" in str(caught.value)
    clock.advance(2.5)  # past the window plus one bucket
    assert await budget.spent("burst") == 0
    await budget.reserve(["burst"], 1_000_000, "r3")


async def test_total_budget_never_resets(make: Make, clock: FakeClock) -> None:
    budget = await make([{"name": "credit", "limit": 2.0, "period": "total"}])
    res = await budget.reserve(["credit"], 1_500_000, "r1")
    await budget.settle(res, 1_500_000)
    clock.advance(400 * 86_400)
    assert await budget.spent("credit") == 1_500_000


async def test_rate_limits_admit_a_burst_then_say_when_to_retry(
    make: Make, clock: FakeClock
) -> None:
    accounts = [
        {"name": "org", "tpm": 10_000},
        {"name": "key", "parent": "org", "rpm": 3},
    ]
    budget = await make(accounts)
    for _ in range(3):
        await budget.check_rate(["key"], tokens=3_000)
    with pytest.raises(RateLimited) as caught:
        await budget.check_rate(["key"], tokens=1)
    err = caught.value
    assert (err.account, err.unit, err.limit) == ("key", "requests", 3)
    assert err.retry_after == pytest.approx(20.0, abs=0.01)
    assert err.status_code == 429
    clock.advance(20)
    with pytest.raises(RateLimited) as caught:
        await budget.check_rate(["key"], tokens=5_000)  # org has 1,000 + 20 s' 3,333 left
    assert (caught.value.account, caught.value.unit) == ("org", "tokens")
    await budget.check_rate(["key"], tokens=1_000)  # the refused check consumed nothing
    with pytest.raises(RateLimited) as caught:
        await budget.check_rate(["org"], tokens=20_000)
    assert caught.value.retry_after is None
    assert "more than a minute allows" in str(caught.value)


async def _outcome(call: Awaitable[Reservation]) -> tuple[str, object]:
    """What one admission did: held (and how much), or which limit refused it."""
    try:
        res = await call
    except RateLimited as e:
        return "rate", (e.account, e.unit)
    except BudgetExceeded as e:
        return "budget", e.account
    return "held", res.amount


@pytest.mark.parametrize("seed", range(3))
async def test_admit_is_check_rate_then_reserve(make: Make, clock: FakeClock, seed: int) -> None:
    accounts = [
        {"name": "org", "limit": 1.0, "tpm": 20_000},
        {"name": "team", "parent": "org", "limit": 0.6, "rpm": 30},
        {"name": "key", "parent": "team", "limit": 0.4, "rpm": 12},
        {"name": "other", "parent": "org", "rpm": 20},
    ]
    one, two = await make(accounts), await make(accounts)  # admit vs the two calls
    rng = random.Random(seed)
    kinds: set[str] = set()
    for i in range(120):
        chain = [rng.choice(["key", "team", "other"])]
        amount, tokens = rng.randrange(0, 40_000), rng.randrange(0, 1_500)
        got = await _outcome(one.admit(chain, amount, f"r{i}", tokens=tokens))

        async def both(chain: list[str], amount: int, tokens: int, rid: str) -> Reservation:
            await two.check_rate(chain, tokens=tokens)
            return await two.reserve(chain, amount, rid)

        assert got == await _outcome(both(chain, amount, tokens, f"r{i}")), f"step {i}"
        kinds.add(got[0])
        if got[0] == "held" and rng.random() < 0.5:  # settle some, keep others open
            actual = rng.randrange(0, amount + 1)
            for budget in (one, two):
                res = await budget.reserve(chain, amount, f"r{i}")  # idempotent: the open hold
                await budget.settle(res, actual)
        clock.advance(rng.choice([0.0, 0.5, 2.0]))
    assert kinds == {"held", "rate", "budget"}, "the sequence exercised every outcome"
    for name in ("org", "team", "key", "other"):
        assert await one.spent(name) == await two.spent(name)
        assert await one.reserved(name) == await two.reserved(name)


async def test_admit_of_an_open_request_id_consumes_no_rate(make: Make) -> None:
    budget = await make([{"name": "key", "limit": 1.0, "rpm": 2}])
    first = await budget.admit(["key"], 100, "r1", tokens=5)
    assert await budget.admit(["key"], 100, "r1", tokens=5) is not None  # a replay
    assert first.state == "open" and await budget.reserved("key") == 100
    await budget.admit(["key"], 100, "r2")  # the second request of the minute still passes
    with pytest.raises(RateLimited):
        await budget.admit(["key"], 100, "r3")


async def test_bad_calls_fail_loudly(make: Make) -> None:
    budget = await make(TREE)
    with pytest.raises(KeyError, match="unknown budget account 'nope'"):
        await budget.reserve(["nope"], 1, "r1")
    with pytest.raises(ValueError, match="int of micro-dollars"):
        await budget.reserve(["key-1"], -5, "r2")


async def test_concurrent_requests_never_overspend(make: Make) -> None:
    """250 tasks race for a team budget that admits only part of them."""
    budget = await make(TREE)
    rng = random.Random(7)
    plans = [(rng.randint(10_000, 30_000), rng.random()) for _ in range(250)]
    settled: list[int] = []
    refused: list[BudgetExceeded] = []

    async def one(i: int, worst: int, luck: float) -> None:
        try:
            res = await budget.reserve([f"key-{1 + i % 2}"], worst, f"req-{i}")
        except BudgetExceeded as exc:
            refused.append(exc)
            return
        await asyncio.sleep(luck * 0.005)
        if luck < 0.2:
            await budget.release(res)
            return
        actual = int(worst * luck)
        await budget.settle(res, actual)
        settled.append(actual)

    await asyncio.gather(*(one(i, w, luck) for i, (w, luck) in enumerate(plans)))
    spent = await budget.spent("team-a")
    assert spent == sum(settled) <= 1_000_000
    assert await budget.spent("key-1") <= 500_000
    assert await budget.spent("org") == spent
    for name in ("key-1", "key-2", "team-a", "org"):
        assert await budget.reserved(name) == 0, f"hold leaked on {name}"
    assert refused and settled, (len(refused), len(settled))
    for exc in refused:
        assert exc.account in ("key-1", "team-a")
        assert exc.spent + exc.reserved + exc.requested > exc.limit
        assert exc.resets_at is not None


async def test_a_reservation_is_a_plain_record(make: Make) -> None:
    budget = await make(TREE)
    res = await budget.reserve(["key-1"], 1, "r1")
    assert isinstance(res, Reservation)
    assert res.is_open and res.amount == 1 and res.expires_at > 0


async def test_a_late_settle_charges_the_accounts_held_after_a_move(clock: FakeClock) -> None:
    """A hold that expired is charged, when settled, to the accounts it held (as an open
    hold's settle is), not to the ancestors its team has after a move meanwhile."""
    budget = MemoryBudget(
        [
            {"name": "org", "limit": 10.0},
            {"name": "dept-1", "parent": "org"},
            {"name": "dept-2", "parent": "org"},
            {"name": "team-a", "parent": "dept-1"},
            {"name": "key-1", "parent": "team-a"},
        ],
        clock=clock,
    )
    res = await budget.reserve(["key-1"], 400_000, "slow", ttl_s=5)
    assert res.chain == ("key-1", "team-a", "dept-1", "org")
    clock.advance(6)  # the hold expires
    assert await budget.reserved("dept-1") == 0
    moved = BudgetAccountConfig(name="team-a", parent="dept-2")
    budget.upsert(budget.accounts.build(moved))  # the team moves to another department
    await budget.settle(res, 300_000)
    spent = {n: await budget.spent(n) for n in ("key-1", "team-a", "dept-1", "dept-2", "org")}
    assert spent == {"key-1": 300_000, "team-a": 300_000, "dept-1": 300_000, "dept-2": 0,
                     "org": 300_000}  # fmt: skip


def test_a_rate_check_racing_a_limit_change_keeps_no_stale_limiters(clock: FakeClock) -> None:
    """check_rate_sync works out a chain's plan under the lock: a plan made from the
    limiters an upsert on another thread replaces meanwhile is not kept past it."""
    budget = MemoryBudget([{"name": "org", "limit": 10.0, "rpm": 1}], clock=clock)
    raced: list[threading.Thread] = []

    class Racing(dict[str, Any]):
        def __getitem__(self, name: str) -> Any:
            value = super().__getitem__(name)
            if not raced:  # another thread raises the limit now, while the plan is made
                cfg = BudgetAccountConfig(name="org", limit=10.0, rpm=100)
                thread = threading.Thread(target=budget.upsert, args=(budget.accounts.build(cfg),))
                raced.append(thread)
                thread.start()
                thread.join(0.5)  # with the lock held here, it waits for this check to end
            return value

    budget._rates = Racing(budget._rates)
    budget.check_rate_sync(["org"])
    raced[0].join()
    for _ in range(5):  # the new limit: 100 a minute
        budget.check_rate_sync(["org"])


def test_a_negative_rate_cost_consumes_nothing(clock: FakeClock) -> None:
    """A negative request or token count takes nothing from a limiter, as 0 does (the native
    check takes unsigned costs: it is not handed one)."""
    budget = MemoryBudget([{"name": "org", "rpm": 1, "tpm": 10}], clock=clock)
    budget.check_rate_sync(["org"], tokens=-5, requests=-1)
    budget.check_rate_sync(["org"], tokens=10, requests=1)  # the whole allowance is left
    with pytest.raises(RateLimited):
        budget.check_rate_sync(["org"], tokens=1, requests=0)
