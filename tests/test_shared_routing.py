"""Cooldowns and per-minute usage shared by instances on a real redis-server: a deployment
one gateway cooled down is avoided by another that never saw it fail, the cooldown ends with
its TTL or with a probe's success, usage and rpm limits add up across instances, and a Redis
that dies or never answers leaves every request served from the local state."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from cluster_nodes import ClusterNodes
from conftest import RedisProcess
from ports import free_port
from routeguard import config
from routeguard.config import Deployment, RouterSettings
from routeguard.errors import AllAttemptsFailed
from routeguard.fallback import Cooldowns, Fallback
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.routing.balance import Balancer
from routeguard.routing.shared import SharedRouterState
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from serving import serve

MSG = [{"role": "user", "content": "what is two and two"}]


class Clock:
    """A settable clock."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _prefix() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def _cfg(mock: MockServer, url: str, prefix: str, **router: Any) -> dict[str, Any]:
    """Alias ``m``: a cheap deployment that answers 503, a dearer one that works; the
    lowest-cost strategy tries the broken one first unless it is cooling down."""
    dep = {"type": "openai", "api_key": "k", "api_base": mock.url + "/v1"}
    return {
        "model_list": [
            {"model_name": "m", "id": "bad", "model": "sim-error-503",
             "input_cost_per_mtok": 0.1, **dep},
            {"model_name": "m", "id": "good", "model": "sim-good",
             "input_cost_per_mtok": 1.0, **dep},
        ],
        "router_settings": {
            "strategy": "lowest-cost", "num_retries": 1, "allowed_fails": 1,
            "cooldown_time": 30, "retry_backoff": 0.0, "redis_url": url, "redis_prefix": prefix,
            "redis_sync_interval": 3600, "redis_timeout": 5.0, **router,
        },
    }  # fmt: skip


def _upstream_calls(mock: MockServer, model: str) -> int:
    return sum(1 for r in mock.requests if (r.body or {}).get("model") == model)


async def test_a_cooldown_one_instance_opens_is_avoided_by_another(
    mock: MockServer, redis_server: str
) -> None:
    cfg = _cfg(mock, redis_server, _prefix())
    a, b = Gateway.from_config(cfg), Gateway.from_config(cfg)
    try:
        mock.reset()
        served = await a.chat_result({"model": "m", "messages": MSG})
        assert served.attempts == 2 and served.deployment.id == "good"  # bad failed, then good
        assert a.fallback.cooldowns.is_open(a.balancers["m"].deployments[0])
        assert await a.shared.sync()  # type: ignore[union-attr]
        assert await b.shared.sync()  # type: ignore[union-attr]
        before = _upstream_calls(mock, "sim-error-503")
        other = await b.chat_result({"model": "m", "messages": MSG})
        assert (other.deployment.id, other.attempts) == ("good", 1)
        assert _upstream_calls(mock, "sim-error-503") == before  # b never called it
        assert b.fallback.cooldowns.is_open(b.balancers["m"].deployments[0])
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_shared_cooldown_ends_with_its_ttl(mock: MockServer, redis_server: str) -> None:
    prefix = _prefix()
    cfg = _cfg(mock, redis_server, prefix, cooldown_time=0.3)
    a, b = Gateway.from_config(cfg), Gateway.from_config(cfg)
    r = redis.Redis.from_url(redis_server)
    try:
        await a.chat_result({"model": "m", "messages": MSG})
        assert await a.shared.sync()  # type: ignore[union-attr]
        key = f"{{{prefix}}}:cool:bad"
        assert r.pttl(key) > 0
        assert await b.shared.sync()  # type: ignore[union-attr]
        bad = b.balancers["m"].deployments[0]
        assert b.fallback.cooldowns.is_open(bad)
        for _ in range(500):  # Redis expires the key (bounded wait, nothing timed)
            if r.exists(key) == 0:
                break
            await asyncio.sleep(0.01)
        assert r.exists(key) == 0
        assert await b.shared.sync()  # type: ignore[union-attr]
        assert not b.fallback.cooldowns.is_open(bad)
        before = _upstream_calls(mock, "sim-error-503")
        again = await b.chat_result({"model": "m", "messages": MSG})
        assert again.attempts == 2  # b tried the cheap one again, and it still fails
        assert _upstream_calls(mock, "sim-error-503") == before + 1
    finally:
        r.close()
        await a.aclose()
        await b.aclose()


def _dep(dep_id: str) -> Deployment:
    cfg = {"model_list": [{"model_name": "m", "id": dep_id, "type": "openai", "model": "x"}]}
    return config.load(cfg, env={}).deployments["m"][0]


async def test_a_probe_that_succeeds_ends_the_cooldown_for_every_instance(
    redis_server: str,
) -> None:
    prefix = _prefix()
    clock_a, clock_b, wall = Clock(100.0), Clock(100.0), Clock(1_700_000_000.0)
    sa = SharedRouterState(redis_server, prefix=prefix, timeout=5.0, clock=clock_a, wall=wall)
    sb = SharedRouterState(redis_server, prefix=prefix, timeout=5.0, clock=clock_b, wall=wall)
    ca = Cooldowns(1, 30.0, clock_a, sa)
    cb = Cooldowns(1, 30.0, clock_b, sb)
    dep = _dep("d1")
    try:
        assert cb.available(dep)  # b watches d1 from now on
        ca.failure(dep)
        assert await sa.sync() and await sb.sync()
        assert not cb.available(dep) and cb.is_open(dep)
        clock_a.t += 31.0  # a's cooldown is over: a half-open probe
        wall.t += 31.0
        assert await sa.sync()  # (Redis still holds the key: its TTL runs on real time)
        clock_a.t += 31.0
        assert ca.available(dep)
        ca.acquire(dep)
        wall.t += 1.0
        ca.success(dep)
        assert await sa.sync() and await sb.sync()
        assert cb.available(dep)  # b's clock did not move: the probe's success ended it
        # A failure after the probe started is not wiped by that probe's success.
        ca.failure(dep)
        clock_a.t += 31.0
        ca.acquire(dep)
        assert await sa.sync()
        cb.failure(dep)  # b sees it fail while a's probe is out
        assert await sb.sync()
        wall.t += 1.0
        ca.success(dep)
        assert await sa.sync() and await sb.sync()
        assert not cb.available(dep)
    finally:
        await sa.aclose()
        await sb.aclose()


async def test_usage_and_rpm_limits_add_up_across_instances(redis_server: str) -> None:
    prefix = _prefix()
    wall = Clock(1_700_000_010.0)
    sa = SharedRouterState(redis_server, prefix=prefix, timeout=5.0, wall=wall)
    sb = SharedRouterState(redis_server, prefix=prefix, timeout=5.0, wall=wall)
    models = [{"model_name": "m", "id": f"u{i}", "type": "openai", "model": "x", "rpm": 2}
              for i in range(2)]  # fmt: skip
    deps = config.load({"model_list": models}, env={}).deployments["m"]
    ba = Balancer(deps, "usage-based", random.Random(0), clock=wall, usage=sa)
    bb = Balancer(deps, "usage-based", random.Random(0), clock=wall, usage=sb)
    u0, u1 = deps
    for state in (sa, sb):  # as the gateway does for its balancers
        state.watch([u0.id, u1.id], usage=True)
    try:
        charge = ba.begin(u0, 400)
        ba.record_tokens(u0, 120, charge)
        ba.end(u0, 0.1, charge)
        assert await sa.sync() and await sb.sync()
        assert bb.usage.get(u0.id, bb.minute()) == (1, 120)
        assert bb.pick(lambda d: True) is u1  # b never called u0, yet knows it is busier
        ba.begin(u0)
        bb.begin(u1)
        bb.begin(u1)
        assert await sa.sync() and await sb.sync() and await sa.sync()
        assert not ba.has_capacity(u0) and not ba.has_capacity(u1)  # 2 + 2 requests, rpm 2
        settings = RouterSettings(strategy="usage-based")
        fb = Fallback(settings, {"m": ba}, {}, {}, shared=sa)

        async def never(dep: Deployment, timeout: float) -> Any:
            raise AssertionError("nothing may go upstream at the limit")

        with pytest.raises(AllAttemptsFailed) as info:
            await fb.run("m", never)
        assert info.value.status_code == 429
        assert info.value.retry_after == pytest.approx(60.0 - wall.t % 60.0)
        r = redis.Redis.from_url(redis_server)
        try:
            minute = int(wall.t // 60)
            assert r.hgetall(f"{{{prefix}}}:use:u0:{minute}") == {b"r": b"2", b"t": b"120"}
            assert r.hgetall(f"{{{prefix}}}:use:u1:{minute}") == {b"r": b"2"}
            assert 0 < r.ttl(f"{{{prefix}}}:use:u0:{minute}") <= 120
        finally:
            r.close()
    finally:
        await sa.aclose()
        await sb.aclose()


async def test_redis_killed_mid_test_leaves_requests_served_and_logs_once(
    mock: MockServer, redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(mock, redis_process.url, _prefix())
    a, b = Gateway.from_config(cfg), Gateway.from_config(cfg)
    caplog.set_level(logging.WARNING, logger="routeguard.routing.shared")
    try:
        await b.chat_result({"model": "m", "messages": MSG})  # b's own circuit opens
        assert await b.shared.sync()  # type: ignore[union-attr]
        redis_process.stop()
        assert a.shared is not None and b.shared is not None
        assert not await a.shared.sync() and not await b.shared.sync()

        def down() -> list[str]:
            return [r.getMessage() for r in caplog.records if "did not answer" in r.getMessage()]

        assert len(down()) == 2  # once per instance...
        for _ in range(3):
            assert not await a.shared.sync() and not await b.shared.sync()
        assert len(down()) == 2  # ...not once per attempt
        assert f"127.0.0.1:{redis_process.port}" in down()[0]
        # a never saw a failure and cannot reach Redis: it learns of bad on its own...
        first = await a.chat_result({"model": "m", "messages": MSG})
        assert first.deployment.id == "good" and first.attempts == 2
        # ...and then avoids it locally, as b does.
        for gw in (a, b):
            served = await gw.chat_result({"model": "m", "messages": MSG})
            assert (served.deployment.id, served.attempts) == ("good", 1)
        # Redis comes back (empty): a's cooldown, queued while it was down, is shared again.
        redis_process.start()
        assert await a.shared.sync()  # type: ignore[union-attr]
        assert any("answers again" in r.getMessage() for r in caplog.records)
        c = Gateway.from_config(cfg)
        try:
            bad = c.balancers["m"].deployments[0]
            assert c.fallback.cooldowns.available(bad)
            assert await c.shared.sync()  # type: ignore[union-attr]
            assert not c.fallback.cooldowns.available(bad)
        finally:
            await c.aclose()
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_redis_that_never_answers_does_not_hold_requests_up(
    mock: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A listening socket that accepts and never replies: every round trip times out.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    url = f"redis://:sup3r-s3cret@127.0.0.1:{port}/0"
    cfg = _cfg(mock, url, _prefix(), redis_sync_interval=0.01, redis_timeout=0.05)
    gw = Gateway.from_config(cfg)
    caplog.set_level(logging.WARNING, logger="routeguard.routing.shared")
    try:
        for _ in range(5):  # the sync task keeps timing out meanwhile
            served = await gw.chat_result({"model": "m", "messages": MSG})
            assert served.deployment.id == "good"
        assert not await gw.shared.sync()  # type: ignore[union-attr]
        assert gw.shared.failures >= 1  # type: ignore[union-attr]
        text = " ".join(r.getMessage() for r in caplog.records)
        assert "did not answer" in text and "sup3r-s3cret" not in text
    finally:
        await gw.aclose()
        silent.close()


def test_a_dead_redis_url_never_shows_its_password() -> None:
    state = SharedRouterState(f"redis://user:pa55w0rd@127.0.0.1:{free_port()}/0")
    assert "pa55w0rd" not in state.where and state.where.startswith("127.0.0.1:")


def test_two_proxies_share_a_cooldown_through_the_openai_sdk(
    mock: MockServer, redis_server: str
) -> None:
    cfg = _cfg(mock, redis_server, _prefix(), redis_sync_interval=0.02)
    gb = Gateway.from_config(cfg)
    with (
        ServerThread(create_app(Gateway.from_config(cfg))) as pa,
        ServerThread(create_app(gb)) as pb,
        openai.OpenAI(base_url=pa.url + "/v1", api_key="x", max_retries=0) as ca,
        openai.OpenAI(base_url=pb.url + "/v1", api_key="x", max_retries=0) as cb,
    ):
        first = ca.chat.completions.with_raw_response.create(model="m", messages=MSG)  # type: ignore[arg-type]
        assert first.headers["x-routeguard-attempts"] == "2"
        r = redis.Redis.from_url(redis_server)
        try:
            key = f"{{{cfg['router_settings']['redis_prefix']}}}:cool:bad"
            deadline = time.monotonic() + 10
            while r.exists(key) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert r.exists(key) == 1
        finally:
            r.close()
        # b's sync task (started with the proxy) reads it within its interval; b never
        # called the cheap deployment, and its first request needs no retry.
        assert gb.shared is not None
        gb.shared.cooled_until("bad")  # watched from now on (as b's first pick would)
        deadline = time.monotonic() + 10
        while not gb.shared.cooled_until("bad") and time.monotonic() < deadline:
            time.sleep(0.01)
        before = _upstream_calls(mock, "sim-error-503")
        got = cb.chat.completions.with_raw_response.create(model="m", messages=MSG)  # type: ignore[arg-type]
        assert got.headers["x-routeguard-deployment"] == "good"
        assert got.headers["x-routeguard-attempts"] == "1"
        assert _upstream_calls(mock, "sim-error-503") == before


async def test_a_redis_cluster_serves_the_shared_state_from_one_slot(
    redis_cluster: ClusterNodes,
) -> None:
    prefix = _prefix()
    wall = Clock(1_700_000_040.0)
    clock_a, clock_b = Clock(50.0), Clock(50.0)
    sa = SharedRouterState(redis_cluster.url, prefix=prefix, timeout=5.0, clock=clock_a, wall=wall)
    sb = SharedRouterState(redis_cluster.url, prefix=prefix, timeout=5.0, clock=clock_b, wall=wall)
    seen: list[tuple[str, float]] = []
    ca, cb = Cooldowns(1, 30.0, clock_a, sa), Cooldowns(1, 30.0, clock_b, sb)
    cb.on_change = lambda dep_id, until: seen.append((dep_id, until))
    deps = [_dep(f"c{i}") for i in range(8)]  # ids that would hash to many slots untagged
    sb.watch([d.id for d in deps], usage=True)
    try:
        for d in deps:
            ca.failure(d)
            sa.add(d.id, int(wall.t // 60), 1, 10)
        assert await sa.sync() and await sb.sync()
        assert all(not cb.available(d) for d in deps)
        assert all(sb.get(d.id, int(wall.t // 60)) == (1, 10) for d in deps)
        # b's metrics hear of the shared cooldowns: until about 30 s from now
        assert sorted(s[0] for s in seen) == sorted(d.id for d in deps)
        assert all(s[1] == pytest.approx(wall.t + 30.0, abs=1.0) for s in seen)
    finally:
        await sa.aclose()
        await sb.aclose()


async def test_usage_a_failed_round_trip_carried_is_kept_locally_and_never_sent_twice(
    redis_process: RedisProcess,
) -> None:
    prefix = _prefix()
    wall = Clock(1_700_000_100.0)
    minute = int(wall.t // 60)
    sa = SharedRouterState(redis_process.url, prefix=prefix, timeout=5.0, wall=wall)
    sb = SharedRouterState(redis_process.url, prefix=prefix, timeout=5.0, wall=wall)
    sb.watch(["d"], usage=True)
    try:
        sa.add("d", minute, 1, 100)
        assert await sa.sync()
        redis_process.stop()
        sa.add("d", minute, 1, 50)
        assert not await sa.sync()
        assert sa.get("d", minute) == (2, 150)  # still counted here
        redis_process.start()  # an empty Redis: what a sent is gone, what failed is not resent
        sa.add("d", minute, 1, 7)
        assert await sa.sync() and await sb.sync()
        assert sb.get("d", minute) == (1, 7)
        assert sa.get("d", minute) == (2, 57)
        r = redis.Redis.from_url(redis_process.url)
        try:
            assert r.hgetall(f"{{{prefix}}}:use:d:{minute}") == {b"r": b"1", b"t": b"7"}
        finally:
            r.close()
    finally:
        await sa.aclose()
        await sb.aclose()


async def test_concurrent_counting_on_two_instances_loses_and_doubles_nothing(
    redis_server: str,
) -> None:
    prefix = _prefix()
    wall = Clock(1_700_000_160.0)
    minute = int(wall.t // 60)
    states = [
        SharedRouterState(redis_server, prefix=prefix, interval=0.001, timeout=5.0, wall=wall)
        for _ in range(2)
    ]
    models = [{"model_name": "m", "id": f"k{i}", "type": "openai", "model": "x", "tpm": 10**9}
              for i in range(3)]  # fmt: skip
    deps = config.load({"model_list": models}, env={}).deployments["m"]
    balancers = [Balancer(deps, "usage-based", random.Random(i), clock=wall, usage=s)
                 for i, s in enumerate(states)]  # fmt: skip
    rng = random.Random(7)
    plan = [(rng.randrange(2), rng.randrange(1, 500), rng.random() < 0.2) for _ in range(600)]
    expected: dict[str, list[int]] = {d.id: [0, 0] for d in deps}

    async def request(which: int, tokens: int, fails: bool) -> None:
        b = balancers[which]
        dep = b.pick(lambda d: True, tokens)
        assert dep is not None
        charge = b.begin(dep, tokens + 100)  # an estimate, corrected below
        await asyncio.sleep(0)  # the sync tasks run in between
        expected[dep.id][0] += 1
        if fails:
            b.end(dep, None, charge)
            return
        b.end(dep, 0.01, charge)
        b.record_tokens(dep, tokens, charge)
        expected[dep.id][1] += tokens

    try:
        for s in states:
            s.ensure_running()
        await asyncio.gather(*(request(*p) for p in plan))
    finally:
        for s in states:
            await s.aclose()  # the last round trip sends what is left
    r = redis.Redis.from_url(redis_server)
    try:
        for dep_id, (requests, tokens) in expected.items():
            got = r.hgetall(f"{{{prefix}}}:use:{dep_id}:{minute}")
            assert (int(got.get(b"r", 0)), int(got.get(b"t", 0))) == (requests, tokens)
    finally:
        r.close()
    assert all(s.failures == 0 for s in states)


def _circuit_open(metrics: str, dep_id: str) -> bool:
    """Whether ``routeguard_deployment_circuit_open`` says ``dep_id`` is cooling down."""
    sample = f'routeguard_deployment_circuit_open{{deployment="{dep_id}"}} '
    return any(
        line.startswith(sample) and float(line.rsplit(" ", 1)[1]) == 1.0
        for line in metrics.splitlines()
    )


def test_two_serve_processes_share_a_cooldown(
    mock: MockServer, redis_server: str, tmp_path: Path
) -> None:
    cfg = _cfg(mock, redis_server, _prefix(), redis_sync_interval=0.05)
    path = tmp_path / "routeguard.json"
    path.write_text(json.dumps(cfg))
    with (
        serve("--config", str(path)) as a,
        serve("--config", str(path)) as b,
        openai.OpenAI(base_url=a.url + "/v1", api_key="x", max_retries=0) as ca,
        openai.OpenAI(base_url=b.url + "/v1", api_key="x", max_retries=0) as cb,
    ):
        first = ca.chat.completions.with_raw_response.create(model="m", messages=MSG)  # type: ignore[arg-type]
        assert first.headers["x-routeguard-attempts"] == "2"
        # b's metrics show the cooldown a opened once b's sync task has read it.
        deadline = time.monotonic() + 15
        seen = False
        while not seen and time.monotonic() < deadline:
            seen = _circuit_open(httpx.get(b.url + "/metrics").text, "bad")
            time.sleep(0.02)
        assert seen
        before = _upstream_calls(mock, "sim-error-503")
        got = cb.chat.completions.with_raw_response.create(model="m", messages=MSG)  # type: ignore[arg-type]
        assert (got.headers["x-routeguard-deployment"], got.headers["x-routeguard-attempts"]) == (
            "good",
            "1",
        )
        assert _upstream_calls(mock, "sim-error-503") == before


async def test_a_reload_keeps_the_shared_state_unless_its_redis_settings_change(
    mock: MockServer, redis_server: str
) -> None:
    from routeguard.reload import retire

    prefix = _prefix()
    old = Gateway.from_config(_cfg(mock, redis_server, prefix))
    same = Gateway(config.load(_cfg(mock, redis_server, prefix, num_retries=0)), previous=old)
    moved = Gateway(config.load(_cfg(mock, redis_server, _prefix())), previous=same)
    try:
        assert same.shared is old.shared  # what it read carries over
        assert moved.shared is not None and moved.shared is not same.shared
        assert await same.shared.sync()  # type: ignore[union-attr]
        assert same.shared.running  # type: ignore[union-attr]
        await retire(same, moved)  # the old prefix's task and client are closed
        assert not same.shared.running  # type: ignore[union-attr]
    finally:
        await moved.aclose()
