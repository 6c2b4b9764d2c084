"""Virtual keys shared through Redis: a key made, changed, rotated or revoked on one instance
takes effect on the others within milliseconds; only keyed hashes reach Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from routeguard.budget.keys import KeySpec
from routeguard.budget.redis_keys import KeyStoreUnavailable, RedisKeyStore
from routeguard.config import load
from routeguard.errors import AuthenticationError, ConfigError
from routeguard.gateway import Gateway
from waiting import assert_revoked, eventually


@pytest.fixture
def stores(redis_server: str, request: pytest.FixtureRequest) -> Iterator[list[RedisKeyStore]]:
    prefix = f"t-{request.node.name}"
    made = [RedisKeyStore(redis_server, prefix=prefix) for _ in range(2)]
    try:
        yield made
    finally:
        for s in made:
            s.close()


def test_a_key_made_on_one_instance_works_on_another(stores: list[RedisKeyStore]) -> None:
    a, b = stores
    token, rec = a.create(KeySpec(team="t1", max_budget=2.0))
    got = eventually(lambda: b.authenticate(token))
    assert got.key_id == rec.key_id and got.spec.max_budget == 2.0
    a.update(rec.key_id, {"rpm": 7})
    eventually(lambda: _expect(b.get(rec.key_id).spec.rpm == 7))
    new_token, _ = b.rotate(rec.key_id)
    eventually(lambda: a.authenticate(new_token))
    with pytest.raises(AuthenticationError):
        a.authenticate(token)  # a has the rotation: the old secret no longer works there
    a.revoke(rec.key_id)

    eventually(lambda: assert_revoked(b, new_token))


def test_a_new_instance_loads_every_key_and_redis_holds_no_plaintext(
    redis_server: str, stores: list[RedisKeyStore]
) -> None:
    a, _ = stores
    tokens = [a.create(KeySpec(name=f"k{i}"))[0] for i in range(5)]
    late = RedisKeyStore(redis_server, prefix=a._tag.strip("{}"))
    try:
        assert len(late) == 5
        for t in tokens:
            late.authenticate(t)
    finally:
        late.close()
    client = redis.Redis.from_url(redis_server)
    dump = b"".join(client.hgetall(a._hash).values())  # type: ignore[union-attr]
    client.close()
    assert all(t.encode() not in dump and t[-20:].encode() not in dump for t in tokens)


def test_unreachable_redis_is_a_clear_error() -> None:
    with pytest.raises(KeyStoreUnavailable, match="unreachable"):
        RedisKeyStore("redis://127.0.0.1:1/0", timeout_s=0.2)


def test_config_selects_the_redis_key_store(redis_server: str) -> None:
    cfg = {
        "model_list": [{"model_name": "m", "type": "openai", "model": "x", "api_key": "k"}],
        "server": {"key_store": "redis", "redis_url": redis_server, "key_hash_secret": "s"},
    }
    gw = Gateway.from_config(cfg)
    try:
        assert isinstance(gw.keys, RedisKeyStore)
    finally:
        gw.keys.close()
    with pytest.raises(ConfigError, match=r"server\.redis_url"):
        load({"model_list": cfg["model_list"], "server": {"key_store": "redis"}})


def _expect(ok: bool) -> None:
    assert ok


def test_serve_refuses_workers_that_would_split_budgets_or_keys(tmp_path: Any) -> None:
    from routeguard.cli import _workers_problem

    models = [{"model_name": "m", "type": "openai", "model": "x", "api_key": "k"}]
    budgets = [{"name": "org", "limit": 10.0}]
    assert _workers_problem(load({"model_list": models}), 2) is None
    assert _workers_problem(load({"model_list": models, "budgets": budgets}), 1) is None
    msg = _workers_problem(load({"model_list": models, "budgets": budgets}), 2)
    assert msg is not None and "budget_settings.backend: redis" in msg
    shared = {"backend": "redis", "redis_url": "redis://127.0.0.1:6379/0"}
    keyed = load({"model_list": models, "budget_settings": shared,
                  "server": {"master_key": "sk-m"}})  # fmt: skip
    msg = _workers_problem(keyed, 2)
    assert msg is not None and "server.key_store: redis" in msg
    both = load({"model_list": models, "budget_settings": shared,
                 "server": {"master_key": "sk-m", "key_store": "redis"}})  # fmt: skip
    assert _workers_problem(both, 4) is None


@pytest.mark.parametrize("what", ["entity", "revoked key"])
def test_the_tailer_never_puts_back_what_this_instance_overwrote(
    redis_server: str, what: str
) -> None:
    # The tailer fetches the value an event names, then applies it. When this instance
    # writes the same name between the fetch and the apply, the fetched value is older than
    # what it just wrote: applied, it would undo the write (a member deleted showing again,
    # a revoked key let in again) until the write's own event came round. Here the tailer's
    # fetches are held at a gate so the test can write in that window, deterministically.
    store = RedisKeyStore(redis_server, prefix=f"t-tailer-rollback-{what}")
    real = store._tail_client.hmget
    fetched, release = threading.Event(), threading.Event()

    def gated(name: Any, keys: Any) -> Any:
        got = real(name, keys)
        fetched.set()
        release.wait(5)
        release.clear()
        return got

    try:
        store._tail_client.hmget = gated  # type: ignore[method-assign]
        if what == "entity":  # event 1; the tailer fetches v1 and waits
            store.put_entity("org/o1", b"v1")
        else:
            token, rec = store.create(KeySpec())
        assert fetched.wait(5)
        fetched.clear()
        if what == "entity":  # written while the tailer holds event 1's value
            store.put_entity("org/o1", b"v2")
        else:
            store.revoke(rec.key_id)
        release.set()  # the tailer applies what it fetched for event 1
        assert fetched.wait(5)  # ... and is fetching for event 2: event 1 is applied
        if what == "entity":
            assert store.entity("org/o1", sync=False) == b"v2"  # was b"v1" (rolled back)
        else:
            assert_revoked(store, token)  # was let in again
        release.set()
    finally:
        release.set()
        store.close()


def _hold_after(obj: Any, attr: str) -> tuple[threading.Event, threading.Event]:
    """Make ``obj.attr`` signal once it has run and wait for a go before returning."""
    real = getattr(obj, attr)
    reached, go = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        got = real(*args, **kwargs)
        setattr(obj, attr, real)  # only the first call is held
        reached.set()
        go.wait(30)
        return got

    setattr(obj, attr, held)
    return reached, go


def _hold_before(obj: Any, attr: str) -> tuple[threading.Event, threading.Event]:
    """Make the next call of ``obj.attr`` signal and wait for a go before it runs."""
    real = getattr(obj, attr)
    reached, go = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        setattr(obj, attr, real)
        reached.set()
        go.wait(30)
        return real(*args, **kwargs)

    setattr(obj, attr, held)
    return reached, go


@pytest.mark.parametrize("what", ["entity", "revoked key"])
def test_a_newer_write_from_another_instance_is_never_skipped(redis_server: str, what: str) -> None:
    # Instance a writes a name; its write reaches Redis but a's thread is delayed before it
    # applies it locally. Instance b then writes the same name (a later stream id). a's
    # tailer reads both events in one batch and fetches b's value. Whatever the order of a's
    # local apply and the tailer's, a must end with b's value: the newer write (for a key,
    # b's revocation) may never be lost on a.
    prefix = f"t-newer-elsewhere-{what}"
    a = RedisKeyStore(redis_server, prefix=prefix)
    b = RedisKeyStore(redis_server, prefix=prefix)
    try:
        token = ""
        if what == "revoked key":
            token, rec = a.create(KeySpec())
            eventually(lambda: b.authenticate(token))
        at_read, go_read = _hold_before(a._tail_client, "xread")  # both events in one batch
        assert at_read.wait(5)
        wrote, go_write = _hold_after(a, "_entity_script" if what == "entity" else "_save_script")
        local = threading.Thread(
            target=(lambda: a.put_entity("org/o1", b"mine"))
            if what == "entity"
            else (lambda: a.update(rec.key_id, {"rpm": 7}))
        )
        local.start()
        assert wrote.wait(5)  # a's write is in Redis; its local apply waits
        if what == "entity":
            b.put_entity("org/o1", b"theirs")
        else:
            b.revoke(rec.key_id)
        fetched, go_fetch = _hold_after(a._tail_client, "hmget")
        go_read.set()  # a's tailer reads both events and fetches b's value
        assert fetched.wait(5)
        go_write.set()  # a applies its own (older) write now
        local.join(5)
        go_fetch.set()  # then the tailer applies what it fetched
        b.put_entity("org/probe", b"x")  # a marker: once a has it, that batch is done
        eventually(lambda: _expect(a.entity("org/probe", sync=False) == b"x"))
        if what == "entity":
            assert a.entity("org/o1", sync=False) == b"theirs"
        else:
            assert_revoked(a, token)  # a key revoked on b stays revoked on a
    finally:
        a.close()
        b.close()


def test_two_local_writes_applied_out_of_order_keep_the_later(redis_server: str) -> None:
    # Two writes of one name from this instance: the first reaches Redis, then its thread
    # is delayed before the local apply while the second is written and applied. The first
    # must not be applied over the second (a revocation looking undone until the tailer
    # caught up, on the instance that made it).
    store = RedisKeyStore(redis_server, prefix="t-two-local-writes")
    try:
        wrote, go = _hold_after(store, "_entity_script")
        first = threading.Thread(target=lambda: store.put_entity("org/o1", b"v1"))
        first.start()
        assert wrote.wait(5)  # v1 is in Redis; its local apply waits
        store.put_entity("org/o1", b"v2")
        go.set()
        first.join(5)
        assert store.entity("org/o1", sync=False) == b"v2"
    finally:
        store.close()


def test_refresh_reloads_on_the_tailer_and_returns_when_done(redis_server: str) -> None:
    a = RedisKeyStore(redis_server, prefix="t-refresh")
    try:
        a._redis.hset(a._entity_hash, "org/restored", b"r")  # written behind its back
        a.refresh()
        assert a.entity("org/restored", sync=False) == b"r"
    finally:
        a.close()
