"""LiteLLM's organization members and organization admins on our proxy, as a LiteLLM admin
script calls them, over the in-memory key store and the Redis key store (a real
redis-server): ``/organization/member_add``/``member_update``/``member_delete`` in LiteLLM's
shapes, and a key whose user is an ``org_admin`` managing its organization's teams, members
and keys, and nothing else: each permission allowed and refused (a 403 in OpenAI's error
shape naming the field), another organization's team or key refused like a missing one."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import openai
import pytest

import litellm_proxy
from litellm_proxy import client
from routeguard.server.thread import ServerThread

MASTER = "sk-master-litellm-orgs"
MSG: Any = [{"role": "user", "content": "hi"}]
call = partial(litellm_proxy.call, key=MASTER)
ok = partial(litellm_proxy.ok, key=MASTER)


@pytest.fixture(scope="module", params=["memory", "redis"])
def srv(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    settings: dict[str, Any] = {}
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").rsplit("/", 1)[0] + "/6"
        settings = {"server": {"key_store": "redis", "redis_url": url},
                    "budget_settings": {"backend": "redis", "redis_url": url}}  # fmt: skip
    with litellm_proxy.litellm_proxy(
        MASTER, settings=settings, input_cost_per_token=1e-6, output_cost_per_token=2e-6
    ) as s:
        yield s


def _refused(got: tuple[int, Any], param: str | None, what: str) -> str:
    """A 403 in OpenAI's error shape naming ``param``; its message."""
    status, out = got
    assert status == 403, (what, out)
    assert set(out["error"]) == {"message", "type", "param", "code"}, (what, out)
    assert out["error"]["type"] == "permission_error", (what, out)
    assert out["error"]["param"] == param, (what, out)
    return str(out["error"]["message"])


def _key(srv: ServerThread, user: str) -> str:
    return str(ok(srv.url, "POST", "/key/generate", {"user_id": user})["key"])


def test_organization_members_in_litellm_shapes(srv: ServerThread) -> None:
    ok(srv.url, "POST", "/organization/new", {"organization_id": "m-org",
       "organization_alias": "M"})  # fmt: skip
    added = ok(srv.url, "POST", "/organization/member_add", {
        "organization_id": "m-org", "max_budget_in_organization": 5,
        "member": [{"role": "org_admin", "user_id": "m-ann"},
                   {"role": "internal_user", "user_id": "m-bob", "user_email": "b@x.io"}],
    })  # fmt: skip
    assert added["organization_id"] == "m-org"
    assert [m["user_role"] for m in added["updated_organization_memberships"]] == [
        "org_admin", "internal_user"]  # fmt: skip
    assert added["ignored_fields"] == ["max_budget_in_organization"]
    assert ok(srv.url, "GET", "/user/info?user_id=m-bob")["user_info"]["user_email"] == "b@x.io"
    ok(
        srv.url,
        "POST",
        "/organization/member_add",  # one object, not a list
        {"organization_id": "m-org", "member": {"role": "internal_user", "user_id": "m-cy"}},
    )
    info = ok(srv.url, "GET", "/organization/info?organization_id=m-org")
    assert [(m["user_id"], m["user_role"]) for m in info["members"]] == [
        ("m-ann", "org_admin"),
        ("m-bob", "internal_user"),
        ("m-cy", "internal_user"),
    ]

    out = ok(
        srv.url,
        "PATCH",
        "/organization/member_update",
        {"organization_id": "m-org", "user_id": "m-bob", "role": "org_admin"},
    )
    assert (out["user_id"], out["user_role"]) == ("m-bob", "org_admin")
    out = ok(
        srv.url,
        "PATCH",
        "/organization/member_update",  # by email
        {"organization_id": "m-org", "user_email": "b@x.io", "role": "internal_user"},
    )
    assert (out["user_id"], out["user_role"]) == ("m-bob", "internal_user")
    out = ok(
        srv.url,
        "DELETE",
        "/organization/member_delete",
        {"organization_id": "m-org", "user_id": "m-cy"},
    )
    assert out["user_id"] == "m-cy"
    info = ok(srv.url, "GET", "/organization/info?organization_id=m-org")
    assert [m["user_id"] for m in info["members"]] == ["m-ann", "m-bob"]

    for method, path, body, param, status in (
        ("POST", "/organization/member_add",
         {"organization_id": "m-org", "member": {"role": "proxy_admin", "user_id": "x"}},
         "member", 400),
        ("POST", "/organization/member_add", {"organization_id": "m-org", "member": {}},
         "member", 400),
        ("POST", "/organization/member_add", {"organization_id": "m-org"}, "member", 400),
        ("POST", "/organization/member_add",
         {"organization_id": "m-org", "member": {"user_id": "x", "rol": "org_admin"}},
         "member", 400),
        ("PATCH", "/organization/member_update",
         {"organization_id": "m-org", "user_id": "m-bob", "role": "admin"}, "role", 400),
        ("PATCH", "/organization/member_update",
         {"organization_id": "m-org", "user_id": "nobody", "role": "org_admin"}, "user_id",
         404),
        ("DELETE", "/organization/member_delete", {"organization_id": "m-org"}, "user_id", 400),
        ("POST", "/organization/member_add",
         {"organization_id": "no-such-org", "member": {"user_id": "x"}}, "organization_id",
         404),
    ):  # fmt: skip
        got, out = call(srv.url, method, path, body)
        assert (got, out["error"]["param"]) == (status, param), (path, body, out)

    # A deleted user leaves its organizations: one made again later is no admin.
    ok(srv.url, "POST", "/user/delete", {"user_ids": ["m-ann"]})
    info = ok(srv.url, "GET", "/organization/info?organization_id=m-org")
    assert [m["user_id"] for m in info["members"]] == ["m-bob"]


@pytest.fixture(scope="module")
def orgs(srv: ServerThread) -> dict[str, str]:
    """Two organizations, each with its admin; acme also with a plain member; the keys."""
    ok(srv.url, "POST", "/organization/new", {"organization_id": "acme",
       "organization_alias": "Acme", "max_budget": 10, "rpm_limit": 100,
       "models": ["a", "b"]})  # fmt: skip
    ok(srv.url, "POST", "/organization/new", {"organization_id": "rival",
       "organization_alias": "Rival", "max_budget": 50})  # fmt: skip
    ok(
        srv.url,
        "POST",
        "/organization/member_add",
        {
            "organization_id": "acme",
            "member": [
                {"role": "org_admin", "user_id": "ann"},
                {"role": "internal_user", "user_id": "bob"},
            ],
        },
    )
    ok(srv.url, "POST", "/organization/member_add", {"organization_id": "rival",
       "member": {"role": "org_admin", "user_id": "rex"}})  # fmt: skip
    ok(srv.url, "POST", "/team/new", {"team_id": "rival-team", "organization_id": "rival"})
    rival_key = ok(srv.url, "POST", "/key/generate", {"team_id": "rival-team"})["key"]
    return {"ann": _key(srv, "ann"), "bob": _key(srv, "bob"), "rex": _key(srv, "rex"),
            "rival_key": rival_key}  # fmt: skip


def test_an_org_admin_manages_its_organizations_teams(
    srv: ServerThread, orgs: dict[str, str]
) -> None:
    ann = orgs["ann"]
    as_ann = partial(litellm_proxy.call, srv.url, key=ann)

    status, out = as_ann("GET", "/organization/info?organization_id=acme")
    assert status == 200 and out["organization_alias"] == "Acme", out
    status, out = as_ann(
        "POST",
        "/team/new",
        {"team_id": "acme-search", "organization_id": "acme", "max_budget": 5, "models": ["a"]},
    )
    assert status == 200 and out["organization_id"] == "acme", out
    status, out = as_ann("POST", "/team/update", {"team_id": "acme-search", "max_budget": 8,
                         "budget_duration": "30d", "team_alias": "Search"})  # fmt: skip
    assert status == 200 and out["data"]["max_budget"] == 8, out  # raised within the org's
    status, out = as_ann(
        "POST",
        "/team/member_add",
        {"team_id": "acme-search", "member": {"role": "user", "user_id": "cy"}},
    )
    assert status == 200 and out["members"] == ["cy"], out
    status, out = as_ann(
        "POST", "/team/member_update", {"team_id": "acme-search", "user_id": "cy", "role": "admin"}
    )
    assert status == 200 and out["role"] == "admin", out
    for path in ("/team/block", "/team/unblock"):
        assert as_ann("POST", path, {"team_id": "acme-search"})[0] == 200
    status, out = as_ann("GET", "/team/info?team_id=acme-search")
    assert status == 200 and out["team_info"]["team_alias"] == "Search", out
    status, out = as_ann("GET", "/team/list?organization_id=acme")
    assert status == 200 and [t["team_id"] for t in out] == ["acme-search"], out

    # Keys of its teams: for a member of the team or of the organization.
    status, made = as_ann("POST", "/key/generate", {"team_id": "acme-search", "user_id": "bob"})
    assert status == 200 and made["team_id"] == "acme-search", made
    with client(srv.url, made["key"]) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
    status, out = as_ann("POST", "/key/update", {"key": made["key"], "key_alias": "bob-ci",
                         "user_id": "cy"})  # fmt: skip
    assert status == 200 and out["key_alias"] == "bob-ci", out
    status, out = as_ann("POST", "/key/delete", {"keys": [made["key"]]})
    assert status == 200, out
    with client(srv.url, made["key"]) as c, pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="a", messages=MSG)

    # Its organization: members, alias, budget kept or lowered.
    status, out = as_ann(
        "POST",
        "/organization/member_add",
        {"organization_id": "acme", "member": {"user_id": "dee"}},
    )
    assert status == 200, out
    status, out = as_ann(
        "PATCH",
        "/organization/member_update",
        {"organization_id": "acme", "user_id": "dee", "role": "org_admin"},
    )
    assert status == 200 and out["user_role"] == "org_admin", out
    status, out = as_ann(
        "DELETE", "/organization/member_delete", {"organization_id": "acme", "user_id": "dee"}
    )
    assert status == 200, out
    status, out = as_ann(
        "PATCH",
        "/organization/update",
        {
            "organization_id": "acme",
            "organization_alias": "Acme Inc",
            "max_budget": 10,
            "rpm_limit": 90,
        },
    )
    assert status == 200 and out["organization_alias"] == "Acme Inc", out

    status, out = as_ann("POST", "/team/new", {"team_id": "acme-tmp", "organization_id": "acme"})
    assert status == 200, out
    status, out = as_ann("POST", "/team/delete", {"team_ids": ["acme-tmp"]})
    assert status == 200 and out["deleted_teams"] == ["acme-tmp"], out


def test_an_org_admin_is_refused_beyond_its_organization(
    srv: ServerThread, orgs: dict[str, str]
) -> None:
    ann = orgs["ann"]
    as_ann = partial(litellm_proxy.call, srv.url, key=ann)
    ok(
        srv.url,
        "POST",
        "/team/new",
        {
            "team_id": "acme-ops",
            "organization_id": "acme",
            "max_budget": 2,
            "members_with_roles": [{"role": "user", "user_id": "eli"}],
        },
    )
    acme_key = ok(srv.url, "POST", "/key/generate", {"team_id": "acme-ops"})["key"]

    # The organization's budget is the master key's to raise; its own limits bound its teams.
    for method, path, body, param in (
        ("PATCH", "/organization/update", {"organization_id": "acme", "max_budget": 11},
         "max_budget"),
        ("PATCH", "/organization/update", {"organization_id": "acme", "max_budget": None},
         "max_budget"),
        ("PATCH", "/organization/update", {"organization_id": "acme", "rpm_limit": 1000},
         "rpm_limit"),
        ("PATCH", "/organization/update", {"organization_id": "acme",
         "budget_duration": "1d"}, "budget_duration"),
        ("PATCH", "/organization/update", {"organization_id": "acme", "models": ["a", "c"]},
         "models"),
        ("POST", "/team/new", {"organization_id": "acme", "max_budget": 10.5}, "max_budget"),
        ("POST", "/team/new", {"organization_id": "acme", "rpm_limit": 101}, "rpm_limit"),
        ("POST", "/team/update", {"team_id": "acme-ops", "max_budget": 11}, "max_budget"),
        ("POST", "/team/update", {"team_id": "acme-ops", "organization_id": "rival"},
         "organization_id"),
        ("POST", "/team/update", {"team_id": "acme-ops", "organization_id": None},
         "organization_id"),  # out of every organization: out of the organization's budget
        ("POST", "/key/generate", {"team_id": "acme-ops", "user_id": "stranger"}, "user_id"),
        ("POST", "/key/update", {"key": acme_key, "team_id": "rival-team"}, "team_id"),
        ("POST", "/key/update", {"key": acme_key, "user_id": "stranger"}, "user_id"),
        # Another organization, or none: the same answer as for one that does not exist.
        ("POST", "/team/new", {"organization_id": "rival"}, "organization_id"),
        ("POST", "/team/new", {"team_alias": "no org"}, "organization_id"),
        ("GET", "/organization/info?organization_id=rival", None, "organization_id"),
        ("POST", "/organization/member_add",
         {"organization_id": "rival", "member": {"user_id": "ann", "role": "org_admin"}},
         "organization_id"),
        ("GET", "/team/list", None, "organization_id"),
        ("POST", "/team/delete", {"team_ids": ["acme-ops", "rival-team"]}, "team_ids"),
    ):  # fmt: skip
        _refused(as_ann(method, path, body), param, f"{path} {body}")
    org = ok(srv.url, "GET", "/organization/info?organization_id=acme")
    assert org["max_budget"] == 10 and org["rpm_limit"] <= 100 and org["budget_duration"] is None
    assert ok(srv.url, "GET", "/team/info?team_id=acme-ops")["team_info"]["max_budget"] == 2
    assert ok(srv.url, "GET", "/team/info?team_id=rival-team")["team_info"]["team_id"]

    # No probing: another organization's team or key is refused like a missing one.
    for method, path, foreign, missing, param in (
        ("GET", "/team/info?team_id={}", "rival-team", "no-such-team", "team_id"),
        ("POST", "/team/update", {"team_id": "rival-team", "team_alias": "x"},
         {"team_id": "no-such-team", "team_alias": "x"}, "team_id"),
        ("POST", "/team/member_add", {"team_id": "rival-team", "member": {"user_id": "x"}},
         {"team_id": "no-such-team", "member": {"user_id": "x"}}, "team_id"),
        ("POST", "/key/generate", {"team_id": "rival-team"}, {"team_id": "no-such-team"},
         "team_id"),
        ("POST", "/key/update", {"key": orgs["rival_key"], "key_alias": "x"},
         {"key": "sk-rg-" + "x" * 43, "key_alias": "x"}, "key"),
        ("POST", "/key/delete", {"keys": [orgs["rival_key"]]}, {"keys": ["sk-rg-nope"]},
         "keys"),
    ):  # fmt: skip
        if isinstance(foreign, str):
            answers = [_refused(as_ann(method, path.format(t)), param, t)
                       for t in (foreign, missing)]  # fmt: skip
        else:
            answers = [_refused(as_ann(method, path, b), param, str(b))
                       for b in (foreign, missing)]  # fmt: skip
        assert answers[0] == answers[1], (path, answers)
    with client(srv.url, orgs["rival_key"]) as c:  # untouched
        assert c.chat.completions.create(model="a", messages=MSG).choices

    # The proxy admin's: other organizations, users, customers, the organization itself.
    for method, path, body in (
        ("POST", "/organization/new", {"organization_alias": "mine"}),
        ("DELETE", "/organization/delete", {"organization_ids": ["acme"]}),
        ("GET", "/organization/list", None),
        ("POST", "/user/new", {"user_id": "new-hire"}),
        ("POST", "/customer/new", {"user_id": "cust"}),
        ("POST", "/key/generate", {"user_id": "ann"}),  # a key outside its teams
    ):
        status, out = as_ann(method, path, body)
        assert status == 403 and out["error"]["type"] == "permission_error", (path, out)


def test_members_and_other_admins_are_not_org_admins(
    srv: ServerThread, orgs: dict[str, str]
) -> None:
    ok(srv.url, "POST", "/team/new", {"team_id": "acme-ml", "organization_id": "acme"})
    for who in ("bob", "rex"):  # acme's plain member; rival's admin
        as_who = partial(litellm_proxy.call, srv.url, key=orgs[who])
        for method, path, body, param in (
            ("GET", "/organization/info?organization_id=acme", None, "organization_id"),
            ("POST", "/team/new", {"organization_id": "acme"}, "organization_id"),
            ("POST", "/team/update", {"team_id": "acme-ml", "team_alias": "x"}, "team_id"),
            ("POST", "/key/generate", {"team_id": "acme-ml"}, "team_id"),
            ("PATCH", "/organization/member_update",
             {"organization_id": "acme", "user_id": who, "role": "org_admin"},
             "organization_id"),
        ):  # fmt: skip
            _refused(as_who(method, path, body), param, f"{who} {path}")
    info = ok(srv.url, "GET", "/organization/info?organization_id=acme")
    assert {m["user_id"]: m["user_role"] for m in info["members"]}["bob"] == "internal_user"

    # Demoted, the admin's key loses the role on its next request.
    ok(
        srv.url,
        "PATCH",
        "/organization/member_update",
        {"organization_id": "acme", "user_id": "ann", "role": "internal_user"},
    )
    try:
        _refused(litellm_proxy.call(srv.url, "GET", "/team/info?team_id=acme-ml",
                                    key=orgs["ann"]), "team_id", "demoted")  # fmt: skip
    finally:
        ok(
            srv.url,
            "PATCH",
            "/organization/member_update",
            {"organization_id": "acme", "user_id": "ann", "role": "org_admin"},
        )


def test_memberships_live_where_the_keys_do(
    srv: ServerThread, orgs: dict[str, str], request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["srv"] != "redis":
        pytest.skip("the in-memory key store has nothing outside the process to look at")
    import msgspec
    import redis

    url = request.getfixturevalue("redis_server").rsplit("/", 1)[0] + "/6"
    r = redis.Redis.from_url(url)
    try:
        (name,) = [k for k in r.scan_iter("*entities*")]
        stored = msgspec.json.decode(r.hget(name, "organization/acme"))  # type: ignore[arg-type]
    finally:
        r.close()
    assert {"user_id": "ann", "role": "org_admin"} in stored["members"]
