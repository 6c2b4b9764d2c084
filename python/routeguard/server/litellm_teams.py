"""LiteLLM's team endpoints over the key store's directory (organizations are
:mod:`.litellm_orgs`').

``POST /team/new``, ``GET /team/info?team_id=``, ``POST /team/update``, ``POST
/team/delete`` (``team_ids``; the team's keys are revoked, as LiteLLM deletes them), ``GET
/team/list``, ``POST /team/member_add`` / ``member_delete`` / ``member_update``, ``POST
/team/block`` / ``unblock``. A team's ``max_budget``/``budget_duration``/``rpm_limit``/
``tpm_limit`` are its budget account's, under its organization's; every key with its
``team_id`` is charged there. Who may call what is :mod:`.litellm_entities`'."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import msgspec

from routeguard.budget.accounts import micros_to_usd
from routeguard.budget.directory import (
    Member,
    Organization,
    Team,
    User,
    check_id,
    member_limits,
)
from routeguard.errors import InvalidRequest
from routeguard.server.litellm_keys import key_info
from routeguard.server.litellm_records import (
    Handler,
    absent,
    build,
    changed,
    check_member,
    create,
    fields,
    iso,
    member_budget,
    members,
    named_member,
    query_id,
    records,
    save,
    spend,
    update,
)

if TYPE_CHECKING:
    from routeguard.gateway import Gateway


async def team_json(gateway: Gateway, team: Team) -> dict[str, Any]:
    """A team as LiteLLM shows it (``LiteLLM_TeamTable``), with its spend."""
    return {
        "team_id": team.team_id,
        "team_alias": team.team_alias,
        "organization_id": team.organization_id,
        "admins": [m.user_id or m.user_email for m in team.members_with_roles if m.role == "admin"],
        "members": [m.user_id or m.user_email for m in team.members_with_roles],
        "members_with_roles": [
            {
                "user_id": m.user_id,
                "user_email": m.user_email,
                "role": m.role,
                "max_budget_in_team": m.max_budget_in_team,
                "budget_duration": m.budget_duration,
                "rpm_limit": m.rpm_limit,
                "tpm_limit": m.tpm_limit,
            }
            for m in team.members_with_roles
        ],
        "metadata": team.metadata,
        "tpm_limit": team.tpm_limit,
        "rpm_limit": team.rpm_limit,
        "max_budget": team.max_budget,
        "budget_duration": team.budget_duration,
        "models": team.models,
        "blocked": team.blocked,
        "team_member_budget_table": _member_defaults(team),
        "created_at": iso(team.created_at),
        "updated_at": iso(team.updated_at),
        **await spend(gateway, team),
    }


def _member_defaults(team: Team) -> dict[str, Any] | None:
    """LiteLLM's ``team_member_budget_table``: the team's defaults for its members' own
    accounts (None when it sets none)."""
    table = {
        "max_budget": team.team_member_budget,
        "budget_duration": team.team_member_budget_duration,
        "rpm_limit": team.team_member_rpm_limit,
        "tpm_limit": team.team_member_tpm_limit,
    }
    return None if all(v is None for v in table.values()) else table  # fmt: skip


def _team_id(data: dict[str, Any]) -> str:
    return check_id(data.get("team_id"), "team_id")


def _check_org(gateway: Gateway, team_values: dict[str, Any]) -> None:
    """The team's organization exists, and the team's models are among the org's."""
    org_id = team_values.get("organization_id")
    if org_id is None:
        return
    org = gateway.directory.get("organization", check_id(org_id, "organization_id"))
    if not isinstance(org, Organization):
        raise InvalidRequest(
            f"organization_id: no organization '{org_id}' (create it with /organization/new)",
            param="organization_id",
        )
    outside = [m for m in team_values.get("models") or [] if org.models and m not in org.models]
    if outside:
        raise InvalidRequest(
            f"models: {', '.join(outside)} not among organization '{org_id}''s models",
            param="models",
        )


async def team_new(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /team/new``: a team (its id made when not given); 400 if it exists."""
    team_id = check_id(data["team_id"], "team_id") if data.get("team_id") else str(uuid.uuid4())
    values, ignored = fields(data, Team, skip=frozenset({"team_id", "members"}))
    if "members" in data and "members_with_roles" not in values:
        values["members_with_roles"] = members(data["members"], "members")
    absent(gateway, Team, team_id)
    if team_id in gateway.budget.configured_accounts:
        raise InvalidRequest(
            f"team_id: '{team_id}' is a budget account of the config file", param="team_id"
        )
    _check_org(gateway, values)
    team = create(gateway, Team, team_id, values)
    _join_users(gateway, team.team_id, team.members_with_roles)
    return {**await team_json(gateway, team), "ignored_fields": ignored}


async def team_info(gateway: Gateway, query: dict[str, Any]) -> Any:
    """``GET /team/info?team_id=``: the team, its keys (never their secrets), its members."""
    team_id = query_id(query, "team_id", "/team/info", "team")
    team = gateway.directory.require("team", team_id, Team)
    keys = [key_info(r) for r in gateway.keys.list() if r.spec.team == team_id]
    return {
        "team_id": team_id,
        "team_info": await team_json(gateway, team),
        "keys": keys,
        "team_memberships": [await _membership(gateway, team, m) for m in team.members_with_roles],
    }


async def _membership(gateway: Gateway, team: Team, m: Member) -> dict[str, Any]:
    """A member as LiteLLM's ``team_memberships`` shows it: its own limits within the team
    (its values, else the team's ``team_member_*``) and what it spent there this period
    (None: no limits of its own in the team, so not counted apart)."""
    account = gateway.budget.member(team, m.user_id)
    spent = (
        None
        if account is None
        else float(micros_to_usd(await gateway.budget.backend.spent(account)))
    )
    limit, duration, rpm, tpm = member_limits(team, m)
    table = None if account is None else {
        "max_budget": limit, "budget_duration": duration, "rpm_limit": rpm,
        "tpm_limit": tpm}  # fmt: skip
    return {"team_id": team.team_id, "user_id": m.user_id, "role": m.role,
            "spend": spent, "litellm_budget_table": table}  # fmt: skip


async def team_update(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /team/update``: change the fields given (members: ``/team/member_add``)."""
    team = gateway.directory.require("team", _team_id(data), Team)

    def check(team: Team, values: dict[str, Any]) -> None:
        _check_org(gateway, {"models": team.models, "organization_id": team.organization_id,
                             **values})  # fmt: skip

    new, ignored = update(gateway, team, data, skip=frozenset({"members_with_roles"}),
                          check=check)  # fmt: skip
    return {"team_id": new.team_id, "data": await team_json(gateway, new),
            "ignored_fields": ignored}  # fmt: skip


async def team_delete(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /team/delete``: delete teams (all found first) and revoke their keys."""
    ids = data.get("team_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(t, str) for t in ids):
        raise InvalidRequest("team_ids: a list of team ids is required", param="team_ids")
    teams = [gateway.directory.require("team", t, Team) for t in ids]
    revoked = 0
    for team in teams:
        for rec in gateway.keys.list():
            if rec.spec.team == team.team_id and not rec.revoked:
                gateway.keys.revoke(rec.key_id)
                revoked += 1
        gateway.directory.delete("team", team.team_id)
        _leave_users(gateway, team.team_id, team.members_with_roles)
    return {"deleted_teams": ids, "revoked_keys": revoked}


async def team_list(gateway: Gateway, query: dict[str, Any]) -> Any:
    """``GET /team/list`` (``?organization_id=``, ``?user_id=`` filter it)."""
    org, user = query.get("organization_id"), query.get("user_id")
    out = []
    for team in records(gateway, Team):
        if org and team.organization_id != org:
            continue
        if user and all(m.user_id != user for m in team.members_with_roles):
            continue
        out.append(await team_json(gateway, team))
    return out


async def member_add(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /team/member_add``: add members (one or a list); unknown users are created."""
    team = gateway.directory.require("team", _team_id(data), Team)
    if "member" not in data:
        raise InvalidRequest("member: a member ({role, user_id}) is required", param="member")
    added = members(data["member"], "member")
    if data.get("max_budget_in_team") is not None:  # LiteLLM's: for every member added
        budget = member_budget(data["max_budget_in_team"])
        added = [msgspec.structs.replace(m, max_budget_in_team=budget) for m in added]
    kept = [m for m in team.members_with_roles if (m.user_id, m.user_email) not in
            {(a.user_id, a.user_email) for a in added}]  # fmt: skip
    new = save(gateway, team, {"members_with_roles": kept + added})
    users = _join_users(gateway, team.team_id, added)
    return {
        **await team_json(gateway, new),
        "updated_users": users,
        "updated_team_memberships": [
            {"team_id": team.team_id, "user_id": m.user_id, "role": m.role} for m in added
        ],
    }


async def member_delete(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /team/member_delete``: remove the member named by ``user_id`` or ``user_email``."""
    team = gateway.directory.require("team", _team_id(data), Team)
    user_id, email = data.get("user_id"), data.get("user_email")
    if not user_id and not email:
        raise InvalidRequest("user_id or user_email is required", param="user_id")
    gone = [m for m in team.members_with_roles
            if (user_id and m.user_id == user_id) or (email and m.user_email == email)]  # fmt: skip
    if not gone:
        raise InvalidRequest(
            f"user_id: {user_id or email} is not a member of team '{team.team_id}'",
            param="user_id",
        )
    new = save(gateway, team, {"members_with_roles": [m for m in team.members_with_roles
                                                      if m not in gone]})  # fmt: skip
    _leave_users(gateway, team.team_id, gone)
    return await team_json(gateway, new)


_MEMBER_LIMITS = ("max_budget_in_team", "budget_duration", "rpm_limit", "tpm_limit")


async def member_update(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /team/member_update``: change the ``role`` and the member's own limits within
    the team (``max_budget_in_team``, ``budget_duration``, ``rpm_limit``, ``tpm_limit``;
    null clears one, so the team's ``team_member_*`` default applies) of the member named by
    ``user_id`` or ``user_email``."""
    team = gateway.directory.require("team", _team_id(data), Team)
    found = _member(team, data)
    role = data.get("role", found.role)
    if role not in ("admin", "user"):
        raise InvalidRequest("role must be 'admin' or 'user'", param="role")
    given = {k: data[k] for k in _MEMBER_LIMITS if k in data}
    try:
        now = msgspec.convert({**msgspec.structs.asdict(found), **given, "role": role}, Member,
                              strict=True)  # fmt: skip
    except msgspec.ValidationError as exc:
        name = next((k for k in given if f"$.{k}" in str(exc)), "max_budget_in_team")
        raise InvalidRequest(f"{name}: {exc}", param=name) from None
    check_member(now)
    ignored = sorted(set(data) - {"team_id", "user_id", "user_email", "role", *_MEMBER_LIMITS})
    save(gateway, team, {"members_with_roles": [now if m is found else m
                                                for m in team.members_with_roles]})  # fmt: skip
    return {"team_id": team.team_id, "user_id": now.user_id, "user_email": now.user_email,
            "role": now.role, **{k: getattr(now, k) for k in _MEMBER_LIMITS},
            "ignored_fields": ignored}  # fmt: skip


def _member(team: Team, data: dict[str, Any]) -> Member:
    """The member of ``team`` that ``user_id`` (else ``user_email``) names (400 if none)."""
    found = named_member(team.members_with_roles, data)
    if found is None:
        who = data.get("user_id") or data.get("user_email")
        raise InvalidRequest(
            f"user_id: {who} is not a member of team '{team.team_id}'", param="user_id"
        )
    return found


async def team_block(gateway: Gateway, data: dict[str, Any], blocked: bool = True) -> Any:
    """``POST /team/block``: every key of the team is refused (403) until unblocked."""
    team = gateway.directory.require("team", _team_id(data), Team)
    return await team_json(gateway, save(gateway, team, {"blocked": blocked}))


async def team_unblock(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /team/unblock``."""
    return await team_block(gateway, data, blocked=False)


def _join_users(gateway: Gateway, team_id: str, added: list[Member]) -> list[dict[str, Any]]:
    """Record ``team_id`` in each added member's user (created when unknown, as LiteLLM)."""
    out = []
    for m in added:
        if not m.user_id:
            continue
        user = gateway.directory.get("user", m.user_id)
        if not isinstance(user, User):
            user = build(User, {"user_id": m.user_id, "user_email": m.user_email,
                                "teams": [team_id]})  # fmt: skip
        elif team_id not in user.teams:
            user = changed(user, {"teams": [*user.teams, team_id]})
        gateway.directory.put(user)
        out.append({"user_id": user.user_id, "user_email": user.user_email,
                    "teams": user.teams})  # fmt: skip
    return out


def _leave_users(gateway: Gateway, team_id: str, gone: list[Member]) -> None:
    for m in gone:
        user = gateway.directory.get("user", m.user_id)
        if isinstance(user, User) and team_id in user.teams:
            save(gateway, user, {"teams": [t for t in user.teams if t != team_id]})


ROUTES: dict[str, tuple[tuple[str, ...], Handler]] = {
    "/team/new": (("POST",), team_new),
    "/team/info": (("GET",), team_info),
    "/team/update": (("POST",), team_update),
    "/team/delete": (("POST", "DELETE"), team_delete),
    "/team/list": (("GET",), team_list),
    "/team/member_add": (("POST",), member_add),
    "/team/member_delete": (("POST",), member_delete),
    "/team/member_update": (("POST",), member_update),
    "/team/block": (("POST",), team_block),
    "/team/unblock": (("POST",), team_unblock),
}
