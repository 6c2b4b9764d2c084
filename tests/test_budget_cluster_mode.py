"""The Redis budget and key stores on a real three-master Redis Cluster (``redis+cluster://``).

What Cluster adds to the single-server tests (``test_budget_redis.py``): every script's
KEYS hash to one slot (checked with ``redis.crc`` and the server's ``CLUSTER KEYSLOT``),
the keys a script derives on its own (holds of other reservations it reclaims) stay in that
slot, two roots that live on different masters are each exact under concurrency from two
instances (and one root from three processes), the settlement log and rate limits work
through the cluster client, virtual keys sync between two instances, two gateways built
from one config share keys and budgets, and a master going down fails closed, then
recovers.

The cluster (``conftest.py`` ``redis_cluster``, ``cluster_nodes.py``) is shared by the
session; each test isolates itself with its own key prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cluster_nodes import ClusterNodes
from routeguard import BudgetExceeded, BudgetUnavailable, RateLimited
from routeguard.budget import RedisBudget
from routeguard.budget.accounts import usd_to_micros
from routeguard.budget.keys import KeySpec
from routeguard.budget.redis_keys import KeyStoreUnavailable, RedisKeyStore
from routeguard.errors import ConfigError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.redis_url import cluster_target, slot, url_problem
from routeguard.result import ChatResult
from waiting import assert_revoked, eventually

WORKER = Path(__file__).with_name("budget_worker.py")


def _prefix() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


def _slot_owners(cluster: ClusterNodes) -> list[tuple[int, int, int]]:
    """``(first slot, last slot, port of the master)`` for every slot range."""
    client = redis.Redis(port=cluster.ports[0])
    try:
        raw: Any = client.execute_command("CLUSTER SLOTS")
    finally:
        client.close()
    return [(int(r[0]), int(r[1]), int(r[2][1])) for r in raw]


def _owner(cluster: ClusterNodes, key: str) -> int:
    """The port of the master that owns ``key``'s slot."""
    s = slot(key)
    return next(port for lo, hi, port in _slot_owners(cluster) if lo <= s <= hi)


def _roots_on_two_masters(cluster: ClusterNodes, prefix: str) -> tuple[str, str]:
    """Two root account names whose hash tags live on different masters."""
    first = "org-0"
    home = _owner(cluster, f"{{{prefix}:{first}}}")
    for i in range(1, 200):
        name = f"org-{i}"
        if _owner(cluster, f"{{{prefix}:{name}}}") != home:
            return first, name
    raise AssertionError("every candidate root hashed to one master")


def _keys_by_port(cluster: ClusterNodes, start: str) -> dict[int, set[str]]:
    """Every key starting with ``start``, by the port of the master storing it."""
    found: dict[int, set[str]] = {}
    for port in cluster.ports:
        client = redis.Redis(port=port)
        try:
            keys = {k.decode() for k in client.scan_iter(match=f"{start}*", count=1000)}
        finally:
            client.close()
        if keys:
            found[port] = keys
    return found


def _chain_accounts(root: str, limit: float) -> list[dict[str, Any]]:
    """A root with a team and a key under it (calendar, rolling and lifetime periods)."""
    return [
        {"name": root, "limit": limit},
        {"name": f"{root}-team", "parent": root, "limit": limit * 2, "period": "rolling:3600"},
        {"name": f"{root}-team2", "parent": root, "period": "total"},
        {"name": f"{root}-key", "parent": f"{root}-team", "period": "daily", "rpm": 1_000},
    ]


def test_a_cluster_url_is_parsed_and_checked() -> None:
    target = cluster_target("redis+cluster://alice:s%40cret@10.0.0.1:7000, 10.0.0.2:7001,[::1]")
    assert target is not None
    assert target.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 6379))
    assert (target.username, target.password, target.ssl) == ("alice", "s@cret", False)
    assert "s@cret" not in target.where and "10.0.0.2:7001" in target.where
    tls = cluster_target("rediss+cluster://h:1/0")
    assert tls is not None and tls.ssl
    assert cluster_target("redis://localhost:6379/2") is None, "one server keeps its client"
    for bad, why in [
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis+cluster://", "at least one seed"),
        ("redis+cluster://h:99999", "1-65535"),
        ("redis+cluster://h:1?timeout=2", "no ?options"),
        ("http://h:1", "redis+cluster://"),
    ]:
        problem = url_problem(bad)
        assert problem is not None and why in problem
        with pytest.raises(ConfigError, match="redis_url") as caught:
            RedisBudget([{"name": "org"}], bad)
        assert why in str(caught.value)


async def test_no_reachable_seed_is_unavailable_not_a_crash() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"redis+cluster://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens
    budget = RedisBudget([{"name": "org", "limit": 1.0}], url, timeout_s=0.5)
    try:
        with pytest.raises(BudgetUnavailable, match="fails closed"):
            await budget.reserve(["org"], 10, "r1")
    finally:
        await budget.close()
    with pytest.raises(KeyStoreUnavailable, match="unreachable"):
        RedisKeyStore(url, timeout_s=0.5)


async def test_every_script_sends_keys_of_one_slot(redis_cluster: ClusterNodes) -> None:
    prefix = _prefix()
    root = "org"
    now = [1_800_000_000.0]
    budget = RedisBudget(
        [*_chain_accounts(root, 1.0), {"name": "solo", "tpm": 100}],
        redis_cluster.url,
        prefix=prefix,
        clock=lambda: now[0],
    )
    calls: list[list[str]] = []
    client: Any = budget._redis
    original = client.execute_command

    async def recording(*args: Any, **options: Any) -> Any:
        if args[0] == "EVALSHA":
            calls.append([k if isinstance(k, str) else k.decode() for k in args[3 : 3 + args[2]]])
        return await original(*args, **options)

    client.execute_command = recording
    try:
        key, team2 = f"{root}-key", f"{root}-team2"
        doomed = await budget.reserve([key], 1_000, "doomed", ttl_s=1.0)
        now[0] += 5.0  # the hold expires: the next reserve on the root reclaims it
        res = await budget.reserve([team2], 2_000, "r1")
        assert await budget.reserved(key) == 0, "reclaimed through keys the script derived"
        await budget.settle(res, 1_500)
        await budget.settle(doomed, 700)  # late: charged in full, once
        await budget.release(await budget.reserve([key], 10, "r2"))
        await budget.check_rate([key], tokens=5)
        await budget.check_rate(["solo"], tokens=5)
        await budget.settle(await budget.admit([key], 10, "r3", tokens=5), 10)  # rate + hold
        assert await budget.spent(root) == 2_210
        assert calls, "the scripts ran through the cluster client"
        admin = redis.Redis(port=redis_cluster.ports[0])
        try:
            for keys in calls:
                assert len({slot(k) for k in keys}) == 1, keys
                server_slots = {int(admin.execute_command("CLUSTER KEYSLOT", k)) for k in keys}
                assert server_slots == {slot(keys[0])}, "the server agrees with redis.crc"
        finally:
            admin.close()
        tag = f"{{{prefix}:{root}}}"
        stored = _keys_by_port(redis_cluster, tag)
        assert list(stored) == [_owner(redis_cluster, tag)], "every key on the tag's master"
        assert f"{tag}:held:{key}" in stored[_owner(redis_cluster, tag)]
    finally:
        await budget.close()


async def test_two_roots_on_two_masters_never_overspend_from_two_instances(
    redis_cluster: ClusterNodes,
) -> None:
    prefix = _prefix()
    root_a, root_b = _roots_on_two_masters(redis_cluster, prefix)
    limits = {root_a: 0.4, root_b: 0.25}
    accounts = [a for r, lim in limits.items() for a in _chain_accounts(r, lim)]
    instances = [RedisBudget(accounts, redis_cluster.url, prefix=prefix) for _ in range(2)]
    settled: dict[str, list[int]] = {root_a: [], root_b: []}
    refused = dict.fromkeys(limits, 0)
    rng = random.Random(4)

    async def task(t: int) -> None:
        budget = instances[t % 2]
        for i in range(40):
            root = (root_a, root_b)[(t + i) % 2]
            chain = [f"{root}-key"] if i % 3 else [f"{root}-team2"]
            worst = rng.randint(1_000, 20_000)
            try:
                res = await budget.reserve(chain, worst, f"t{t}-{i}")
            except BudgetExceeded:
                refused[root] += 1
                continue
            if i % 7 == 0:
                await budget.release(res)
                continue
            actual = rng.randint(0, worst)
            await budget.settle(res, actual)
            settled[root].append(actual)

    try:
        await asyncio.gather(*(task(t) for t in range(48)))
        budget = instances[0]
        for root, limit in limits.items():
            spent, held = await budget.usage(root)
            assert spent == sum(settled[root]) <= round(limit * 1e6)
            assert held == 0
            assert refused[root] > 0, f"{root}'s limit was reached"
            totals = await budget.replay_log(root)
            logged = [v for k, v in totals.items() if f":spent:{root}:" in k]
            assert logged == [spent], "the settlement log rebuilds the total"
            key_spent = await budget.spent(f"{root}-key")
            team2_spent = await budget.spent(f"{root}-team2")
            assert key_spent + team2_spent == spent
        stored = _keys_by_port(redis_cluster, f"{{{prefix}:")
        homes = {r: _owner(redis_cluster, f"{{{prefix}:{r}}}") for r in limits}
        assert homes[root_a] != homes[root_b], "the two roots live on two masters"
        for root, port in homes.items():
            assert any(k.startswith(f"{{{prefix}:{root}}}") for k in stored[port])
            elsewhere = [k for p, ks in stored.items() if p != port for k in ks]
            assert not [k for k in elsewhere if k.startswith(f"{{{prefix}:{root}}}")]
    finally:
        for b in instances:
            await b.close()


async def test_rate_limits_are_shared_through_the_cluster(redis_cluster: ClusterNodes) -> None:
    prefix = _prefix()
    root_a, root_b = _roots_on_two_masters(redis_cluster, prefix)
    now = [1_800_000_000.0]
    accounts = [{"name": r, "rpm": 4, "tpm": 1_000} for r in (root_a, root_b)]
    instances = [
        RedisBudget(accounts, redis_cluster.url, prefix=prefix, clock=lambda: now[0])
        for _ in range(2)
    ]
    try:
        for root in (root_a, root_b):
            for i in range(4):
                await instances[i % 2].check_rate([root], tokens=10)
            with pytest.raises(RateLimited) as caught:
                await instances[1].check_rate([root], tokens=10)
            assert caught.value.unit == "requests" and caught.value.account == root
        now[0] += 15.0  # one request's worth of the minute has passed
        await instances[0].check_rate([root_a], tokens=10)
        with pytest.raises(RateLimited) as caught:
            await instances[1].check_rate([root_b], tokens=2_000, requests=0)
        assert caught.value.unit == "tokens" and caught.value.retry_after is None
    finally:
        for b in instances:
            await b.close()


async def test_three_processes_on_the_cluster_never_overspend(redis_cluster: ClusterNodes) -> None:
    prefix = _prefix()
    accounts = [{"name": "org", "limit": 1.0}, {"name": "key", "parent": "org", "limit": 5.0}]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WORKER.parent), env.get("PYTHONPATH")]))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            "hammer",
            redis_cluster.url,
            prefix,
            json.dumps(accounts),
            str(seed),
            "320",
            stdout=subprocess.PIPE,
            env=env,
        )
        for seed in range(3)
    ]
    for p in procs:
        assert p.stdout is not None
        assert (await asyncio.wait_for(p.stdout.readline(), 60)).strip() == b"ready"
    gate = cluster_target(redis_cluster.url)
    assert gate is not None
    client = gate.async_client(timeout_s=5.0, max_connections=2)
    await client.rpush(f"{prefix}:go", *range(len(procs)))
    await client.aclose()
    outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    results = [json.loads(out) for out, _ in outputs]
    budget = RedisBudget(accounts, redis_cluster.url, prefix=prefix)
    try:
        spent, reserved = await budget.usage("org")
        assert spent == sum(sum(r["settled"]) for r in results) <= 1_000_000
        assert reserved == 0
        assert sum(r["refused"] for r in results) > 0, "the limit was reached"
        assert all(r["settled"] for r in results), "every process got some through"
    finally:
        await budget.close()


@pytest.fixture
def key_stores(redis_cluster: ClusterNodes) -> Iterator[list[RedisKeyStore]]:
    prefix = f"{_prefix()}:keys"
    made = [RedisKeyStore(redis_cluster.url, prefix=prefix) for _ in range(2)]
    try:
        yield made
    finally:
        for s in made:
            s.close()


def test_virtual_keys_sync_between_two_instances_on_the_cluster(
    redis_cluster: ClusterNodes, key_stores: list[RedisKeyStore]
) -> None:
    a, b = key_stores
    assert a._where.startswith("cluster ")
    token, rec = a.create(KeySpec(team="t1", max_budget=2.0))
    assert eventually(lambda: b.authenticate(token)).key_id == rec.key_id
    new_token, _ = b.rotate(rec.key_id)
    eventually(lambda: a.authenticate(new_token))
    a.revoke(rec.key_id)

    eventually(lambda: assert_revoked(b, new_token))
    tag = a._tag
    stored = _keys_by_port(redis_cluster, tag)
    assert list(stored) == [_owner(redis_cluster, tag)], "records, events, secret: one slot"
    assert {k.removeprefix(tag) for k in stored[_owner(redis_cluster, tag)]} == {
        ":records",
        ":events",
        ":secret",
    }


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ClusterNodes]:
    """A cluster of this test alone: it stops one master."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server / redis-cli not found: apt-get install redis-server")
    nodes = ClusterNodes(server, cli, tmp_path)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


async def test_a_master_down_fails_closed_then_recovers(own_cluster: ClusterNodes) -> None:
    prefix = _prefix()
    root = "org"
    home = own_cluster.ports.index(_owner(own_cluster, f"{{{prefix}:{root}}}"))
    budget = RedisBudget([{"name": root, "limit": 1.0}], own_cluster.url, prefix=prefix)
    try:
        held = await budget.reserve([root], 100, "before")
        own_cluster.stop_node(home)
        with pytest.raises(BudgetUnavailable) as caught:
            await budget.reserve([root], 100, "during")
        assert "fails closed" in str(caught.value) and "cluster 127.0.0.1:" in str(caught.value)
        await budget.settle(held, 80)  # kept for replay, not lost
        assert budget.pending == 1
        own_cluster.start_node(home)  # same identity (nodes.conf), no data: persistence off
        own_cluster.wait_state("ok")
        assert await budget.flush() == 0
        assert await budget.spent(root) == 80, "the kept settlement was replayed"
        await budget.reserve([root], 100, "after")
    finally:
        await budget.close()


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[ClusterNodes]:
    """Three masters with one replica each, of this test alone: it kills a master."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server / redis-cli not found: apt-get install redis-server")
    nodes = ClusterNodes(server, cli, tmp_path, replicas=1)
    nodes.start()  # returns once every replica is synced
    try:
        yield nodes
    finally:
        nodes.stop()


async def test_a_failover_keeps_every_hold_and_settlement_the_replicas_acknowledged(
    replicated_cluster: ClusterNodes,
) -> None:
    cluster = replicated_cluster
    prefix, root = _prefix(), "org"
    home = cluster.ports.index(_owner(cluster, f"{{{prefix}:{root}}}"))
    accounts = [{"name": root, "limit": 0.01}, {"name": "key", "parent": root, "rpm": 10_000}]
    budget = RedisBudget(
        accounts, cluster.url, prefix=prefix, timeout_s=3.0, wait_replicas=1,
        wait_timeout_ms=2_000,
    )  # fmt: skip

    def waits() -> int:
        stats = cluster.info(home, "commandstats")
        return int(stats["cmdstat_wait"].split(",")[0].removeprefix("calls="))

    try:
        await budget.settle(await budget.admit(["key"], 10, "w1"), 0)  # loads the scripts
        await budget.release(await budget.reserve(["key"], 10, "w2"))
        before, settled = waits(), 0
        for i in range(30):
            res = await budget.admit(["key"], 200, f"s{i}", tokens=3)
            await budget.settle(res, 150)
            settled += 150
        held = [await budget.reserve(["key"], 100, f"h{i}") for i in range(5)]
        assert waits() - before == 30 * 2 + 5, "one WAIT after every admit, settle, reserve"
        assert budget.unreplicated == 0
        cluster.kill_node(home)  # at once: no time for anything but what WAIT confirmed

        await _until_served(budget, root)
        assert await budget.spent(root) == settled, "every acknowledged settlement survived"
        assert await budget.reserved(root) == 5 * 100, "and every acknowledged hold"
        for res in held:
            await budget.settle(res, 100)
        # the promoted replica has no replica of its own: every write since (the probe and
        # these 5) is unreplicated; the first WAIT took the full timeout, the others 1 ms
        assert budget.unreplicated == 6
        granted = 0
        with pytest.raises(BudgetExceeded):  # the limit still holds on the new master
            while True:
                await budget.settle(await budget.reserve(["key"], 500, f"a{granted}"), 500)
                granted += 1
        assert await budget.spent(root) == settled + 500 + granted * 500 <= usd_to_micros(0.01)
    finally:
        await budget.close()


async def _until_served(budget: RedisBudget, account: str, timeout: float = 60.0) -> None:
    """Wait until a reservation goes through again (the cluster promoted a replica, and
    the budget found it on its own: nothing else refreshes its slot map)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await budget.release(await budget.reserve([account], 1, "probe"))
            return
        except BudgetUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_two_gateways_share_keys_and_budgets_through_the_cluster(
    redis_cluster: ClusterNodes,
) -> None:
    prefix = _prefix()
    with MockServer() as mock:
        dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k",
               "input_cost_per_mtok": 1000.0, "output_cost_per_mtok": 2000.0}  # fmt: skip
        cfg = {
            "model_list": [{**dep, "model_name": "m", "model": "sim-m"}],
            "router_settings": {"num_retries": 0},
            "budgets": [{"name": f"{prefix}-org", "limit": 5.0}],
            "budget_settings": {"backend": "redis", "redis_url": redis_cluster.url},
            "server": {"key_store": "redis", "key_hash_secret": "s3cret"},
        }
        a, b = Gateway.from_config(cfg), Gateway.from_config(cfg)
        try:
            assert isinstance(a.keys, RedisKeyStore), "server.redis_url defaults to the budget's"
            token, rec = a.keys.create(KeySpec(max_budget=0.2, team=f"{prefix}-org"))
            on_b = eventually(lambda: b.keys.authenticate(token))
            req = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
            outcomes = await asyncio.gather(
                *(
                    gw.chat_result(dict(req), key=k)
                    for _ in range(25)
                    for gw, k in ((a, rec), (b, on_b))
                ),
                return_exceptions=True,
            )
            served = [o for o in outcomes if isinstance(o, ChatResult)]
            refused = [o for o in outcomes if isinstance(o, BaseException)]
            assert served and refused and all(isinstance(e, BudgetExceeded) for e in refused)
            assert a.budget is not None and b.budget is not None
            spent = await a.budget.backend.spent(rec.key_id)
            assert spent == await b.budget.backend.spent(rec.key_id)
            costs = [usd_to_micros(r.cost, round_up=True) for r in served]
            assert spent == sum(costs) <= usd_to_micros(0.2)
        finally:
            await a.aclose()
            await b.aclose()
