"""Teams, users, customers and organizations where the keys live: the SQLite key database
(another connection sees them), the Redis key store (another instance sees them, deletions
too, a new one loads them), and their budgets exact under concurrency, in process and on
Redis, including a customer and a team held on different roots."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from priced import micros, priced_config
from routeguard.budget.accounts import usd_to_micros
from routeguard.budget.directory import (
    Customer,
    Directory,
    Member,
    Organization,
    Team,
    member_account,
)
from routeguard.budget.keys import KeySpec, KeyStore
from routeguard.budget.redis_keys import RedisKeyStore
from routeguard.errors import BudgetExceeded, RateLimited
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.result import ChatResult
from waiting import eventually

MSG = [{"role": "user", "content": "hello team budget"}]


async def _burst(
    gw: Gateway, key: Any, n: int, user: str | None = None
) -> tuple[list[ChatResult], list[BaseException]]:
    req: dict[str, Any] = {"model": "m", "messages": MSG, "max_tokens": 20}
    if user is not None:
        req["user"] = user
    outcomes = await asyncio.gather(
        *(gw.chat_result(dict(req), key=key) for _ in range(n)), return_exceptions=True
    )
    served = [o for o in outcomes if isinstance(o, ChatResult)]
    return served, [o for o in outcomes if isinstance(o, BaseException)]


def _now() -> float:
    return time.time()


async def _team_and_customer_bursts(gw: Gateway) -> None:
    gw.directory.put(Organization(organization_id="o1", max_budget=5.0, created_at=_now()))
    gw.directory.put(Team(team_id="t1", organization_id="o1", max_budget=0.3, created_at=_now()))
    _, key = gw.keys.create(KeySpec(team="t1"))
    served, errors = await _burst(gw, key, 40)
    assert served and errors
    assert {e.account for e in errors if isinstance(e, BudgetExceeded)} == {"team.t1"}
    assert len(errors) == sum(isinstance(e, BudgetExceeded) for e in errors)
    backend = gw.budget.backend
    spent = await backend.spent("team.t1")
    assert spent == sum(micros(r) for r in served) <= usd_to_micros(0.3)
    assert await backend.spent("org.o1") == spent  # the team is under its organization
    assert await backend.reserved("team.t1") == 0

    # A customer (its own root) and a second team: both held, all or none.
    gw.directory.put(Team(team_id="t2", max_budget=100.0, created_at=_now()))
    gw.directory.put(Customer(user_id="cust", max_budget=0.2, created_at=_now()))
    _, key2 = gw.keys.create(KeySpec(team="t2"))
    served, errors = await _burst(gw, key2, 40, user="cust")
    assert served and errors
    assert {e.account for e in errors if isinstance(e, BudgetExceeded)} == {"customer.cust"}
    cust = await backend.spent("customer.cust")
    assert cust == sum(micros(r) for r in served) <= usd_to_micros(0.2)
    assert await backend.spent("team.t2") == cust  # refused requests left nothing behind
    for account in ("customer.cust", "team.t2"):
        assert await backend.reserved(account) == 0


async def _member_bursts(gw: Gateway) -> None:
    """A member's ``max_budget_in_team`` holds its keys of the team, with the team's."""
    crew = [Member(user_id="mia", max_budget_in_team=0.2), Member(user_id="noa")]
    gw.directory.put(Team(team_id="t3", max_budget=100.0, members_with_roles=crew,
                          created_at=_now()))  # fmt: skip
    _, mia = gw.keys.create(KeySpec(team="t3", user="mia"))
    _, mia_capped = gw.keys.create(KeySpec(team="t3", user="mia", max_budget=50.0))
    _, noa = gw.keys.create(KeySpec(team="t3", user="noa"))
    served, errors = await _burst(gw, mia, 20)
    more, errors2 = await _burst(gw, mia_capped, 20)  # its own account is under mia's
    served, errors = served + more, errors + errors2
    mine = member_account("t3", "mia")
    assert served and errors
    assert {e.account for e in errors if isinstance(e, BudgetExceeded)} == {mine}
    assert len(errors) == sum(isinstance(e, BudgetExceeded) for e in errors)
    backend = gw.budget.backend
    spent = await backend.spent(mine)
    assert spent == sum(micros(r) for r in served) <= usd_to_micros(0.2)
    assert await backend.spent("team.t3") == spent and await backend.reserved(mine) == 0
    theirs, refused = await _burst(gw, noa, 5)  # another member: only the team's budget
    assert len(theirs) == 5 and not refused
    assert await backend.spent("team.t3") == spent + sum(micros(r) for r in theirs)


async def _member_default_bursts(gw: Gateway) -> None:
    """The team's ``team_member_budget`` and a member's own ``rpm_limit`` hold bursts of its
    keys exactly, while the team has room."""
    crew = [Member(user_id="ola"), Member(user_id="pax", max_budget_in_team=50.0, rpm_limit=5)]
    gw.directory.put(Team(team_id="t4", max_budget=100.0, rpm_limit=1000, members_with_roles=crew,
                          team_member_budget=0.2, created_at=_now()))  # fmt: skip
    _, ola = gw.keys.create(KeySpec(team="t4", user="ola"))
    served, errors = await _burst(gw, ola, 40)
    ola_account = member_account("t4", "ola")
    assert served and errors
    assert {e.account for e in errors if isinstance(e, BudgetExceeded)} == {ola_account}
    assert len(errors) == sum(isinstance(e, BudgetExceeded) for e in errors)
    backend = gw.budget.backend
    spent = await backend.spent(ola_account)
    assert spent == sum(micros(r) for r in served) <= usd_to_micros(0.2)
    assert await backend.reserved(ola_account) == 0

    _, pax = gw.keys.create(KeySpec(team="t4", user="pax"))  # its own $50, 5 a minute
    served, errors = await _burst(gw, pax, 12)
    assert len(served) == 5 and len(errors) == 7
    assert {e.account for e in errors if isinstance(e, RateLimited)} == {
        member_account("t4", "pax")
    }
    assert all(isinstance(e, RateLimited) for e in errors)
    _, shared = gw.keys.create(KeySpec(team="t4"))  # the team's key without a user: room left
    more, refused = await _burst(gw, shared, 5)
    assert len(more) == 5 and not refused


async def test_budgets_are_exact_under_concurrency_in_process(mock: MockServer) -> None:
    gw = Gateway.from_config(priced_config(mock.url))
    try:
        await _team_and_customer_bursts(gw)
        await _member_bursts(gw)
        await _member_default_bursts(gw)
    finally:
        await gw.aclose()


async def test_budgets_are_exact_under_concurrency_on_redis(
    mock: MockServer, redis_server: str, request: pytest.FixtureRequest
) -> None:
    cfg = priced_config(
        mock.url,
        budget_settings={"backend": "redis", "redis_url": redis_server},
        server={"key_store": "redis", "redis_url": redis_server},
    )
    gw = Gateway.from_config(cfg)
    try:
        await _team_and_customer_bursts(gw)
        await _member_bursts(gw)
        await _member_default_bursts(gw)
    finally:
        await gw.aclose()


def test_the_sqlite_key_database_keeps_them_for_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    a, b = KeyStore(path), KeyStore(path)
    try:
        Directory(a).put(Team(team_id="t", team_alias="one", created_at=_now()))
        seen = Directory(b).get("team", "t")
        assert isinstance(seen, Team) and seen.team_alias == "one"
        Directory(b).put(Team(team_id="t", team_alias="two", created_at=_now()))
        again = Directory(a).get("team", "t")
        assert isinstance(again, Team) and again.team_alias == "two"
        Directory(a).delete("team", "t")
        assert Directory(b).get("team", "t") is None
    finally:
        a.close()
        b.close()
    reopened = KeyStore(path)
    try:
        Directory(reopened).put(Customer(user_id="c", blocked=True, created_at=_now()))
    finally:
        reopened.close()
    last = KeyStore(path)
    try:
        found = Directory(last).get("customer", "c")
        assert isinstance(found, Customer) and found.blocked
    finally:
        last.close()


def test_the_redis_key_store_shares_them_across_instances(
    redis_server: str, request: pytest.FixtureRequest
) -> None:
    prefix = f"t-{request.node.name}"
    a, b = (RedisKeyStore(redis_server, prefix=prefix) for _ in range(2))
    try:
        Directory(a).put(Customer(user_id="c1", blocked=True, created_at=_now()))
        got = eventually(lambda: _present(Directory(b).get("customer", "c1")))
        assert isinstance(got, Customer) and got.blocked
        Directory(b).put(Customer(user_id="c1", blocked=False, created_at=_now()))
        eventually(lambda: _check(not _present(Directory(a).get("customer", "c1")).blocked))
        Directory(a).delete("customer", "c1")
        eventually(lambda: _check(Directory(b).get("customer", "c1") is None))
        Directory(a).put(Team(team_id="late", created_at=_now()))
        late = RedisKeyStore(redis_server, prefix=prefix)
        try:
            assert isinstance(Directory(late).get("team", "late"), Team)
            assert Directory(late).get("customer", "c1") is None
        finally:
            late.close()
    finally:
        a.close()
        b.close()


def _present(rec: Any) -> Any:
    assert rec is not None
    return rec


def _check(cond: bool) -> None:
    assert cond


async def test_two_instances_share_a_team_budget_on_redis(
    mock: MockServer, redis_server: str
) -> None:
    cfg = priced_config(
        mock.url,
        budget_settings={"backend": "redis", "redis_url": redis_server},
        server={"key_store": "redis", "redis_url": redis_server},
    )
    a, b = Gateway.from_config(cfg), Gateway.from_config(cfg)
    try:
        a.directory.put(Team(team_id="shared-2i", max_budget=0.3, created_at=_now()))
        _, key = a.keys.create(KeySpec(team="shared-2i"))
        eventually(lambda: _present(b.directory.get("team", "shared-2i")))
        key_b = eventually(
            lambda: _present(next((r for r in b.keys.list() if r.key_id == key.key_id), None))
        )
        (served_a, errors_a), (served_b, errors_b) = await asyncio.gather(
            _burst(a, key, 25), _burst(b, key_b, 25)
        )
        served = served_a + served_b
        assert served and errors_a and errors_b
        spent = await a.budget.backend.spent("team.shared-2i")
        assert spent == await b.budget.backend.spent("team.shared-2i")
        assert spent == sum(micros(r) for r in served) <= usd_to_micros(0.3)
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_block_written_by_another_process_counts_on_the_next_request(
    mock: MockServer, tmp_path: Path
) -> None:
    from routeguard.errors import PermissionDenied

    db = tmp_path / "rg.db"
    gw = Gateway.from_config(priced_config(mock.url, server={"database": str(db)}))
    other = KeyStore(db)  # routeguard keys, an admin script: another connection
    try:
        _, key = gw.keys.create(KeySpec(team="t-x"))
        req = {"model": "m", "messages": MSG, "user": "zed"}
        assert await gw.chat_result(dict(req), key=key)
        Directory(other).put(Customer(user_id="zed", blocked=True, created_at=_now()))
        with pytest.raises(PermissionDenied):
            await gw.chat_result(dict(req), key=key)
        Directory(other).put(Team(team_id="t-x", blocked=True, created_at=_now()))
        with pytest.raises(PermissionDenied, match="team 't-x' is blocked"):
            await gw.chat_result({"model": "m", "messages": MSG}, key=key)
    finally:
        other.close()
        await gw.aclose()


class _CountedList(list[Any]):
    """A list that counts how many times it is walked."""

    walks = 0

    def __iter__(self) -> Any:
        type(self).walks += 1
        return super().__iter__()


def test_a_big_teams_member_list_is_not_walked_per_request() -> None:
    """A team key's chain looks its user up among the team's members on every request: from
    an index built once per decoded record, not by walking thousands of members each
    time. A changed record is indexed afresh."""
    gw = Gateway.from_config(priced_config("http://127.0.0.1:9"))
    try:
        crew = [Member(user_id=f"u{i}") for i in range(2_000)]
        crew.append(Member(user_id="u1999", max_budget_in_team=9.0))  # a repeat: the first counts
        crew.append(Member(user_id="last", max_budget_in_team=2.0))
        gw.directory.put(
            Team(team_id="big", max_budget=50.0, members_with_roles=crew, created_at=_now())
        )
        team = gw.directory.get("team", "big")
        assert isinstance(team, Team)
        team.members_with_roles = _CountedList(team.members_with_roles)
        _, key = gw.keys.create(KeySpec(team="big", user="last"))
        _, other = gw.keys.create(KeySpec(team="big", user="u1999"))
        _CountedList.walks = 0
        for _ in range(50):
            assert gw.budget.chain_for((), key) == (member_account("big", "last"),)
            assert gw.budget.chain_for((), other) == ("team.big",)  # no limits of its own
        assert _CountedList.walks == 1
        fewer = [Member(user_id="u1999", rpm_limit=5)]
        gw.directory.put(
            Team(team_id="big", max_budget=50.0, members_with_roles=fewer, created_at=_now())
        )
        assert gw.budget.chain_for((), other) == (member_account("big", "u1999"),)
        assert gw.budget.chain_for((), key) == ("team.big",)  # no longer a member
    finally:
        asyncio.run(gw.aclose())
