"""Authentication follows the configuration, not the key store's contents: an emptied Redis
(restart, FLUSHALL) makes every key fail instead of every caller anonymous; a store that
cannot be checked answers 503; a key made by ``routeguard keys`` in another process counts on
the next request that presents it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis

from conftest import RedisProcess
from routeguard.budget import keys as keys_module
from routeguard.budget.keys import KeyStore
from routeguard.budget.redis_keys import KeyStoreUnavailable
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MSG: Any = [{"role": "user", "content": "hi"}]


def _models(url: str) -> list[dict[str, Any]]:
    return [{"type": "openai", "api_base": url + "/v1", "api_key": "k",
             "model_name": "a", "model": "m-a"}]  # fmt: skip


def _redis_cfg(url: str, redis_url: str) -> dict[str, Any]:
    server = {"key_store": "redis", "redis_url": redis_url, "key_hash_secret": "hs"}
    return {"model_list": _models(url), "server": server}


def _chat(base: str, key: str) -> Any:
    with openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0) as c:
        return c.chat.completions.create(model="a", messages=MSG)


def _wait(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


def test_redis_flushall_does_not_make_requests_anonymous(
    mock: MockServer, redis_process: RedisProcess
) -> None:
    gw = Gateway.from_config(_redis_cfg(mock.url, redis_process.url))
    try:
        token, _ = gw.keys.create()
        with ServerThread(create_app(gw)) as srv:
            assert _chat(srv.url, token).choices
            with pytest.raises(openai.AuthenticationError):
                _chat(srv.url, "sk-anyone")
    finally:
        gw.keys.close()
    client = redis.Redis.from_url(redis_process.url)
    client.flushall()
    client.close()
    # An instance starting on the emptied Redis (or failing over to an empty replica).
    fresh = Gateway.from_config(_redis_cfg(mock.url, redis_process.url))
    try:
        assert len(fresh.keys) == 0
        with ServerThread(create_app(fresh)) as srv:
            for key in ("sk-anyone", token):
                with pytest.raises(openai.AuthenticationError):
                    _chat(srv.url, key)
            with (
                anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0) as ant,
                pytest.raises(anthropic.AuthenticationError),
            ):
                ant.messages.create(model="a", max_tokens=5, messages=MSG)
    finally:
        fresh.keys.close()


def test_redis_restart_does_not_make_requests_anonymous(
    mock: MockServer, redis_process: RedisProcess
) -> None:
    gw = Gateway.from_config(_redis_cfg(mock.url, redis_process.url))
    try:
        token, _ = gw.keys.create()
        with ServerThread(create_app(gw)) as srv:
            assert _chat(srv.url, token).choices
            redis_process.stop()  # persistence is off: it comes back empty
            redis_process.start()
            _wait(lambda: len(gw.keys) == 0)  # the running instance reloaded the empty store
            for key in ("sk-anyone", token):
                with pytest.raises(openai.AuthenticationError):
                    _chat(srv.url, key)
    finally:
        gw.keys.close()


def test_unknown_key_while_redis_is_down_is_503_known_key_still_served(
    mock: MockServer, redis_process: RedisProcess
) -> None:
    gw = Gateway.from_config(_redis_cfg(mock.url, redis_process.url))
    try:
        token, _ = gw.keys.create()
        with ServerThread(create_app(gw)) as srv:
            redis_process.stop()
            _wait(lambda: getattr(gw.keys, "_broken", False) is True)
            with pytest.raises(openai.InternalServerError) as info:
                _chat(srv.url, "sk-rg-not-a-key-we-have-seen")
            assert info.value.status_code == 503
            assert "key_store_unavailable" in str(info.value.body)
            with (
                anthropic.Anthropic(base_url=srv.url, api_key="sk-new", max_retries=0) as ant,
                pytest.raises(anthropic.InternalServerError) as ainfo,
            ):
                ant.messages.create(model="a", max_tokens=5, messages=MSG)
            assert ainfo.value.status_code == 503
            assert _chat(srv.url, token).choices  # keys in memory keep working
    finally:
        gw.keys.close()


def test_a_key_database_requires_keys_even_while_empty(mock: MockServer, tmp_path: Path) -> None:
    cfg = {"model_list": _models(mock.url), "server": {"database": str(tmp_path / "k.db")}}
    gw = Gateway.from_config(cfg)
    try:
        with ServerThread(create_app(gw)) as srv, pytest.raises(openai.AuthenticationError):
            _chat(srv.url, "sk-anyone")
    finally:
        gw.keys.close()


def test_the_embedded_default_stays_open(mock: MockServer) -> None:
    gw = Gateway.from_config({"model_list": _models(mock.url)})
    with ServerThread(create_app(gw)) as srv:
        assert _chat(srv.url, "sk-anyone").choices


def _cli(config: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-m", "routeguard.cli", "keys", "--config", str(config), *args],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_a_key_made_by_the_cli_works_on_the_running_server_at_once(
    mock: MockServer, tmp_path: Path
) -> None:
    db = tmp_path / "keys.db"
    config = tmp_path / "rg.json"
    config.write_text(
        json.dumps({"model_list": _models(mock.url), "server": {"database": str(db)}})
    )
    gw = Gateway.from_config(str(config))
    try:
        with ServerThread(create_app(gw)) as srv:
            made = _cli(config, "create", "--name", "late")
            assert _chat(srv.url, made["key"]).choices  # the very next request
            rotated = _cli(config, "rotate", made["key_id"])
            with pytest.raises(openai.AuthenticationError):
                _chat(srv.url, made["key"])
            assert _chat(srv.url, rotated["key"]).choices
            _cli(config, "revoke", made["key_id"])
            with pytest.raises(openai.AuthenticationError, match="revoked"):
                _chat(srv.url, rotated["key"])
    finally:
        gw.keys.close()


def test_a_store_that_cannot_be_read_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "keys.db"
    store = KeyStore(db)
    token, _ = store.create()
    assert store.authenticate(token)
    with sqlite3.connect(db) as other:  # another process damages the database
        other.execute("DROP TABLE keys")
    # That writer sets no change mark: the store's next full look (at most FULL_LOOK_S
    # away) is the one that finds the damage.
    later = time.monotonic() + keys_module.FULL_LOOK_S
    monkeypatch.setattr(keys_module.time, "monotonic", lambda: later)
    with pytest.raises(KeyStoreUnavailable, match="cannot be read") as info:
        store.authenticate(token)
    assert info.value.status_code == 503
    store.close()


def test_instances_keep_one_hash_secret_across_a_flushall(redis_process: RedisProcess) -> None:
    from routeguard.budget.redis_keys import RedisKeyStore
    from waiting import eventually

    old = RedisKeyStore(redis_process.url, prefix="rg:flush")  # the secret lives in Redis
    try:
        client = redis.Redis.from_url(redis_process.url)
        client.flushall()
        client.close()
        new = RedisKeyStore(redis_process.url, prefix="rg:flush")  # draws a fresh secret
        try:
            token, rec = new.create()
            # The running instance adopts the secret now in Redis: the key works on both.
            assert eventually(lambda: old.authenticate(token)).key_id == rec.key_id
            token2, rec2 = old.create()
            assert eventually(lambda: new.authenticate(token2)).key_id == rec2.key_id
        finally:
            new.close()
    finally:
        old.close()


def test_a_keys_principal_is_made_once_and_follows_its_record(tmp_path: Path) -> None:
    """The gate reuses the Principal of an unchanged key, and a changed or revoked key is
    seen at once (a changed record is a new one)."""
    from routeguard.budget.keys import KeySpec
    from routeguard.errors import AuthenticationError
    from routeguard.server.auth import ADMIN, Gate

    store = KeyStore(str(tmp_path / "keys.db"))
    token, rec = store.create(KeySpec(models=["a"]))
    gate = Gate(b"sk-master", store, required=True)

    def scope(key: str) -> dict[str, Any]:
        return {"headers": [(b"authorization", f"Bearer {key}".encode())]}

    first = gate.authenticate(scope(token))
    assert first.kind == "key" and first.key is not None and first.key.key_id == rec.key_id
    assert gate.authenticate(scope(token)) is first
    assert gate.authenticate(scope("sk-master")) is ADMIN
    store.update(rec.key_id, {"models": ["a", "b"]})
    changed = gate.authenticate(scope(token))
    assert changed is not first and changed.key is not None
    assert changed.key.allows("b") and not first.key.allows("b")
    for rpm in range(1, 200):  # each change replaces the key's entry, none piles up
        store.update(rec.key_id, {"rpm": rpm})
        now = gate.authenticate(scope(token)).key
        assert now is not None and now.spec.rpm == rpm
    assert len(gate._principals) == 1
    store.revoke(rec.key_id)
    with pytest.raises(AuthenticationError, match="revoked"):
        gate.authenticate(scope(token))
