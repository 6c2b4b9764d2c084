"""Transient (end-user) budget accounts: dropped once idle past ``keep``, never in a way a
budget could notice. Every distinct ``user`` makes one, so without this a caller with any
key could grow the proxy without bound; the backends keep the registry bounded while an
account with spend, a consumed rate allowance or a reservation in flight stays (memory and
Redis, the latter on a real ``redis-server``)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from budget_backends import FakeClock, Make
from priced import priced_config
from routeguard import BudgetExceeded, RateLimited
from routeguard import config as config_mod
from routeguard.budget import BudgetBackend, MemoryBudget, RedisBudget
from routeguard.budget import alerts as alerts_mod
from routeguard.budget.accounts import load_accounts, usd_to_micros
from routeguard.budget.alerts import BudgetAlerter
from routeguard.budget.keys import KeySpec
from routeguard.budget.layer import BudgetLayer
from routeguard.budget.transient import Transients
from routeguard.config.budgets import BudgetAccountConfig
from routeguard.config.settings import BudgetAlerts
from routeguard.gateway import Gateway
from routeguard.mock import MockServer

USD = 1_000_000


def _user(backend: BudgetBackend, name: str, **limits: Any) -> str:
    """Make the transient account ``name`` under ``org`` (``limits`` as in a config)."""
    cfg = BudgetAccountConfig(name=name, parent="org", **{"limit": 1.0, "rpm": 5, **limits})
    backend.upsert(backend.accounts.build(cfg), transient=True)
    return name


async def _churn(backend: BudgetBackend, count: int, tag: str = "x") -> None:
    """``count`` new end users, each admitted once and released (idle right after, as far as
    the budget goes, except for the request its RPM counted)."""
    for i in range(count):
        name = _user(backend, f"eu.{tag}{i}", rpm=None)
        res = await backend.admit((name,), 10, f"r-{tag}-{i}")
        await backend.release(res)


def test_the_registry_drops_the_oldest_idle_and_passes_over_the_rest() -> None:
    reg = Transients(keep=4)
    for name in "abcdef":
        reg.add(name)
    reg.held(["b", "zz"])  # zz is not transient: ignored
    # Down to keep - 1: a, d and e go (b is in flight, c not idle: both move back).
    assert reg.sweep(lambda name: name != "c") == ["a", "d", "e"]
    assert list(reg.live) == ["f", "b", "c"] and reg.in_flight("b") == 1
    reg.done(["b"])
    reg.done(["b"])  # a second done never goes below zero
    assert reg.in_flight("b") == 0
    reg.add("g")
    reg.add("h")
    assert reg.sweep(lambda _: True) == []  # the next sweep waits for a step of additions
    assert reg.sweep(lambda _: True) == ["f", "b"]
    with pytest.raises(ValueError):
        Transients(keep=0)


def test_the_newest_account_is_never_dropped() -> None:
    reg = Transients(keep=1)
    reg.add("old")
    reg.held(["old"])
    reg.add("new")  # about to be used: a sweep that finds only it idle keeps it
    assert reg.sweep(lambda _: True) == [] and list(reg.live) == ["new", "old"]


async def test_churn_keeps_the_registry_bounded(make: Make) -> None:
    backend = await make([{"name": "org", "limit": 100.0}], keep_transient=16)
    await _churn(backend, 500)
    assert len(backend.transients) <= 16 + 2  # keep, and a step of 1 before the next sweep
    assert len(backend.accounts) <= 1 + 16 + 2
    assert await backend.spent("org") == 0
    if isinstance(backend, MemoryBudget):
        # Dropped ledger accounts are reused, not left behind.
        assert len(backend._ledger) <= 1 + 16 + 2


async def test_an_account_that_spent_keeps_its_spend_across_a_drop(
    make: Make, clock: FakeClock
) -> None:
    backend = await make([{"name": "org", "limit": 100.0}], keep_transient=8)
    alice = _user(backend, "eu.alice", limit=0.5, rpm=None)
    res = await backend.admit((alice,), USD // 2, "a1")
    await backend.settle(res, USD // 2 - 10)
    await _churn(backend, 200)
    # Dropped (memory: folded into a dormant record; Redis: its spend is in Redis) ...
    assert alice not in backend.accounts.by_name
    if isinstance(backend, MemoryBudget):  # reported as it stands
        assert await backend.spent(alice) == USD // 2 - 10
    _user(backend, alice, limit=0.5, rpm=None)  # ... and made again on use, as the layer does
    assert await backend.spent(alice) == USD // 2 - 10
    with pytest.raises(BudgetExceeded) as info:
        await backend.admit((alice,), 100, "a2")
    assert info.value.account == alice


@pytest.mark.parametrize("period", ["daily", "rolling:3600", "total"])
async def test_paying_end_users_keep_the_registry_bounded_and_their_spend(
    period: str, clock: FakeClock
) -> None:
    """Each new end user makes one paid request: in memory every one of them stays only as a
    dormant record (its spend), the registry and the ledger stay bounded, and each is
    charged its spend again when it comes back, for as long as its window holds it."""
    backend = MemoryBudget([{"name": "org", "limit": 1000.0}], keep_transient=16, clock=clock)
    for i in range(300):
        name = _user(backend, f"eu.p{i}", limit=0.001, rpm=None, period=period)
        backend.settle_sync(backend.admit_sync((name,), 600, f"p{i}"), 600)
    assert len(backend.transients) <= 16 + 2 and len(backend._ledger) <= 1 + 16 + 2
    assert backend.spent_sync("eu.p3") == 600 and backend.reserved_sync("eu.p3") == 0
    _user(backend, "eu.p3", limit=0.001, rpm=None, period=period)
    assert backend.spent_sync("eu.p3") == 600
    with pytest.raises(BudgetExceeded):  # 600 + 401 > 1000: the spend came back with it
        backend.admit_sync(("eu.p3",), 401, "again")
    clock.now += 2 * 86_400  # past a day and the rolling hour
    for i in range(40):  # new end users keep the sweeps (and their pruning) going
        _user(backend, f"eu.q{i}", rpm=None, period=period)
    _user(backend, "eu.p4", limit=0.001, rpm=None, period=period)
    expected = 600 if period == "total" else 0
    assert backend.spent_sync("eu.p4") == expected
    if period != "total":  # their window passed: the dormant records go
        assert not backend._dormant


async def test_an_account_with_rate_taken_stays_until_its_allowance_refills(
    make: Make, clock: FakeClock
) -> None:
    backend = await make([{"name": "org", "limit": 100.0}], keep_transient=8)
    bob = _user(backend, "eu.bob", rpm=2)
    for i in range(2):
        await backend.release(await backend.admit((bob,), 0, f"b{i}"))
    await _churn(backend, 100)
    if bob not in backend.accounts.by_name:  # Redis: made again, its limiter in Redis
        _user(backend, bob, rpm=2)
    with pytest.raises(RateLimited):
        await backend.admit((bob,), 0, "b2")  # not dropped: a new account would admit
    clock.now += 61
    await _churn(backend, 100, tag="y")
    assert bob not in backend.accounts.by_name  # idle now: dropped with the others
    _user(backend, bob, rpm=2)
    await backend.release(await backend.admit((bob,), 0, "b3"))


async def test_a_hold_in_flight_pins_its_account_even_at_zero(make: Make) -> None:
    backend = await make([{"name": "org", "limit": 100.0}], keep_transient=8)
    carol = _user(backend, "eu.carol")
    res = await backend.admit((carol,), 0, "c1")  # a free model: a hold of nothing
    await _churn(backend, 200)
    assert carol in backend.accounts.by_name
    await backend.settle(res, 700)
    assert await backend.spent(carol) == 700
    assert await backend.spent("org") == 700


async def test_a_late_settlement_of_an_expired_hold_reaches_its_own_account(
    make: Make, clock: FakeClock
) -> None:
    backend = await make([{"name": "org", "limit": 100.0}], keep_transient=8, default_ttl_s=5)
    dave = _user(backend, "eu.dave", rpm=None)
    res = await backend.admit((dave,), 300, "d1")
    clock.now += 10  # the hold expires (released on the next call)
    await _churn(backend, 200)
    assert await backend.reserved(dave) == 0
    await backend.settle(res, 250)
    assert await backend.spent(dave) == 250
    assert await backend.spent("org") == 250


def test_a_reused_ledger_account_starts_as_a_new_one(clock: FakeClock) -> None:
    backend = MemoryBudget([{"name": "org", "limit": 100.0}], keep_transient=4, clock=clock)
    for i in range(10):  # each took one of its 5 RPM: not idle, none dropped
        name = _user(backend, f"eu.{i}")
        backend.release_sync(backend.admit_sync((name,), 10, f"r{i}"))
    assert len(backend.transients) == 10
    clock.now += 13  # a request of 5 RPM counts for 12 s
    _user(backend, "eu.last")
    assert len(backend.transients) == 3
    accounts, limiters = len(backend._ledger), len(backend._limiter)
    # A permanent account of another limit takes over a dropped account's ledger account
    # and limiter, and starts as a new one would.
    cfg = BudgetAccountConfig(name="team", parent="org", limit=0.000_5, rpm=5)
    backend.upsert(backend.accounts.build(cfg))
    assert (len(backend._ledger), len(backend._limiter)) == (accounts, limiters)
    assert backend.spent_sync("team") == 0 and backend.reserved_sync("team") == 0
    for i in range(5):
        backend.release_sync(backend.admit_sync(("team",), 500, f"t{i}"))
    with pytest.raises(RateLimited):
        backend.admit_sync(("team",), 1, "t5")
    clock.now += 60
    with pytest.raises(BudgetExceeded):
        backend.admit_sync(("team",), 501, "t6")


async def test_the_gateway_bounds_end_users_and_never_overspends(mock: MockServer) -> None:
    cfg = priced_config(mock.url, budget_settings={"end_user": {"limit": 0.2}})
    gw = Gateway.from_config(cfg)
    try:
        assert gw.budget is not None
        backend = gw.budget.backend
        backend.transients.keep = 16
        _, key = gw.keys.create(KeySpec(max_budget=50.0))
        _, broke = gw.keys.create(KeySpec(max_budget=0.000_001))
        req = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
        with pytest.raises(BudgetExceeded):
            for _ in range(100):
                await gw.chat_result({**req, "user": "alice"}, key=key)
        alice = f"eu.{key.key_id}.alice"
        spent = await backend.spent(alice)
        # Every request of a key out of money is refused, each with a new end user: the
        # way to grow the proxy that costs the caller nothing.
        for i in range(300):
            with pytest.raises(BudgetExceeded):
                await gw.chat_result({**req, "user": f"u{i}"}, key=broke)
        assert len(backend.transients) <= 16 + 2
        with pytest.raises(BudgetExceeded):
            await gw.chat_result({**req, "user": "alice"}, key=key)
        assert await backend.spent(alice) == spent
        assert 0 < spent <= usd_to_micros(0.2)
    finally:
        await gw.aclose()


async def test_an_end_user_dropped_between_its_chain_and_its_hold_is_made_again(
    mock: MockServer,
) -> None:
    cfg = priced_config(mock.url, budget_settings={"end_user": {"limit": 0.2, "rpm": 1000}})
    gw = Gateway.from_config(cfg)
    try:
        layer = gw.budget
        assert layer is not None
        layer.backend.transients.keep = 4
        _, key = gw.keys.create(KeySpec(max_budget=50.0))
        chain = layer.chain_for([], key, end_user="erin")
        for i in range(40):  # other requests meanwhile drop erin's idle account
            layer.chain_for([], key, end_user=f"v{i}")
        assert chain[0] not in layer.backend.accounts.by_name
        req = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        res = await layer.admit(chain, req, gw.config.deployments["m"])
        assert res.chain[0] == chain[0] and await layer.backend.reserved(chain[0]) == res.amount
        await layer.release(res)
    finally:
        await gw.aclose()


async def test_redis_keeps_an_end_users_spend_across_a_drop(redis_server: str) -> None:
    backend = RedisBudget([{"name": "org", "limit": 100.0}], redis_server,
                          prefix=f"t{uuid.uuid4().hex[:12]}", keep_transient=4)  # fmt: skip
    try:
        frank = _user(backend, "eu.frank", limit=0.5, rpm=None)
        await backend.settle(await backend.admit((frank,), USD // 2, "f1"), USD // 2)
        await _churn(backend, 40)
        assert frank not in backend.accounts.by_name  # dropped here; its spend is in Redis
        _user(backend, frank, limit=0.5, rpm=None)
        assert await backend.spent(frank) == USD // 2
        with pytest.raises(BudgetExceeded):
            await backend.admit((frank,), 1, "f2")
    finally:
        await backend.close()


def _new(backend: Any, name: str) -> None:
    cfg = BudgetAccountConfig(name=name, parent="org", limit=1.0, rpm=5)
    backend.upsert(backend.accounts.build(cfg), transient=True)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_new_end_user_past_keep_does_not_rebuild_every_cached_plan(kind: str) -> None:
    """Sweeps are amortised (one per keep/16 additions): a new end user past ``keep`` does
    not rebuild the plan cache when its sweep waits or drops nothing (Redis did, O(keep)
    work per new end user)."""
    accounts = [{"name": "org", "limit": 100.0}]
    backend: Any
    if kind == "memory":
        backend = MemoryBudget(accounts, keep_transient=160)
    else:  # sync paths only: nothing connects
        backend = RedisBudget(accounts, "redis://127.0.0.1:1/0", prefix="rv", keep_transient=160)
    for i in range(160):
        _new(backend, f"eu.p{i}")
        backend._plan(backend.accounts.chain((f"eu.p{i}",)))
    rebuilds = 0
    for i in range(400):
        before = backend._plans
        _new(backend, f"eu.n{i}")
        backend._plan(backend.accounts.chain((f"eu.n{i}",)))
        rebuilds += backend._plans is not before
    assert rebuilds <= 400 // 10 + 2, f"{rebuilds} plan-cache rebuilds for 400 new end users"


async def test_redis_a_hold_whose_round_trip_overlaps_a_sweep_stays_registered(
    redis_server: str,
) -> None:
    """An end user's hold counts as in flight from before its round trip: new end users
    arriving meanwhile cannot sweep its account away."""
    backend = RedisBudget([{"name": "org", "limit": 100.0}], redis_server,
                          prefix=f"t{uuid.uuid4().hex[:12]}", keep_transient=4)  # fmt: skip
    try:
        _new(backend, "eu.old")
        for i in range(3):
            _new(backend, f"eu.u{i}")
        real = backend._admit

        async def meanwhile(**kw: Any) -> Any:
            reply = await real(**kw)
            for i in range(3):  # other requests bring new end users at this await
                _new(backend, f"eu.v{i}")
            return reply

        backend._admit = meanwhile  # type: ignore[assignment]
        res = await backend.admit(("eu.old",), 10, "r1")
        assert res.is_open and "eu.old" in backend.accounts.by_name
        assert backend.transients.in_flight("eu.old") == 1
        await backend.release(res)
        assert backend.transients.in_flight("eu.old") == 0
        backend._admit = real  # type: ignore[assignment]
        with pytest.raises(BudgetExceeded):  # a refusal leaves nothing counted
            await backend.admit(("eu.v0",), 2 * USD, "r2")
        assert backend.transients.in_flight("eu.v0") == 0
    finally:
        await backend.close()


async def test_redis_pressure_read_while_held_is_never_a_500(redis_server: str) -> None:
    """The budget-aware routing check reads a held end user's usage across awaits while
    other requests bring new end users: its account stays (it is in flight)."""
    raw = {
        "model_list": [{"type": "openai", "model_name": "m", "model": "sim-m", "api_key": "k",
                        "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 1.0}],
        "budgets": [{"name": "org", "limit": 100.0}],
        "budget_settings": {"default_account": "org", "end_user": {"limit": 1.0}},
    }  # fmt: skip
    cfg = config_mod.load(raw)
    backend = RedisBudget(load_accounts(cfg.accounts), redis_server,
                          prefix=f"t{uuid.uuid4().hex[:12]}", keep_transient=4)  # fmt: skip
    layer = BudgetLayer(cfg, backend)
    try:
        chain = layer.chain_for([], None, end_user="old")
        for i in range(3):
            layer.chain_for([], None, end_user=f"u{i}")
        n = iter(range(1000))

        def others(count: int) -> None:
            for _ in range(count):
                layer.chain_for([], None, end_user=f"v{next(n)}")

        real_reserve, real_read = backend._reserve, backend._read

        async def reserve(**kw: Any) -> Any:
            reply = await real_reserve(**kw)
            others(3)
            return reply

        async def read(**kw: Any) -> Any:
            reply = await real_read(**kw)
            others(6)
            return reply

        backend._reserve, backend._read = reserve, read  # type: ignore[assignment]
        req = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        held = await layer.admit(chain, req, cfg.deployments["m"])
        assert await layer.pressured(chain, 0.8, held.amount) is None
        await layer.release(held)
    finally:
        await layer.close()


async def test_two_tenants_end_users_never_share_an_account() -> None:
    """``eu.<parent>.<user>`` read the same for parent ``acme`` with user ``eu.x`` and parent
    ``acme.eu`` with user ``x``: one tenant's end user was held and charged on the other
    tenant's chain. A parent with a dot now gets a digest name."""
    raw = {
        "model_list": [{"type": "openai", "model_name": "m", "model": "sim-m", "api_key": "k",
                        "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 1000.0}],
        "budgets": [{"name": "acme", "limit": 100.0}, {"name": "acme.eu", "limit": 100.0}],
        "budget_settings": {"end_user": {"limit": 1.0}},
    }  # fmt: skip
    cfg = config_mod.load(raw)
    layer = BudgetLayer(cfg)
    first = layer.chain_for(["acme"], None, end_user="eu.x")
    chain = layer.chain_for(["acme.eu"], None, end_user="x")
    assert first[0] != chain[0] and chain[1] == "acme.eu"
    req = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    deps = cfg.deployments["m"]
    res = await layer.admit(chain, req, deps)
    await layer.settle(res, deps[0], {"prompt_tokens": 10, "completion_tokens": 5})
    assert await layer.backend.spent("acme.eu") > 0
    assert await layer.backend.spent("acme") == 0
    assert await layer.backend.spent(first[0]) == 0


# ---------------------------------------------------------------- dormant spend (review 2)

BIG = 10**9
ORG = [{"name": "org", "limit": 100.0}]


def _eu(b: MemoryBudget, name: str, **limits: Any) -> str:
    cfg = BudgetAccountConfig(name=name, parent="org", **{"limit": 0.001, **limits})
    if name not in b.accounts.by_name:  # as the layer's _split does
        b.upsert(b.accounts.build(cfg), transient=True)
    return name


def _others(b: MemoryBudget, count: int, tag: str) -> None:
    """New end users, each held and released (no spend): sweeps drop the idle ones."""
    for i in range(count):
        name = _eu(b, f"eu.org.{tag}{i}")
        b.release_sync(b.admit_sync((name,), 1, f"{tag}{i}"))


def _spend(b: MemoryBudget, name: str, amount: int, rid: str) -> None:
    b.settle_sync(b.admit_sync((name,), amount, rid), amount)


def _at(when: datetime) -> FakeClock:
    return FakeClock(when)


def test_a_clock_stepped_back_over_midnight_keeps_an_end_users_dormant_spend() -> None:
    """The ledger's calendar never moves back: the dormant spend follows it, not the wall
    clock (a 30 s NTP step back over midnight let a dropped end user spend twice)."""
    clock = _at(datetime(2026, 12, 1, 0, 0, 20, tzinfo=UTC))
    dropping = MemoryBudget(ORG, clock=clock, keep_transient=2)
    keeping = MemoryBudget(ORG, clock=clock, keep_transient=BIG)
    for b in (dropping, keeping):
        _spend(b, _eu(b, "eu.org.alice", period="daily"), 1000, "a1")  # the whole limit
    _others(dropping, 10, "c")
    assert "eu.org.alice" not in dropping.accounts.by_name
    clock.now -= 30
    for b in (keeping, dropping):
        _eu(b, "eu.org.alice", period="daily")
        with pytest.raises(BudgetExceeded):
            b.admit_sync(("eu.org.alice",), 1000, "a2")


def _eu_config(spec: dict[str, Any]) -> Any:
    return config_mod.load({
        "model_list": [{"type": "openai", "model_name": "m", "model": "sim-m", "api_key": "k",
                        "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 1.0}],
        "budgets": ORG,
        "budget_settings": {"end_user": {"limit": 0.001, **spec}},
    })  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"period": "monthly"}, {"period": "daily"}),
        ({"period": "daily"}, {"period": "daily", "timezone": "Europe/Berlin"}),
        ({"period": "rolling:3600"}, {"period": "rolling:7200"}),
        ({"period": "daily"}, {"period": "total"}),
    ],
)
def test_a_reload_changing_the_end_user_period_keeps_dormant_spend(
    before: dict[str, str], after: dict[str, str]
) -> None:
    """A dropped end user made again under a new period (a reload) is charged its spend
    as if it came at the drop: never a fresh window over the one it spent."""
    clock = _at(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    results = {}
    for keep in (2, BIG):
        backend = MemoryBudget(ORG, clock=clock, keep_transient=keep)
        layer = BudgetLayer(_eu_config(before), backend)
        chain = layer.chain_for(["org"], None, end_user="bob")
        backend.settle_sync(backend.admit_sync(chain, 1000, "b1"), 1000)  # bob's whole limit
        for i in range(10):
            layer.chain_for(["org"], None, end_user=f"v{i}")
        clock.now += 60
        chain = BudgetLayer(_eu_config(after), backend).chain_for(["org"], None, end_user="bob")
        try:
            backend.release_sync(backend.admit_sync(chain, 1000, "b2"))
            results[keep] = "admitted"
        except BudgetExceeded:
            results[keep] = "refused"
        clock.now -= 60
    assert results == {2: "refused", BIG: "refused"}


def test_rolling_spend_folded_late_ages_out_when_it_was_spent() -> None:
    """A rolling window's dormant spend keeps its buckets: dropped long after it was spent,
    it ages out when the real spend would (not a window after the drop)."""
    clock = _at(datetime(2026, 11, 30, 0, 0, tzinfo=UTC))
    dropping = MemoryBudget(ORG, clock=clock, keep_transient=2)
    keeping = MemoryBudget(ORG, clock=clock, keep_transient=BIG)
    for b in (dropping, keeping):
        _spend(b, _eu(b, "eu.org.eve", period="rolling:86400"), 1000, "e1")
    clock.now += 20 * 3600
    _others(dropping, 10, "c")
    assert "eu.org.eve" not in dropping.accounts.by_name
    assert dropping.spent_sync("eu.org.eve") == 1000
    clock.now += 5 * 3600  # 25 h after the spend: out of the 24 h window
    for b in (keeping, dropping):
        _eu(b, "eu.org.eve", period="rolling:86400")
        assert b.spent_sync("eu.org.eve") == 0
        b.release_sync(b.admit_sync(("eu.org.eve",), 1000, "e2"))


async def test_an_end_users_alert_survives_its_drop_before_the_check() -> None:
    clock = _at(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    raised = {}
    for keep in (2, BIG):
        b = MemoryBudget(ORG, clock=clock, keep_transient=keep)
        alerter = BudgetAlerter(BudgetAlerts(thresholds=(0.8,)), b, clock=clock)
        name = _eu(b, "eu.org.dan", soft_limit=0.0005)
        _spend(b, name, 900, "d1")  # past the soft limit and 80 %
        noticed = b.accounts.by_name[name]
        _others(b, 10, "c")  # other requests run before the checker gets its turn
        raised[keep] = sorted(a.level for a in await alerter.check(name, noticed))
    assert raised[BIG] == ["0.8", "soft_limit"] and raised[2] == raised[BIG]


async def test_alerts_sent_does_not_grow_per_distinct_end_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alerts_mod, "_SENT_MAX", 300)
    clock = _at(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    b = MemoryBudget(ORG, clock=clock, keep_transient=16)
    alerter = BudgetAlerter(BudgetAlerts(thresholds=(0.8,)), b, clock=clock)
    for day in range(3):
        for i in range(300):
            name = _eu(b, f"eu.org.d{day}u{i}", period="daily")
            _spend(b, name, 900, f"{day}-{i}")
            await alerter.check(name)
        clock.now += 86_400
    assert len(alerter._sent) <= 300 + 1  # those of past days were forgotten


def test_a_reload_lowering_the_end_user_limit_binds_live_end_users() -> None:
    clock = _at(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    backend = MemoryBudget(ORG, clock=clock)
    chain = BudgetLayer(_eu_config({"limit": 0.01}), backend).chain_for(
        ["org"], None, end_user="mal"
    )
    backend.settle_sync(backend.admit_sync(chain, 1000, "m1"), 1000)
    chain = BudgetLayer(_eu_config({"limit": 0.001}), backend).chain_for(
        ["org"], None, end_user="mal"
    )
    with pytest.raises(BudgetExceeded):  # 1000 of a 1000 limit now: no more
        backend.admit_sync(chain, 5000, "m2")
    assert backend.spent_sync(chain[0]) == 1000  # its spend stayed with the new limit


# ---------------------------------------------------------------- dormant spend (review 3)


def _outcome(b: MemoryBudget, chain: tuple[str, ...], amount: int, rid: str) -> str:
    try:
        b.release_sync(b.admit_sync(chain, amount, rid))
    except BudgetExceeded:
        return "refused"
    return "admitted"


def test_rolling_dormant_spend_is_not_forgotten_a_bucket_early() -> None:
    """Same period, no reload, no clock step. Spend at 00:00:59 in a rolling:3600 window
    counts until 00:59:59; the record is stamped at its bucket's start (00:00:00) and
    `_still_counting` keeps it only while start + width > now, so from 01:00:00 the dropped
    end user has its whole limit again (the ledger itself counts the bucket until 01:01)."""
    clock = FakeClock(datetime(2026, 11, 30, 0, 0, 59, tzinfo=UTC))
    runs = {}
    for keep in (2, BIG):
        b = MemoryBudget(ORG, clock=clock, keep_transient=keep)
        name = _eu(b, "eu.org.eve", period="rolling:3600")
        b.settle_sync(b.admit_sync((name,), 1000, "e1"), 1000)  # the whole limit
        _others(b, 10, "c")
        clock.now += 3551  # 00:60:10: the spend was 3551 s ago, inside the hour
        spent = b.spent_sync(name)
        _eu(b, name, period="rolling:3600")
        runs[keep] = (spent, _outcome(b, (name,), 1000, "e2"))
        clock.now -= 3551
    assert runs[BIG] == (1000, "refused")
    assert runs[2] == runs[BIG]


@pytest.mark.parametrize(
    ("after", "start", "later"),
    [
        # spent 30 s after midnight; the 168 min bucket began on the previous day
        ("daily", datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC), 60),
        # spent at 12:00, in a bucket begun at 10:24: under an hour's window 60 s later
        ("rolling:3600", datetime(2026, 11, 30, 12, 0, tzinfo=UTC), 60),
    ],
)
def test_a_reload_from_a_rolling_period_counts_each_part_at_its_latest_time(
    after: str, start: datetime, later: float
) -> None:
    """The docs say a part counts "as if spent at its latest possible time" under a new
    period; a rolling record's parts are at their bucket's start (its earliest), so a part
    spent after the new window's start (or within the new width) is dropped."""
    clock = FakeClock(start)
    b = MemoryBudget(ORG, clock=clock, keep_transient=2)
    layer = BudgetLayer(_eu_config({"period": "rolling:604800"}), b)
    chain = layer.chain_for(["org"], None, end_user="bob")
    b.settle_sync(b.admit_sync(chain, 1000, "b1"), 1000)  # bob's whole limit
    for i in range(10):
        layer.chain_for(["org"], None, end_user=f"v{i}")
    assert chain[0] not in b.accounts.by_name
    clock.now += later
    chain = BudgetLayer(_eu_config({"period": after}), b).chain_for(["org"], None, end_user="bob")
    # 1000 spent `later` seconds ago: inside today / inside the last hour
    assert _outcome(b, chain, 1000, "b2") == "refused"


def test_rolling_dormant_spend_keeps_its_time_across_a_clock_step_back() -> None:
    """`_wake` charges a part at min(its time, now): after the clock steps back, spend made
    at 12:30 is charged at 12:00 and ages out at 13:00, while the kept account (whose bucket
    keeps its 12:30 tag) counts it until 13:30."""
    clock = FakeClock(datetime(2026, 11, 30, 12, 30, tzinfo=UTC))
    runs = {}
    for keep in (2, BIG):
        start = clock.now
        b = MemoryBudget(ORG, clock=clock, keep_transient=keep)
        name = _eu(b, "eu.org.eve", period="rolling:3600")
        b.settle_sync(b.admit_sync((name,), 1000, "e1"), 1000)
        clock.now -= 1800  # an NTP step back of 30 min
        _others(b, 10, "c")
        _eu(b, name, period="rolling:3600")  # made again at 12:00 (wall clock)
        clock.now = start + 3000  # 13:20: the spend was 50 min ago
        runs[keep] = (b.spent_sync(name), _outcome(b, (name,), 1000, "e2"))
        clock.now = start
    assert runs[BIG] == (1000, "refused")
    assert runs[2] == runs[BIG]


def test_new_limits_on_a_live_account_in_its_old_period_exceed_the_configured_budget() -> None:
    """A reload from daily $0.001 to monthly $0.002: a live end user (fewer than `keep`, so
    never dropped) gets the new limit in its old daily window, $0.002 a day: the configured
    $0.002 a month is passed on the second day (before e17f9bc it kept $0.001 a day)."""
    clock = FakeClock(datetime(2026, 11, 10, 12, 0, tzinfo=UTC))
    b = MemoryBudget(ORG, clock=clock)
    BudgetLayer(_eu_config({"period": "daily"}), b).chain_for(["org"], None, end_user="amy")
    layer = BudgetLayer(_eu_config({"period": "monthly", "limit": 0.002}), b)
    chain = layer.chain_for(["org"], None, end_user="amy")
    b.settle_sync(b.admit_sync(chain, 2000, "a1"), 2000)  # the whole monthly budget
    clock.now += 86_400  # the next day, same month
    chain = layer.chain_for(["org"], None, end_user="amy")
    assert _outcome(b, chain, 1000, "a2") == "refused"


async def test_an_alert_check_remaking_a_dropped_end_user_keeps_the_current_limit() -> None:
    """The checker re-makes a dropped end user from the Account it noticed, limits and all:
    noticed before a reload lowered the end-user limit, it brings back the old limit, and a
    request whose chain was named before the drop is admitted under it (its `_split` sees
    the account and does not re-check the limits)."""
    clock = FakeClock(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    b = MemoryBudget(ORG, clock=clock, keep_transient=2)
    alerter = BudgetAlerter(BudgetAlerts(thresholds=(0.8,)), b, clock=clock)
    old = BudgetLayer(_eu_config({"limit": 0.002}), b)
    chain = old.chain_for(["org"], None, end_user="bob")
    b.settle_sync(b.admit_sync(chain, 900, "b1"), 900)
    noticed = b.accounts.by_name[chain[0]]  # as the alerter's notice keeps it
    new = BudgetLayer(_eu_config({"limit": 0.001}), b)  # a reload lowers the limit
    chain = new.chain_for(["org"], None, end_user="bob")  # a request names its chain
    for i in range(10):  # other requests run; bob (idle) is dropped
        new.chain_for(["org"], None, end_user=f"v{i}")
    assert chain[0] not in b.accounts.by_name
    await alerter.check(chain[0], noticed)  # the checker's turn
    with pytest.raises(BudgetExceeded):  # 900 spent of 1000: 1000 more does not fit
        await new._hold(chain, 1000, 0, None)


# ---------------------------------------------------------------- period switch (review 4)


def _acc(b: MemoryBudget, name: str, **limits: Any) -> Any:
    cfg = BudgetAccountConfig(name=name, parent="org", **{"limit": 0.001, **limits})
    return b.accounts.build(cfg)


def test_a_busy_end_user_takes_the_reloaded_period() -> None:
    """Daily $0.001 reloaded to monthly $0.001 (RPM 10), the end user pinged every 5 s, so
    its limiter is never full: it still takes the new period (its limiters kept) as soon as
    nothing is held, so after midnight December's spend still refuses."""
    clock = FakeClock(datetime(2026, 12, 1, 23, 50, tzinfo=UTC))
    b = MemoryBudget(ORG, clock=clock, keep_transient=2)
    name = "eu.org.bob"
    b.upsert(_acc(b, name, period="daily", rpm=10), transient=True)
    b.settle_sync(b.admit_sync((name,), 1000, "spend-1"), 1000)  # the whole limit, Dec 1
    monthly = _acc(b, name, period="monthly", rpm=10)
    for i in range(12 * 20):  # 20 minutes of a request every 5 s, across midnight
        b.upsert(monthly, transient=True)  # the layer's end_user_account, each request
        with contextlib.suppress(RateLimited, BudgetExceeded):
            b.release_sync(b.admit_sync((name,), 1, f"ping-{i}"))
        clock.now += 5
    assert datetime.fromtimestamp(clock.now, UTC).day == 2
    b.upsert(monthly, transient=True)
    with pytest.raises(BudgetExceeded):
        b.admit_sync((name,), 1000, "spend-2")


def test_an_unchanged_upsert_still_applies_the_transient_flag() -> None:
    """An account made permanent with the same limits leaves the transient registry: it is
    never dropped (a later request on it was a KeyError, a 500)."""
    clock = FakeClock(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    b = MemoryBudget(ORG, clock=clock, keep_transient=2)
    acc = _acc(b, "shared")
    b.upsert(acc, transient=True)
    b.upsert(acc)  # now a permanent account, same limits
    for i in range(10):
        n = f"eu.org.c{i}"
        b.upsert(_acc(b, n), transient=True)
        b.release_sync(b.admit_sync((n,), 1, f"c{i}"))
    b.release_sync(b.admit_sync(("shared",), 1, "s1"))
