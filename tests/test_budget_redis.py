"""What only the Redis budget backend has to prove: several processes on one server never
overspend, a crashed process's hold expires, one round trip per operation, one Cluster slot
per chain, the write-through log, and fail-closed / fail-open while Redis is down.

Runs against real ``redis-server`` processes (``conftest.py``); the matrix of semantics
shared with the memory backend is in ``test_budget.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from routeguard import BudgetExceeded, BudgetUnavailable
from routeguard.budget import RedisBudget
from routeguard.gateway import Gateway

WORKER = Path(__file__).with_name("budget_worker.py")
ACCOUNTS: list[dict[str, Any]] = [
    {"name": "org", "limit": 1.0},
    {"name": "key", "parent": "org", "limit": 5.0, "rpm": 1_000},
]


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")])
    )
    return env


async def test_four_processes_on_one_server_never_overspend(redis_server: str) -> None:
    prefix, config = _prefix(), json.dumps(ACCOUNTS)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            "hammer",
            redis_server,
            prefix,
            config,
            str(seed),
            "400",
            stdout=subprocess.PIPE,
            env=_env(),
        )
        for seed in range(4)
    ]
    for p in procs:
        assert p.stdout is not None
        assert (await p.stdout.readline()).strip() == b"ready"
    gate = aioredis.Redis.from_url(redis_server)
    await gate.rpush(f"{prefix}:go", *range(len(procs)))
    await gate.aclose()
    outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    results = [json.loads(out) for out, _ in outputs]
    settled = sum(sum(r["settled"]) for r in results)
    refused = sum(r["refused"] for r in results)
    budget = RedisBudget(ACCOUNTS, redis_server, prefix=prefix)
    try:
        spent, reserved = await budget.usage("org")
        assert spent == settled <= 1_000_000
        assert reserved == 0
        assert refused > 0, "the limit was reached"
        assert all(r["settled"] for r in results), "every process got some through"
        totals = await budget.replay_log("org")
        org_keys = [k for k in totals if ":spent:org:" in k]
        assert [totals[k] for k in org_keys] == [spent], "the log rebuilds the total"
    finally:
        await budget.close()


async def test_a_killed_process_hold_expires(redis_server: str) -> None:
    prefix, config = _prefix(), json.dumps(ACCOUNTS)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        "hold",
        redis_server,
        prefix,
        config,
        "900000",
        "1.0",
        stdout=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"held"
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    budget = RedisBudget(ACCOUNTS, redis_server, prefix=prefix)
    try:
        assert await budget.reserved("org") == 900_000
        with pytest.raises(BudgetExceeded):
            await budget.reserve(["key"], 200_000, "blocked")
        await asyncio.sleep(1.1)
        res = await budget.reserve(["key"], 200_000, "after")  # reclaims on the way
        assert await budget.reserved("org") == 200_000
        await budget.release(res)
        assert await budget.usage("org") == (0, 0)
    finally:
        await budget.close()


async def test_each_operation_is_one_round_trip_in_one_slot(redis_server: str) -> None:
    prefix = _prefix()
    budget = RedisBudget(ACCOUNTS, redis_server, prefix=prefix)
    admin = aioredis.Redis.from_url(redis_server)
    try:
        for warm_up in (budget.reserve(["key"], 1, "w1"), budget.admit(["key"], 1, "w2")):
            await budget.settle(await warm_up, 1)  # loads every script used below
        sent: list[object] = []
        client = budget._redis
        original = client.execute_command

        async def counting(*args: Any, **options: Any) -> Any:
            sent.append(args[0])
            return await original(*args, **options)

        client.execute_command = counting  # type: ignore[method-assign]
        await admin.config_resetstat()
        res = await budget.reserve(["key"], 10, "r1")
        await budget.settle(res, 7)
        assert sent == ["EVALSHA", "EVALSHA"], "one round trip each"
        # the RPM check and the reservation together (the key has an rpm): one round trip
        res = await budget.admit(["key"], 10, "r2", tokens=50)
        await budget.settle(res, 7)
        assert sent == ["EVALSHA"] * 4
        stats = await admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 4
        assert await admin.get(f"{{{prefix}:org}}:rate:key:rpm") is not None, "rpm consumed"
        keys = [k.decode() async for k in admin.scan_iter(match=f"{{{prefix}:*")]
        assert keys and {k[: k.index("}") + 1] for k in keys} == {f"{{{prefix}:org}}"}
    finally:
        await admin.aclose()
        await budget.close()


async def test_a_replayed_settlement_is_charged_once(redis_server: str) -> None:
    budget = RedisBudget(ACCOUNTS, redis_server, prefix=_prefix())
    try:
        res = await budget.reserve(["key"], 100, "r1")
        await budget.settle(res, 60)
        res.state = "open"  # as if the first reply had been lost and the call replayed
        await budget.settle(res, 60)
        assert await budget.spent("org") == 60
    finally:
        await budget.close()


async def test_redis_restart_fails_closed_by_default(redis_process: Any) -> None:
    budget = RedisBudget(ACCOUNTS, redis_process.url, prefix=_prefix(), timeout_s=0.5)
    try:
        held = await budget.reserve(["key"], 100, "before")
        redis_process.stop()
        with pytest.raises(BudgetUnavailable) as caught:
            await budget.reserve(["key"], 100, "during")
        assert caught.value.status_code == 503
        assert "fails closed" in str(caught.value)
        assert "password" not in str(caught.value)
        with pytest.raises(BudgetUnavailable):
            await budget.check_rate(["key"], tokens=1)
        await budget.settle(held, 80)  # kept for replay, not lost
        assert budget.pending == 1
        redis_process.start()
        assert await budget.flush() == 0
        assert await budget.spent("org") == 80, "the replay was charged (status: unknown)"
        await budget.reserve(["key"], 100, "after")
    finally:
        await budget.close()


async def test_redis_restart_fails_open_when_configured(redis_process: Any) -> None:
    budget = RedisBudget(
        ACCOUNTS, redis_process.url, prefix=_prefix(), timeout_s=0.5, fail_open=True
    )
    try:
        redis_process.stop()
        res = await budget.reserve(["key"], 300_000, "during")
        assert res.state == "unbacked"
        await budget.settle(res, 250_000)
        redis_process.start()
        await budget.reserve(["key"], 10, "after")  # flushes the kept settlement on the way
        assert budget.pending == 0
        assert await budget.spent("org") == 250_000
    finally:
        await budget.close()


async def test_wait_replicas_confirms_each_hold_and_settlement(redis_replicated: Any) -> None:
    master, replica = redis_replicated
    budget = RedisBudget(ACCOUNTS, master.url, prefix=_prefix(), wait_replicas=1,
                         wait_timeout_ms=500)  # fmt: skip
    admin = aioredis.Redis.from_url(master.url)
    try:
        await budget.settle(await budget.admit(["key"], 1, "w", tokens=1), 1)  # loads scripts
        await admin.config_resetstat()
        for i in range(10):
            res = await budget.admit(["key"], 100, f"r{i}", tokens=5)
            await budget.settle(res, 60)
        stats = await admin.info("commandstats")
        assert stats["cmdstat_wait"]["calls"] == 20, "a WAIT after every hold and settlement"
        assert budget.unreplicated == 0, "the replica acknowledged every one"
        on_replica = aioredis.Redis.from_url(replica.url)
        try:  # what the replica has is what a failover would keep
            keys = [k async for k in on_replica.scan_iter(match="*spent:org*")]
            values = [int(await on_replica.get(k) or 0) for k in keys]
            assert keys and sum(values) == 601
        finally:
            await on_replica.aclose()
        replica.stop()  # no replica left: WAITs time out, the writes still count
        await budget.settle(await budget.admit(["key"], 100, "lonely", tokens=5), 60)
        assert budget.unreplicated == 2 and await budget.spent("org") == 661
    finally:
        await admin.aclose()
        await budget.close()


def test_wait_timeout_must_stay_below_the_connection_timeout() -> None:
    with pytest.raises(ValueError, match="below the connection timeout"):
        RedisBudget(ACCOUNTS, "redis://127.0.0.1:1/0", timeout_s=1.0, wait_replicas=1,
                    wait_timeout_ms=1_000)  # fmt: skip


def test_budget_settings_reach_the_redis_backend(redis_server: str) -> None:
    cfg = {
        "model_list": [{"model_name": "m", "type": "openai", "model": "sim-m", "api_key": "k"}],
        "budgets": [{"name": "org", "limit": 1.0}],
        "budget_settings": {"backend": "redis", "redis_url": redis_server,
                            "redis_wait_replicas": 1, "redis_wait_timeout_ms": 20},
    }  # fmt: skip
    gw = Gateway.from_config(cfg)
    try:
        assert gw.budget is not None
        backend = gw.budget.backend
        assert isinstance(backend, RedisBudget)
        assert (backend.wait_replicas, backend.wait_timeout_ms) == (1, 20)
    finally:
        asyncio.run(gw.aclose())
