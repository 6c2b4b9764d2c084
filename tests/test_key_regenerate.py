"""LiteLLM's ``POST /key/regenerate`` and ``/key/{key}/regenerate`` on our proxy: a new secret
for an existing key (its id, spend, budget, team, user and limits kept; ``/key/update``'s
fields changed in the same write), the old secret refused at once (in memory, in the SQLite
key database seen by another process, and across two proxies on the Redis key store), and
who may do it: the master key for any key, a team's admin for its team's keys within the
team's limits; everyone else, and every key that is missing or another team's, gets the same
403 in OpenAI's error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest

import litellm_proxy
from litellm_proxy import client
from routeguard.budget.keys import KeyRevoked, KeySpec, KeyStore
from routeguard.budget.redis_keys import RedisKeyStore
from routeguard.errors import AuthenticationError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.litellm_keys import shown_path
from routeguard.server.thread import ServerThread
from waiting import eventually

MASTER = "sk-master-regenerate"
MSG: Any = [{"role": "user", "content": "hi"}]
call = partial(litellm_proxy.call, key=MASTER)
ok = partial(litellm_proxy.ok, key=MASTER)


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with litellm_proxy.litellm_proxy(
        MASTER, input_cost_per_token=1e-6, output_cost_per_token=2e-6
    ) as s:
        yield s


def _refused(status: int, out: Any, what: str) -> None:
    """A 403 in OpenAI's error shape."""
    assert status == 403, (what, out)
    assert set(out["error"]) == {"message", "type", "param", "code"}, (what, out)
    assert out["error"]["type"] == "permission_error", (what, out)


def _status(base: str, key: str) -> int:
    """The status of a chat request with ``key`` through the openai SDK."""
    with client(base, key) as c:
        try:
            assert c.chat.completions.create(model="a", messages=MSG).choices
        except openai.APIStatusError as exc:
            assert isinstance(exc.body, dict) and exc.body.get("message"), exc.body
            return exc.status_code
    return 200


def _works(base: str, key: str) -> None:
    assert _status(base, key) == 200


def _fails(base: str, key: str) -> None:
    assert _status(base, key) == 401  # OpenAI's AuthenticationError


def test_the_master_key_regenerates_keeping_id_spend_and_limits(srv: ServerThread) -> None:
    made = ok(srv.url, "POST", "/key/generate", {
        "key_alias": "ci", "max_budget": 5, "budget_duration": "30d", "rpm_limit": 50,
        "models": ["a"], "team_id": "t-regen", "user_id": "u-regen", "metadata": {"o": 1},
    })  # fmt: skip
    old = made["key"]
    _works(srv.url, old)
    before = ok(srv.url, "GET", f"/admin/keys/{made['key_id']}")
    assert before["spend"] > 0

    out = ok(srv.url, "POST", "/key/regenerate", {"key": old})
    new = out["key"]
    assert new != old and new.startswith("sk-rg-") and out["key_id"] == made["key_id"]
    assert (out["key_alias"], out["team_id"], out["user_id"]) == ("ci", "t-regen", "u-regen")
    assert (out["max_budget"], out["rpm_limit"], out["models"]) == (5, 50, ["a"])
    assert out["budget_duration"] == made["budget_duration"] and out["metadata"] == {"o": 1}
    assert out["spend"] == pytest.approx(before["spend"])  # spend kept: same account
    _fails(srv.url, old)  # at once
    _works(srv.url, new)
    assert call(srv.url, "GET", f"/key/info?key={old}")[0] == 404
    assert ok(srv.url, "GET", f"/key/info?key={new}")["info"]["key_alias"] == "ci"

    # By the path, changing fields in the same write; unknown fields are listed.
    change = {"max_budget": 7, "key_alias": "ci-2", "duration": "1d", "soft_budget": 3}
    out = ok(srv.url, "POST", f"/key/{new}/regenerate", change)
    newer = out["key"]
    assert (out["max_budget"], out["key_alias"]) == (7, "ci-2") and out["expires"] is not None
    assert out["ignored_fields"] == ["soft_budget"] and out["key_id"] == made["key_id"]
    _fails(srv.url, new)
    _works(srv.url, newer)
    # by the key id too, as /key/update takes it
    assert ok(srv.url, "POST", "/key/regenerate", {"key": made["key_id"]})["key"] != newer


def test_bad_requests_are_400s_naming_the_field(srv: ServerThread) -> None:
    key = ok(srv.url, "POST", "/key/generate", {})["key"]
    for body, param in (
        ({}, "key"),
        ({"key": key, "new_key": "sk-mine-1234567"}, "new_key"),
        ({"key": MASTER, "new_master_key": "sk-new-master"}, "new_master_key"),
        ({"key": key, "duration": "soon"}, "duration"),
    ):
        status, out = call(srv.url, "POST", "/key/regenerate", body)
        assert status == 400 and out["error"]["param"] == param, (body, out)
        assert "sk-mine" not in json.dumps(out) and "sk-new-master" not in json.dumps(out)
    _works(srv.url, key)  # nothing changed
    assert call(srv.url, "POST", "/key/regenerate", {"key": "sk-rg-" + "x" * 43})[0] == 404
    status, out = call(srv.url, "POST", "/key/regenerate", {"key": MASTER})
    assert status == 404 and MASTER not in json.dumps(out)  # not a virtual key, not echoed
    ok(srv.url, "POST", "/key/delete", {"keys": [key]})
    status, out = call(srv.url, "POST", f"/key/{key}/regenerate", {})
    assert status == 404, out  # a deleted key stays deleted
    _fails(srv.url, key)
    assert call(srv.url, "GET", "/key/regenerate")[0] in (400, 405)


def test_only_the_master_key_or_the_keys_team_admin_may_regenerate(srv: ServerThread) -> None:
    crew = [{"role": "admin", "user_id": "rae"}, {"role": "user", "user_id": "sol"}]
    ok(srv.url, "POST", "/team/new", {"team_id": "regen", "max_budget": 4, "rpm_limit": 100,
       "members_with_roles": crew})  # fmt: skip
    ok(srv.url, "POST", "/team/new", {"team_id": "regen-rivals",
       "members_with_roles": [{"role": "admin", "user_id": "vic"}]})  # fmt: skip
    rae, sol, vic = (ok(srv.url, "POST", "/key/generate", {"user_id": u})["key"]
                     for u in ("rae", "sol", "vic"))  # fmt: skip
    team_key = ok(srv.url, "POST", "/key/generate", {"team_id": "regen", "user_id": "sol"})
    rival_key = ok(srv.url, "POST", "/key/generate", {"team_id": "regen-rivals"})["key"]
    plain = ok(srv.url, "POST", "/key/generate", {})["key"]

    status, out = call(srv.url, "POST", "/key/regenerate",
                       {"key": team_key["key"], "max_budget": 3}, key=rae)  # fmt: skip
    assert status == 200 and out["key_id"] == team_key["key_id"] and out["max_budget"] == 3
    _fails(srv.url, team_key["key"])
    _works(srv.url, out["key"])
    status, again = call(srv.url, "POST", f"/key/{out['key']}/regenerate", {}, key=rae)
    assert status == 200, again
    current = again["key"]

    # Within the team's limits only, naming the field, and nothing changed.
    for body in ({"max_budget": 5}, {"rpm_limit": 101}, {"team_id": "regen-rivals"},
                 {"user_id": "stranger"}):  # fmt: skip
        status, out = call(srv.url, "POST", "/key/regenerate", {"key": current, **body}, key=rae)
        _refused(status, out, str(body))
        assert out["error"]["param"] == next(iter(body)), out
    _works(srv.url, current)

    nope = "sk-rg-" + "y" * 43
    for who, name, what in (
        (sol, current, "a plain member"),
        (vic, current, "another team's admin"),
        (rae, rival_key, "a key of another team"),
        (rae, plain, "a key of no team"),
        (rae, nope, "no such key"),
        (plain, plain, "a key regenerating itself"),
    ):
        status, out = call(srv.url, "POST", "/key/regenerate", {"key": name}, key=who)
        _refused(status, out, what)
        status, out = call(srv.url, "POST", f"/key/{name}/regenerate", None, key=who)
        _refused(status, out, what + " (by the path)")
    messages = {call(srv.url, "POST", "/key/regenerate", {"key": n}, key=rae)[1]["error"]["message"]
                for n in (rival_key, nope)}  # fmt: skip
    assert len(messages) == 1, messages  # no probing: the same answer
    for key in (current, rival_key, plain):  # none of them was changed
        _works(srv.url, key)


def test_the_old_secret_fails_in_another_process_on_the_key_database(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    here, there = KeyStore(path), KeyStore(path)
    try:
        token, rec = here.create(KeySpec(max_budget=2.0))
        assert there.authenticate(token).key_id == rec.key_id
        new, changed = here.rotate(rec.key_id, {"rpm": 9})
        with pytest.raises(AuthenticationError):
            there.authenticate(token)
        seen = there.authenticate(new)
        assert seen.key_id == rec.key_id and seen.spec.rpm == 9 and seen.spec.max_budget == 2.0
        assert changed.spec.rpm == 9
    finally:
        here.close()
        there.close()


def test_the_old_secret_fails_on_every_instance_of_the_redis_key_store(
    redis_server: str, request: pytest.FixtureRequest
) -> None:
    with MockServer() as mock:
        cfg = {
            "model_list": [{"model_name": "a", "litellm_params": {
                "model": "openai/a", "api_base": mock.url + "/v1", "api_key": "k"}}],
            "general_settings": {"master_key": MASTER},
            "server": {"key_store": "redis", "redis_url": redis_server,
                       "key_hash_secret": "regen-secret"},
        }  # fmt: skip
        gateways = [Gateway.from_config(cfg) for _ in range(2)]
        try:
            with (
                ServerThread(create_app(gateways[0])) as a,
                ServerThread(create_app(gateways[1])) as b,
            ):
                old = ok(a.url, "POST", "/key/generate", {"key_alias": request.node.name})["key"]
                eventually(lambda: _works(b.url, old))
                out = ok(b.url, "POST", "/key/regenerate", {"key": old})
                _fails(b.url, old)  # where it was regenerated: at once
                eventually(lambda: _fails(a.url, old))  # elsewhere: as the stream arrives
                eventually(lambda: _works(a.url, out["key"]))
                _works(b.url, out["key"])
        finally:
            for gw in gateways:
                gw.keys.close()


def test_traces_never_show_a_key_named_in_the_path() -> None:
    assert shown_path("/key/sk-rg-abcdef/regenerate") == "/key/{key}/regenerate"
    assert shown_path("/key/regenerate") == "/key/regenerate"
    assert shown_path("/v1/chat/completions") == "/v1/chat/completions"


def test_a_stale_copy_cannot_bring_a_deleted_key_back_on_the_key_database(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    here, there = KeyStore(path), KeyStore(path)
    try:
        token, rec = here.create(KeySpec())
        stale = there.get(rec.key_id)  # what another process holds
        here.revoke(rec.key_id)
        with pytest.raises(KeyRevoked):  # the old copy written back
            there._save(msgspec.structs.replace(stale, last4="zzzz"))
        with pytest.raises(KeyRevoked):
            there.rotate(rec.key_id)
        assert there.update(rec.key_id, {"rpm": 5}).revoked  # a change keeps it revoked
        with pytest.raises(AuthenticationError, match="revoked"):
            here.authenticate(token)
        assert there.get(rec.key_id).revoked and here.get(rec.key_id).revoked
    finally:
        here.close()
        there.close()


def test_a_stale_copy_cannot_bring_a_deleted_key_back_on_redis(
    redis_server: str, request: pytest.FixtureRequest
) -> None:
    prefix = f"t-{request.node.name}"
    a, b = (RedisKeyStore(redis_server, prefix=prefix) for _ in range(2))
    try:
        token, rec = a.create(KeySpec())
        stale = eventually(lambda: b.authenticate(token))
        a.revoke(rec.key_id)
        with pytest.raises(KeyRevoked):  # b's copy is not revoked yet, or is: refused either way
            b._save(msgspec.structs.replace(stale, last4="zzzz"))
        with pytest.raises(KeyRevoked):
            a.rotate(rec.key_id)
        late = RedisKeyStore(redis_server, prefix=prefix)  # what Redis itself holds
        try:
            assert late.get(rec.key_id).revoked
        finally:
            late.close()
    finally:
        a.close()
        b.close()
