"""LiteLLM's team, user, customer and organization endpoints on our proxy, called as a
LiteLLM admin script calls them, with the openai and anthropic SDKs as the clients whose
requests the records govern: a team's budget covers its keys (and an organization's its
teams), a user's its keys outside teams, a customer's the requests naming it in ``user``;
blocked teams and customers are refused; bad input is a 400 naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import anthropic
import openai
import pytest

import litellm_proxy
from litellm_proxy import client
from routeguard.server.thread import ServerThread

MASTER = "sk-master-litellm-teams"
MSG: Any = [{"role": "user", "content": "hi"}]
call = partial(litellm_proxy.call, key=MASTER)
ok = partial(litellm_proxy.ok, key=MASTER)


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with litellm_proxy.litellm_proxy(
        MASTER, input_cost_per_token=1e-6, output_cost_per_token=2e-6
    ) as s:
        yield s


def test_team_lifecycle_in_litellm_shapes(srv: ServerThread) -> None:
    made = ok(srv.url, "POST", "/team/new", {
        "team_alias": "QA", "max_budget": 10, "budget_duration": "30d", "rpm_limit": 100,
        "tpm_limit": 100000, "models": ["a"], "metadata": {"cc": "123"},
        "members_with_roles": [{"role": "admin", "user_id": "ann"}], "soft_budget": 5,
    })  # fmt: skip
    team_id = made["team_id"]
    assert len(team_id) == 36  # made when not given (a UUID, as LiteLLM)
    assert (made["team_alias"], made["max_budget"], made["budget_duration"]) == ("QA", 10, "30d")
    assert (made["models"], made["metadata"], made["admins"]) == (["a"], {"cc": "123"}, ["ann"])
    assert made["spend"] == 0 and made["budget_reset_at"] is not None
    assert made["ignored_fields"] == ["soft_budget"]

    key = ok(srv.url, "POST", "/key/generate", {"team_id": team_id})["key"]
    with client(srv.url, key) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
    info = ok(srv.url, "GET", f"/team/info?team_id={team_id}")
    assert info["team_id"] == team_id and info["team_info"]["spend"] > 0
    assert [k["team_id"] for k in info["keys"]] == [team_id]
    assert "key" not in info["keys"][0] and "digest" not in json.dumps(info)
    assert info["team_memberships"] == [{"team_id": team_id, "user_id": "ann", "role": "admin",
                                         "spend": None, "litellm_budget_table": None}]  # fmt: skip

    updated = ok(srv.url, "POST", "/team/update", {"team_id": team_id, "max_budget": 20})
    assert updated["data"]["max_budget"] == 20 and updated["data"]["team_alias"] == "QA"
    added = ok(srv.url, "POST", "/team/member_add",
               {"team_id": team_id, "member": [{"role": "user", "user_id": "bob"}]})  # fmt: skip
    assert added["members"] == ["ann", "bob"] and added["updated_users"][0]["teams"] == [team_id]
    assert ok(srv.url, "GET", "/user/info?user_id=bob")["user_info"]["teams"] == [team_id]
    after = ok(srv.url, "POST", "/team/member_delete", {"team_id": team_id, "user_id": "bob"})
    assert after["members"] == ["ann"]
    assert ok(srv.url, "GET", "/user/info?user_id=bob")["user_info"]["teams"] == []
    assert team_id in [t["team_id"] for t in ok(srv.url, "GET", "/team/list")]

    deleted = ok(srv.url, "POST", "/team/delete", {"team_ids": [team_id]})
    assert deleted == {"deleted_teams": [team_id], "revoked_keys": 1}
    assert call(srv.url, "GET", f"/team/info?team_id={team_id}")[0] == 404
    with client(srv.url, key) as c, pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="a", messages=MSG)  # the team's keys went with it


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/team/new", {"max_budget": "ten"}, "max_budget"),
        ("/team/new", {"max_budget": -1}, "max_budget"),
        ("/team/new", {"budget_duration": "3 fortnights"}, "budget_duration"),
        ("/team/new", {"rpm_limit": 0}, "rpm_limit"),
        ("/team/new", {"models": "a"}, "models"),
        ("/team/new", {"team_id": "has space"}, "team_id"),
        ("/team/new", {"organization_id": "nope"}, "organization_id"),
        (
            "/team/new",
            {"members_with_roles": [{"user_id": "u", "rol": "admin"}]},
            "members_with_roles",
        ),
        ("/team/new", {"members_with_roles": [{"user_id": "u", "rpm_limit": 0}]}, "rpm_limit"),
        ("/team/new", {"team_member_budget": "5"}, "team_member_budget"),
        ("/team/update", {"max_budget": 1}, "team_id"),
        ("/team/delete", {"team_ids": "x"}, "team_ids"),
        ("/team/member_add", {"team_id": "t-missing", "member": {}}, "team_id"),
        ("/user/new", {"user_role": "emperor"}, "user_role"),
        ("/user/new", {"teams": ["no-such-team"]}, "teams"),
        ("/user/new", {"duration": "forever"}, "duration"),
        ("/customer/new", {"max_budget": 1}, "user_id"),
        ("/customer/new", {"user_id": "c", "allowed_model_region": "mars"}, "allowed_model_region"),
        ("/customer/block", {"user_ids": []}, "user_ids"),
        ("/organization/new", {"max_budget": 1}, "organization_alias"),
        ("/organization/delete", {}, "organization_ids"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    srv: ServerThread, path: str, body: dict[str, Any], param: str
) -> None:
    status, out = call(srv.url, "POST", path, body)
    assert status in (400, 404), out
    assert out["error"]["param"] == param and param in out["error"]["message"]
    assert out["error"]["type"] == "invalid_request_error"


def test_a_virtual_key_cannot_manage_teams(srv: ServerThread) -> None:
    key = ok(srv.url, "POST", "/key/generate", {})["key"]
    status, out = call(srv.url, "POST", "/team/new", {"team_alias": "x"}, key=key)
    assert status == 403 and out["error"]["type"] == "permission_error"
    assert call(srv.url, "GET", "/team/list", key=key)[0] == 403


def test_a_key_of_a_team_over_budget_is_refused(srv: ServerThread) -> None:
    ok(srv.url, "POST", "/team/new", {"team_id": "broke", "max_budget": 0})
    key = ok(srv.url, "POST", "/key/generate", {"team_id": "broke"})["key"]
    with client(srv.url, key) as c, pytest.raises(openai.UnprocessableEntityError) as caught:
        c.chat.completions.create(model="a", messages=MSG)
    # LiteLLM's refusal: 422, type budget_exceeded, the status as the code.
    assert (caught.value.type, caught.value.code) == ("budget_exceeded", "422")
    assert "team.broke" in caught.value.message
    a = anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0)
    with a, pytest.raises(anthropic.UnprocessableEntityError):  # the same, Anthropic-shaped
        a.messages.create(model="a", max_tokens=5, messages=MSG)
    # Raising the budget lets the key through at once.
    ok(srv.url, "POST", "/team/update", {"team_id": "broke", "max_budget": 100})
    with client(srv.url, key) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices


def test_a_blocked_team_is_refused_until_unblocked(srv: ServerThread) -> None:
    ok(srv.url, "POST", "/team/new", {"team_id": "paused"})
    key = ok(srv.url, "POST", "/key/generate", {"team_id": "paused", "max_budget": 5})["key"]
    assert ok(srv.url, "POST", "/team/block", {"team_id": "paused"})["blocked"] is True
    with client(srv.url, key) as c, pytest.raises(openai.PermissionDeniedError):
        c.chat.completions.create(model="a", messages=MSG)
    # The admin API still manages the blocked team's keys.
    more = ok(srv.url, "POST", "/key/generate", {"team_id": "paused", "max_budget": 1})
    assert ok(srv.url, "GET", f"/key/info?key={more['key']}")["info"]["team_id"] == "paused"
    ok(srv.url, "POST", "/team/unblock", {"team_id": "paused"})
    with client(srv.url, key) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices


def test_an_organization_budget_covers_its_teams(srv: ServerThread) -> None:
    org = ok(srv.url, "POST", "/organization/new",
             {"organization_alias": "Acme", "max_budget": 0, "models": ["a"]})  # fmt: skip
    org_id = org["organization_id"]
    assert org["litellm_budget_table"]["max_budget"] == 0 and org["teams"] == []
    status, out = call(srv.url, "POST", "/team/new",
                       {"organization_id": org_id, "models": ["b"]})  # fmt: skip
    assert status == 400 and out["error"]["param"] == "models"  # b is not among the org's
    team = ok(srv.url, "POST", "/team/new",
              {"team_id": "acme-search", "organization_id": org_id, "max_budget": 50})  # fmt: skip
    key = ok(srv.url, "POST", "/key/generate", {"team_id": team["team_id"]})["key"]
    with client(srv.url, key) as c, pytest.raises(openai.UnprocessableEntityError) as caught:
        c.chat.completions.create(model="a", messages=MSG)
    assert f"org.{org_id}" in caught.value.message  # the team is under the org's budget
    info = ok(srv.url, "GET", f"/organization/info?organization_id={org_id}")
    assert info["teams"] == [{"team_id": "acme-search", "team_alias": None}]
    status, out = call(srv.url, "DELETE", "/organization/delete", {"organization_ids": [org_id]})
    assert status == 400 and "acme-search" in out["error"]["message"]
    updated = ok(srv.url, "PATCH", "/organization/update",
                 {"organization_id": org_id, "max_budget": 100})  # fmt: skip
    assert updated["max_budget"] == 100
    with client(srv.url, key) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
    assert ok(srv.url, "GET", f"/organization/info?organization_id={org_id}")["spend"] > 0
    assert org_id in [o["organization_id"] for o in ok(srv.url, "GET", "/organization/list")]
    ok(srv.url, "POST", "/team/delete", {"team_ids": ["acme-search"]})
    gone = ok(srv.url, "DELETE", "/organization/delete", {"organization_ids": [org_id]})
    assert [o["organization_id"] for o in gone] == [org_id]


def test_a_team_moved_to_another_organization_is_charged_there(srv: ServerThread) -> None:
    for oid, budget in (("org-rich", 100), ("org-poor", 0)):
        ok(srv.url, "POST", "/organization/new",
           {"organization_id": oid, "organization_alias": oid, "max_budget": budget})  # fmt: skip
    ok(srv.url, "POST", "/team/new", {"team_id": "mover", "organization_id": "org-rich"})
    key = ok(srv.url, "POST", "/key/generate", {"team_id": "mover", "max_budget": 10})["key"]
    with client(srv.url, key) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
        ok(srv.url, "POST", "/team/update", {"team_id": "mover", "organization_id": "org-poor"})
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            c.chat.completions.create(model="a", messages=MSG)
        assert "org.org-poor" in caught.value.message


def test_user_new_returns_a_key_charged_to_the_user(srv: ServerThread) -> None:
    made = ok(srv.url, "POST", "/user/new", {
        "user_id": "carol", "user_email": "carol@example.com", "user_role": "internal_user",
        "max_budget": 0, "models": ["a"], "key_alias": "carol-laptop",
    })  # fmt: skip
    assert made["key"].startswith("sk-rg-") and made["user_id"] == "carol"
    assert (made["key_alias"], made["models"], made["teams"]) == ("carol-laptop", ["a"], [])
    with client(srv.url, made["key"]) as c:
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            c.chat.completions.create(model="a", messages=MSG)
        assert "user.carol" in caught.value.message
        ok(srv.url, "POST", "/user/update", {"user_email": "carol@example.com", "max_budget": 5})
        assert c.chat.completions.create(model="a", messages=MSG).choices
        with pytest.raises(openai.NotFoundError):  # the key has the user's models
            c.chat.completions.create(model="b", messages=MSG)
    info = ok(srv.url, "GET", "/user/info?user_id=carol")
    assert info["user_info"]["spend"] > 0 and info["user_info"]["max_budget"] == 5
    assert [k["key_alias"] for k in info["keys"]] == ["carol-laptop"]
    assert call(srv.url, "POST", "/user/new", {"user_id": "carol"})[0] == 400  # exists
    assert ok(srv.url, "POST", "/user/delete", {"user_ids": ["carol"]})["deleted_users"]
    with client(srv.url, made["key"]) as c, pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="a", messages=MSG)  # its keys were revoked


def test_a_team_key_is_not_held_to_its_users_budget(srv: ServerThread) -> None:
    ok(srv.url, "POST", "/team/new", {"team_id": "t-user", "max_budget": 50})
    ok(srv.url, "POST", "/user/new",
       {"user_id": "dave", "max_budget": 0, "auto_create_key": False})  # fmt: skip
    team_key = ok(srv.url, "POST", "/key/generate", {"team_id": "t-user", "user_id": "dave"})
    own_key = ok(srv.url, "POST", "/key/generate", {"user_id": "dave"})
    with client(srv.url, team_key["key"]) as c:  # as in LiteLLM: the team's budget applies
        assert c.chat.completions.create(model="a", messages=MSG).choices
    with client(srv.url, own_key["key"]) as c, pytest.raises(openai.UnprocessableEntityError):
        c.chat.completions.create(model="a", messages=MSG)


def test_customers_budgets_and_blocks(srv: ServerThread) -> None:
    made = ok(srv.url, "POST", "/customer/new", {
        "user_id": "acme:user 7", "max_budget": 100, "budget_duration": "1d",
        "alias": "Seven",
    })  # fmt: skip
    assert made["litellm_budget_table"]["max_budget"] == 100 and made["blocked"] is False
    ok(srv.url, "POST", "/team/new", {"team_id": "cust-team", "max_budget": 100})
    key = ok(srv.url, "POST", "/key/generate", {"team_id": "cust-team"})["key"]
    with client(srv.url, key) as c:
        assert c.chat.completions.create(model="a", messages=MSG, user="acme:user 7").choices
        info = ok(srv.url, "GET", "/customer/info?end_user_id=acme%3Auser%207")
        assert info["spend"] > 0 and info["reserved"] == 0  # both holds settled
        team = ok(srv.url, "GET", "/team/info?team_id=cust-team")["team_info"]
        assert team["spend"] == pytest.approx(info["spend"])  # charged to both
        ok(srv.url, "POST", "/customer/update", {"user_id": "acme:user 7", "max_budget": 0})
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            c.chat.completions.create(model="a", messages=MSG, user="acme:user 7")
        assert (caught.value.type, caught.value.code) == ("budget_exceeded", "422")
        assert c.chat.completions.create(model="a", messages=MSG, user="someone else").choices
        assert ok(srv.url, "GET", "/customer/info?end_user_id=acme%3Auser%207")["reserved"] == 0

        blocked = ok(srv.url, "POST", "/customer/block", {"user_ids": ["mallory"]})
        assert [u["user_id"] for u in blocked["blocked_users"]] == ["mallory"]
        with pytest.raises(openai.PermissionDeniedError) as denied:
            c.chat.completions.create(model="a", messages=MSG, user="mallory")
        assert "mallory" in denied.value.message
        with pytest.raises(openai.PermissionDeniedError):
            c.embeddings.create(model="a", input="x", user="mallory")
    a = anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0)
    with a, pytest.raises(anthropic.PermissionDeniedError):  # Anthropic-shaped
        a.messages.create(model="a", max_tokens=5, messages=MSG, metadata={"user_id": "mallory"})
    assert ok(srv.url, "POST", "/end_user/unblock", {"user_ids": ["mallory"]}) == {
        "blocked_users": []
    }
    with client(srv.url, key) as c:
        assert c.chat.completions.create(model="a", messages=MSG, user="mallory").choices
    listed = [c["user_id"] for c in ok(srv.url, "GET", "/customer/list")]
    assert {"acme:user 7", "mallory"} <= set(listed)
    out = ok(srv.url, "POST", "/customer/delete", {"user_ids": ["mallory"]})
    assert out["deleted_customers"] == 1
    assert call(srv.url, "GET", "/customer/info?end_user_id=mallory")[0] == 404


def test_a_teams_models_scope_its_keys(srv: ServerThread) -> None:
    ok(srv.url, "POST", "/team/new", {"team_id": "scoped", "models": ["a"]})
    loose = ok(srv.url, "POST", "/key/generate", {"team_id": "scoped"})["key"]
    wide = ok(srv.url, "POST", "/key/generate", {"team_id": "scoped", "models": ["a", "b"]})
    for key in (loose, wide["key"]):
        with client(srv.url, key) as c:
            assert [m.id for m in c.models.list()] == ["a"]
            assert c.chat.completions.create(model="a", messages=MSG).choices
            with pytest.raises(openai.NotFoundError):  # the team does not allow b
                c.chat.completions.create(model="b", messages=MSG)
    ok(srv.url, "POST", "/team/update", {"team_id": "scoped", "models": ["a", "b"]})
    with client(srv.url, loose) as c:
        assert c.chat.completions.create(model="b", messages=MSG).choices


def test_a_blocked_customer_is_refused_on_every_endpoint(srv: ServerThread) -> None:
    ok(srv.url, "POST", "/customer/block", {"user_ids": ["trudy"]})
    key = ok(srv.url, "POST", "/key/generate", {})["key"]
    with client(srv.url, key) as c:
        with pytest.raises(openai.PermissionDeniedError):
            c.responses.create(model="a", input="hi", user="trudy")
        with pytest.raises(openai.PermissionDeniedError):
            c.completions.create(model="a", prompt="hi", user="trudy")
        with pytest.raises(openai.PermissionDeniedError):
            c.chat.completions.create(model="a", messages=MSG, user="trudy", stream=True)
        assert c.responses.create(model="a", input="hi", user="not-trudy").output_text


def test_a_team_admin_manages_its_own_team_only(srv: ServerThread) -> None:
    ok(srv.url, "POST", "/team/new", {"team_id": "self-serve", "max_budget": 5,
       "members_with_roles": [{"role": "admin", "user_id": "ada"},
                              {"role": "user", "user_id": "ben"}]})  # fmt: skip
    ok(srv.url, "POST", "/team/new", {"team_id": "elsewhere"})
    ada = ok(srv.url, "POST", "/key/generate", {"user_id": "ada"})["key"]
    ben = ok(srv.url, "POST", "/key/generate", {"user_id": "ben"})["key"]

    status, info = call(srv.url, "GET", "/team/info?team_id=self-serve", key=ada)
    assert status == 200 and info["team_info"]["admins"] == ["ada"]
    status, added = call(srv.url, "POST", "/team/member_add",
                         {"team_id": "self-serve", "member": {"role": "user", "user_id": "cy"}},
                         key=ada)  # fmt: skip
    assert status == 200 and added["members"] == ["ada", "ben", "cy"]
    status, made = call(srv.url, "POST", "/key/generate",
                        {"team_id": "self-serve", "user_id": "cy"}, key=ada)  # fmt: skip
    assert status == 200 and made["team_id"] == "self-serve"
    with client(srv.url, made["key"]) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices

    refused = [
        ("GET", "/team/info?team_id=elsewhere", None, ada),  # another team
        ("POST", "/key/generate", {"team_id": "elsewhere"}, ada),
        ("POST", "/key/generate", {"team_id": "self-serve", "user_id": "zoe"}, ada),  # no member
        ("POST", "/team/update", {"team_id": "self-serve", "max_budget": 1e6}, ada),  # budgets
        ("POST", "/team/delete", {"team_ids": ["self-serve"]}, ada),
        ("POST", "/key/update", {"key": made["key"], "max_budget": 1e6}, ada),
        ("GET", "/team/info?team_id=self-serve", None, ben),  # a member, not an admin
        ("POST", "/team/member_add",
         {"team_id": "self-serve", "member": {"role": "admin", "user_id": "ben"}}, ben),
        ("POST", "/key/generate", {"team_id": "self-serve"}, ben),
    ]  # fmt: skip
    for method, path, body, key in refused:
        status, out = call(srv.url, method, path, body, key=key)
        assert status == 403 and out["error"]["type"] == "permission_error", (path, out)


def _refused(status: int, out: Any, what: str) -> None:
    """A 403 in LiteLLM's (OpenAI's) error shape."""
    assert status == 403, (what, out)
    assert set(out["error"]) == {"message", "type", "param", "code"}, (what, out)
    assert out["error"]["type"] == "permission_error", (what, out)


def test_a_team_admin_updates_its_team_and_its_keys_within_limits(srv: ServerThread) -> None:
    crew = [{"role": "admin", "user_id": "ann"}, {"role": "user", "user_id": "bo"}]
    ok(srv.url, "POST", "/team/new", {"team_id": "ops", "max_budget": 5, "models": ["a", "b"],
       "budget_duration": "30d", "members_with_roles": crew})  # fmt: skip
    ok(srv.url, "POST", "/team/new", {"team_id": "rivals",
       "members_with_roles": [{"role": "admin", "user_id": "rex"}]})  # fmt: skip
    ann, bo, rex = (ok(srv.url, "POST", "/key/generate", {"user_id": u})["key"]
                    for u in ("ann", "bo", "rex"))  # fmt: skip

    # What a team admin may do: alias, limits, models narrowed, budget kept or lowered.
    change = {"team_id": "ops", "team_alias": "Ops", "rpm_limit": 50, "max_budget": 3,
              "models": ["a"], "budget_duration": "30d"}  # fmt: skip
    status, out = call(srv.url, "POST", "/team/update", change, key=ann)
    assert status == 200, out
    data = out["data"]
    assert (data["team_alias"], data["rpm_limit"], data["max_budget"]) == ("Ops", 50, 3)
    assert data["models"] == ["a"] and data["budget_duration"] == "30d"
    refused_updates = [
        {"max_budget": 4},  # above the 3 it now has
        {"max_budget": None},  # no cap at all
        {"models": ["a", "b"]},  # wider than ["a"]
        {"models": []},  # every model
        {"budget_duration": "1d"},
        {"blocked": True},
        {"organization_id": "someone-else"},
    ]
    for body in refused_updates:
        status, out = call(srv.url, "POST", "/team/update", {"team_id": "ops", **body}, key=ann)
        _refused(status, out, str(body))
        assert out["error"]["param"] == next(iter(body))
    assert ok(srv.url, "GET", "/team/info?team_id=ops")["team_info"]["max_budget"] == 3

    # Members: promoted, demoted, added and removed by the admin.
    status, out = call(srv.url, "POST", "/team/member_update",
                       {"team_id": "ops", "user_id": "bo", "role": "admin",
                        "max_budget_in_team": 1}, key=ann)  # fmt: skip
    assert status == 200 and out["role"] == "admin", out
    assert out["max_budget_in_team"] == 1 and out["ignored_fields"] == []
    assert ok(srv.url, "GET", "/team/info?team_id=ops")["team_info"]["admins"] == ["ann", "bo"]
    status, out = call(srv.url, "POST", "/team/member_update",
                       {"team_id": "ops", "user_id": "bo", "role": "user"}, key=ann)  # fmt: skip
    assert status == 200 and out["role"] == "user", out
    status, out = call(srv.url, "POST", "/team/member_update",
                       {"team_id": "ops", "user_id": "bo", "role": "owner"}, key=ann)  # fmt: skip
    assert status == 400 and out["error"]["param"] == "role"
    cy = {"team_id": "ops", "member": {"role": "user", "user_id": "cy"}}
    status, _ = call(srv.url, "POST", "/team/member_add", cy, key=ann)
    assert status == 200
    status, _ = call(srv.url, "POST", "/team/member_delete",
                     {"team_id": "ops", "user_id": "cy"}, key=ann)  # fmt: skip
    assert status == 200

    # Keys: the team's are the admin's to delete, no other.
    ops_key = ok(srv.url, "POST", "/key/generate", {"team_id": "ops", "user_id": "bo"})["key"]
    rival_key = ok(srv.url, "POST", "/key/generate", {"team_id": "rivals"})["key"]
    _refused(*call(srv.url, "POST", "/key/delete", {"keys": [ops_key, rival_key]}, key=ann),
             "a key of another team")  # fmt: skip
    _refused(*call(srv.url, "POST", "/key/delete", {"keys": ["sk-rg-nope"]}, key=ann), "none")
    for bad in ([], "x", None):  # nothing named: nothing a team admin may delete
        _refused(*call(srv.url, "POST", "/key/delete", {"keys": bad}, key=ann), repr(bad))
    assert call(srv.url, "POST", "/key/delete", {"keys": ["sk-rg-nope"]})[0] == 404  # master
    with client(srv.url, ops_key) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices  # not yet deleted
    status, out = call(srv.url, "POST", "/key/delete", {"keys": [ops_key]}, key=ann)
    assert status == 200 and out == {"deleted_keys": [ops_key]}
    with client(srv.url, ops_key) as c, pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="a", messages=MSG)
    with client(srv.url, rival_key) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices

    # A plain member, and another team's admin, may do none of it.
    bo_key = ok(srv.url, "POST", "/key/generate", {"team_id": "ops", "user_id": "bo"})["key"]
    for key, who in ((bo, "a member"), (rex, "another team's admin")):
        for path, body in (
            ("/team/update", {"team_id": "ops", "team_alias": "mine"}),
            ("/team/member_update", {"team_id": "ops", "user_id": "ann", "role": "user"}),
            ("/team/member_add", {"team_id": "ops", "member": {"user_id": "eve"}}),
            ("/team/member_delete", {"team_id": "ops", "user_id": "ann"}),
            ("/key/delete", {"keys": [bo_key]}),
        ):
            _refused(*call(srv.url, "POST", path, body, key=key), f"{who} {path}")
    info = ok(srv.url, "GET", "/team/info?team_id=ops")
    assert info["team_info"]["team_alias"] == "Ops" and info["team_info"]["admins"] == ["ann"]
    with client(srv.url, bo_key) as c:  # not deleted by either
        assert c.chat.completions.create(model="a", messages=MSG).choices


def test_a_team_admin_updates_its_teams_keys_only(srv: ServerThread) -> None:
    crew = [{"role": "admin", "user_id": "kay"}, {"role": "user", "user_id": "lou"}]
    ok(srv.url, "POST", "/team/new", {"team_id": "keyed", "max_budget": 4, "rpm_limit": 100,
       "models": ["a", "b"], "members_with_roles": crew})  # fmt: skip
    ok(srv.url, "POST", "/team/new", {"team_id": "keyed-rivals", "max_budget": 50,
       "members_with_roles": [{"role": "admin", "user_id": "max"}]})  # fmt: skip
    kay, lou, rival_admin = (ok(srv.url, "POST", "/key/generate", {"user_id": u})["key"]
                             for u in ("kay", "lou", "max"))  # fmt: skip
    team_key = ok(srv.url, "POST", "/key/generate", {"team_id": "keyed", "user_id": "lou"})
    rival_key = ok(srv.url, "POST", "/key/generate", {"team_id": "keyed-rivals"})["key"]
    own_key = ok(srv.url, "POST", "/key/generate", {"user_id": "kay"})["key"]  # no team

    # The admin changes what LiteLLM lets it: alias, budget within the team's, models
    # narrowed to the team's, limits, expiry, metadata; by the key or by its id.
    change = {"key": team_key["key"], "key_alias": "lou-ci", "max_budget": 2,
              "models": ["a"], "rpm_limit": 10, "duration": "7d",
              "metadata": {"ci": True}, "team_id": "keyed"}  # fmt: skip
    status, out = call(srv.url, "POST", "/key/update", change, key=kay)
    assert status == 200, out
    assert (out["key_alias"], out["max_budget"], out["models"], out["rpm_limit"]) == (
        "lou-ci", 2, ["a"], 10)  # fmt: skip
    assert out["team_id"] == "keyed" and out["expires"] is not None
    status, out = call(srv.url, "POST", "/key/update",
                       {"key": team_key["key_id"], "max_budget": 4}, key=kay)  # fmt: skip
    assert status == 200 and out["max_budget"] == 4, out
    with client(srv.url, team_key["key"]) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
        with pytest.raises(openai.NotFoundError):  # narrowed to "a" by its admin
            c.chat.completions.create(model="b", messages=MSG)

    # Beyond the team's: refused, naming the field, and nothing changed.
    for body in (
        {"max_budget": 4.01},  # above the team's 4
        {"rpm_limit": 101},
        {"models": ["a", "c"]},
        {"team_id": "keyed-rivals"},  # moved out of the team
        {"user_id": "stranger"},  # owned by a non-member
    ):
        status, out = call(srv.url, "POST", "/key/update",
                           {"key": team_key["key"], **body}, key=kay)  # fmt: skip
        _refused(status, out, str(body))
        assert out["error"]["param"] == next(iter(body)), out
    info = ok(srv.url, "GET", f"/key/info?key={team_key['key']}")["info"]
    assert (info["max_budget"], info["rpm_limit"], info["team_id"]) == (4, 10, "keyed")

    # Not the admin's key: a member, another team's admin, a key outside the team, a key
    # without a team, and a key that does not exist are all refused the same way.
    nope = "sk-rg-" + "x" * 43
    for key, name, who in (
        (lou, team_key["key"], "a plain member"),
        (rival_admin, team_key["key"], "another team's admin"),
        (kay, rival_key, "a key of another team"),
        (kay, own_key, "a key of no team"),
        (kay, nope, "no such key"),
        (kay, "key_0000000000000000", "no such key id"),
    ):
        status, out = call(srv.url, "POST", "/key/update",
                           {"key": name, "key_alias": "taken"}, key=key)  # fmt: skip
        _refused(status, out, who)
    refusals = {call(srv.url, "POST", "/key/update", {"key": name, "key_alias": "x"},
                     key=kay)[1]["error"]["message"] for name in (rival_key, nope)}  # fmt: skip
    assert len(refusals) == 1, refusals  # no probing: the same answer
    assert call(srv.url, "POST", "/key/update", {"key": nope, "key_alias": "x"})[0] == 404
    assert ok(srv.url, "GET", f"/key/info?key={rival_key}")["info"]["key_alias"] is None


def test_a_members_budget_within_its_team(srv: ServerThread) -> None:
    crew = [{"role": "admin", "user_id": "pia"}, {"role": "user", "user_id": "quin"}]
    ok(srv.url, "POST", "/team/new", {"team_id": "split", "max_budget": 100,
       "members_with_roles": crew})  # fmt: skip
    pia = ok(srv.url, "POST", "/key/generate", {"user_id": "pia"})["key"]
    quin_key = ok(srv.url, "POST", "/key/generate", {"team_id": "split", "user_id": "quin"})
    pia_team = ok(srv.url, "POST", "/key/generate", {"team_id": "split", "user_id": "pia"})

    # The team's admin sets quin's budget in the team; quin's team key is held to it.
    status, out = call(srv.url, "POST", "/team/member_update",
                       {"team_id": "split", "user_id": "quin", "max_budget_in_team": 0},
                       key=pia)  # fmt: skip
    assert status == 200 and out["max_budget_in_team"] == 0 and out["role"] == "user", out
    with client(srv.url, quin_key["key"]) as c:
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            c.chat.completions.create(model="a", messages=MSG)
        assert caught.value.type == "budget_exceeded" and "split" in caught.value.message
    with client(srv.url, pia_team["key"]) as c:  # another member: the team's budget only
        assert c.chat.completions.create(model="a", messages=MSG).choices
    info = ok(srv.url, "GET", "/team/info?team_id=split")
    shown = {m["user_id"]: m for m in info["team_memberships"]}
    assert shown["quin"]["litellm_budget_table"]["max_budget"] == 0
    assert shown["quin"]["spend"] == 0 and shown["pia"]["litellm_budget_table"] is None
    roles = {m["user_id"]: m["max_budget_in_team"] for m in info["team_info"]["members_with_roles"]}
    assert roles == {"pia": None, "quin": 0}

    # Raised: served, and the spend shows on the member and on the team.
    ok(srv.url, "POST", "/team/member_update",
       {"team_id": "split", "user_id": "quin", "max_budget_in_team": 5})  # fmt: skip
    with client(srv.url, quin_key["key"]) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
    info = ok(srv.url, "GET", "/team/info?team_id=split")
    quin_spent = {m["user_id"]: m["spend"] for m in info["team_memberships"]}["quin"]
    assert quin_spent > 0 and info["team_info"]["spend"] >= quin_spent

    # member_add's max_budget_in_team is the added members'; bad amounts are a 400.
    added = ok(srv.url, "POST", "/team/member_add", {"team_id": "split", "max_budget_in_team": 0,
               "member": [{"role": "user", "user_id": "rae"}]})  # fmt: skip
    rae = {m["user_id"]: m for m in added["members_with_roles"]}["rae"]
    assert rae["max_budget_in_team"] == 0
    for bad in (-1, "5", True):
        status, out = call(srv.url, "POST", "/team/member_update",
                           {"team_id": "split", "user_id": "quin", "max_budget_in_team": bad},
                           key=MASTER)  # fmt: skip
        assert status == 400 and out["error"]["param"] == "max_budget_in_team", (bad, out)
    # Cleared (null): only the team's budget again.
    out = ok(srv.url, "POST", "/team/member_update",
             {"team_id": "split", "user_id": "rae", "max_budget_in_team": None})  # fmt: skip
    assert out["max_budget_in_team"] is None
    rae_key = ok(srv.url, "POST", "/key/generate", {"team_id": "split", "user_id": "rae"})["key"]
    with client(srv.url, rae_key) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices


def test_a_members_own_limits_and_the_teams_defaults(srv: ServerThread) -> None:
    crew = [{"role": "admin", "user_id": "uma"}, {"role": "user", "user_id": "vic"},
            {"role": "user", "user_id": "wes"}]  # fmt: skip
    made = ok(srv.url, "POST", "/team/new", {"team_id": "quota", "max_budget": 100,
              "rpm_limit": 100, "budget_duration": "30d", "members_with_roles": crew,
              "team_member_budget": 0, "team_member_budget_duration": "1d"})  # fmt: skip
    assert made["team_member_budget_table"] == {
        "max_budget": 0,
        "budget_duration": "1d",
        "rpm_limit": None,
        "tpm_limit": None,
    }
    uma = ok(srv.url, "POST", "/key/generate", {"user_id": "uma"})["key"]
    vic, wes = (ok(srv.url, "POST", "/key/generate", {"team_id": "quota", "user_id": u})["key"]
                for u in ("vic", "wes"))  # fmt: skip
    shared = ok(srv.url, "POST", "/key/generate", {"team_id": "quota"})["key"]  # no user

    # The team's default budget holds every member (LiteLLM's 422 under its config) while
    # the team has room: its key without a user is served.
    with client(srv.url, vic) as c:
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            c.chat.completions.create(model="a", messages=MSG)
        assert caught.value.type == "budget_exceeded" and "quota" in caught.value.message
    with client(srv.url, shared) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices

    # A member's own values win over the team's defaults; its own RPM refuses with a 429
    # in OpenAI's shape while the team (100 a minute) and another member have room.
    status, out = call(srv.url, "POST", "/team/member_update", {"team_id": "quota",
                       "user_id": "vic", "max_budget_in_team": 5, "rpm_limit": 1,
                       "tpm_limit": 100000, "budget_duration": "7d"}, key=uma)  # fmt: skip
    assert status == 200, out
    assert (out["max_budget_in_team"], out["rpm_limit"], out["budget_duration"]) == (5, 1, "7d")
    with client(srv.url, vic) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
        with pytest.raises(openai.RateLimitError) as limited:
            c.chat.completions.create(model="a", messages=MSG)
        body: Any = limited.value.body
        assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
    with client(srv.url, shared) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices
    ok(srv.url, "POST", "/team/update", {"team_id": "quota", "team_member_budget": 5})
    with client(srv.url, wes) as c:  # the default raised: wes is served too
        assert c.chat.completions.create(model="a", messages=MSG).choices
    info = ok(srv.url, "GET", "/team/info?team_id=quota")
    shown = {m["user_id"]: m for m in info["team_memberships"]}
    assert shown["vic"]["litellm_budget_table"] == {
        "max_budget": 5,
        "budget_duration": "7d",
        "rpm_limit": 1,
        "tpm_limit": 100000,
    }
    assert shown["wes"]["litellm_budget_table"]["budget_duration"] == "1d"
    assert shown["wes"]["spend"] > 0 and shown["vic"]["spend"] > 0

    # Cleared, vic's own values give way to the team's defaults again.
    out = ok(srv.url, "POST", "/team/member_update", {"team_id": "quota", "user_id": "vic",
             "rpm_limit": None, "budget_duration": None})  # fmt: skip
    assert (out["rpm_limit"], out["budget_duration"], out["max_budget_in_team"]) == (None, None, 5)
    with client(srv.url, vic) as c:
        assert c.chat.completions.create(model="a", messages=MSG).choices

    # A team admin sets the defaults (they only narrow the team's budget); bad values: 400.
    status, out = call(srv.url, "POST", "/team/update", {"team_id": "quota",
                       "team_member_rpm_limit": 50}, key=uma)  # fmt: skip
    assert status == 200 and out["data"]["team_member_budget_table"]["rpm_limit"] == 50, out
    for path, body, param in (
        ("/team/update", {"team_member_budget": -1}, "team_member_budget"),
        ("/team/update", {"team_member_rpm_limit": 0}, "team_member_rpm_limit"),
        ("/team/update", {"team_member_budget_duration": "soon"}, "team_member_budget_duration"),
        ("/team/member_update", {"user_id": "vic", "rpm_limit": 0}, "rpm_limit"),
        ("/team/member_update", {"user_id": "vic", "tpm_limit": "5"}, "tpm_limit"),
        ("/team/member_update", {"user_id": "vic", "budget_duration": "soon"}, "budget_duration"),
        ("/team/member_add", {"member": {"user_id": "xi", "rpm_limit": -3}}, "rpm_limit"),
    ):
        status, out = call(srv.url, "POST", path, {"team_id": "quota", **body})
        assert status == 400 and out["error"]["param"] == param, (path, body, out)
