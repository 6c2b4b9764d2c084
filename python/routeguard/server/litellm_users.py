"""LiteLLM's internal-user and customer (end-user) endpoints over the key store's directory.

Users: ``POST /user/new`` (a key for the user is made and returned, as LiteLLM does, unless
``auto_create_key: false``), ``GET /user/info?user_id=``, ``POST /user/update`` (by ``user_id``
or ``user_email``), ``POST /user/delete`` (``user_ids``; their keys are revoked), ``GET
/user/list``. A user's budget covers its keys that belong to no team. Customers: ``POST
/customer/new``, ``GET /customer/info?end_user_id=``, ``POST /customer/update``, ``POST
/customer/delete`` (``user_ids``), ``POST /customer/block`` / ``unblock`` (``user_ids``), ``GET
/customer/list`` (also under LiteLLM's older ``/end_user/`` paths). A request whose ``user``
names a blocked customer is refused (403), one over the customer's budget gets the refusal of
any budget, in the caller's protocol."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from routeguard.budget.directory import Customer, Member, Team, User, check_id
from routeguard.budget.keys import KeySpec
from routeguard.config.budgets import duration_seconds
from routeguard.errors import InvalidRequest
from routeguard.server.litellm_keys import key_info
from routeguard.server.litellm_orgs import leave_orgs
from routeguard.server.litellm_records import (
    Handler,
    absent,
    budget_table,
    build,
    changed,
    create,
    fields,
    iso,
    listing,
    query_id,
    records,
    save,
    spend,
    update,
)

if TYPE_CHECKING:
    from routeguard.gateway import Gateway

# Fields of /user/new that shape the key it makes, not the user.
_KEY_FIELDS = frozenset({"auto_create_key", "key_alias", "duration", "send_invite_email"})


async def user_json(gateway: Gateway, user: User) -> dict[str, Any]:
    """A user as LiteLLM shows it (``LiteLLM_UserTable``), with its spend."""
    return {
        "user_id": user.user_id,
        "user_email": user.user_email,
        "user_role": user.user_role,
        "max_budget": user.max_budget,
        "budget_duration": user.budget_duration,
        "tpm_limit": user.tpm_limit,
        "rpm_limit": user.rpm_limit,
        "models": user.models,
        "teams": user.teams,
        "metadata": user.metadata,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
        **await spend(gateway, user),
    }


def _check_teams(gateway: Gateway, teams: list[str]) -> None:
    missing = [t for t in teams if not isinstance(gateway.directory.get("team", t), Team)]
    if missing:
        raise InvalidRequest(f"teams: no team {', '.join(missing)}", param="teams")


def _set_membership(gateway: Gateway, user: User, old: list[str]) -> None:
    """Make the teams' member lists agree with ``user.teams`` (was ``old``)."""
    for team_id in set(old) | set(user.teams):
        team = gateway.directory.get("team", team_id)
        if not isinstance(team, Team):
            continue
        others = [m for m in team.members_with_roles if m.user_id != user.user_id]
        mine = [m for m in team.members_with_roles if m.user_id == user.user_id]
        if team_id in user.teams and not mine:
            mine = [Member(user_id=user.user_id, user_email=user.user_email, role="user")]
        elif team_id not in user.teams:
            mine = []
        if mine != [m for m in team.members_with_roles if m.user_id == user.user_id]:
            save(gateway, team, {"members_with_roles": others + mine})


async def user_new(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /user/new``: a user and, unless ``auto_create_key: false``, a key of it."""
    user_id = check_id(data["user_id"], "user_id") if data.get("user_id") else str(uuid.uuid4())
    values, ignored = fields(data, User, skip=frozenset({"user_id"}) | _KEY_FIELDS)
    absent(gateway, User, user_id)
    _check_teams(gateway, values.get("teams", []))
    user = build(User, {**values, "user_id": user_id})
    out: dict[str, Any] = {}
    auto = data.get("auto_create_key", True)
    if not isinstance(auto, bool):
        raise InvalidRequest("auto_create_key must be true or false", param="auto_create_key")
    spec = _key_spec(user, data) if auto else None  # checked before anything is stored
    gateway.directory.put(user)
    _set_membership(gateway, user, [])
    if spec is not None:
        token, rec = gateway.keys.create(spec)
        out = {"key": token, "token": rec.key_id, "key_alias": spec.name,
               "expires": spec.expires_at}  # fmt: skip
    return {**await user_json(gateway, user), **out, "ignored_fields": ignored}


def _key_spec(user: User, data: dict[str, Any]) -> KeySpec:
    """The spec of the key /user/new makes: the user's, with its models."""
    alias = data.get("key_alias")
    if alias is not None and not isinstance(alias, str):
        raise InvalidRequest("key_alias must be a string", param="key_alias")
    expires = None
    if data.get("duration") is not None:
        try:
            expires = time.time() + duration_seconds(str(data["duration"]))
        except ValueError as exc:
            raise InvalidRequest(f"duration: {exc}", param="duration") from None
    return KeySpec(name=alias, user=user.user_id, models=user.models or None,
                   expires_at=expires)  # fmt: skip


def _find_user(gateway: Gateway, data: dict[str, Any]) -> User:
    """The user named by ``user_id``, else by ``user_email``."""
    if data.get("user_id"):
        return gateway.directory.require("user", check_id(data["user_id"], "user_id"), User)
    email = data.get("user_email")
    if not isinstance(email, str) or not email:
        raise InvalidRequest("user_id or user_email is required", param="user_id")
    for user in records(gateway, User):
        if user.user_email == email:
            return user
    raise InvalidRequest(f"user_email: no user with email '{email}'", param="user_email")


async def user_info(gateway: Gateway, query: dict[str, Any]) -> Any:
    """``GET /user/info?user_id=``: the user, its keys (never their secrets), its teams."""
    query_id(query, "user_id", "/user/info", "user")
    user = _find_user(gateway, query)
    from routeguard.server.litellm_teams import team_json

    teams = [t for t in (gateway.directory.get("team", t) for t in user.teams)
             if isinstance(t, Team)]  # fmt: skip
    return {
        "user_id": user.user_id,
        "user_info": await user_json(gateway, user),
        "keys": [key_info(r) for r in gateway.keys.list() if r.spec.user == user.user_id],
        "teams": [await team_json(gateway, t) for t in teams],
    }


async def user_update(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /user/update``: change the fields given (``teams`` changes memberships)."""
    user = _find_user(gateway, data)
    skip = frozenset() if data.get("user_id") else frozenset({"user_email"})

    def check(_: User, values: dict[str, Any]) -> None:
        _check_teams(gateway, values.get("teams", []))

    new, ignored = update(gateway, user, data, skip=skip, check=check)
    _set_membership(gateway, new, user.teams)
    return {"user_id": new.user_id, "data": await user_json(gateway, new),
            "ignored_fields": ignored}  # fmt: skip


async def user_delete(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /user/delete``: delete users (all found first), revoke their keys, and take
    them out of their teams and organizations."""
    ids = data.get("user_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(u, str) for u in ids):
        raise InvalidRequest("user_ids: a list of user ids is required", param="user_ids")
    users = [gateway.directory.require("user", u, User) for u in ids]
    for user in users:
        for rec in gateway.keys.list():
            if rec.spec.user == user.user_id and not rec.revoked:
                gateway.keys.revoke(rec.key_id)
        _set_membership(gateway, changed(user, {"teams": []}), user.teams)
        leave_orgs(gateway, user.user_id)
        gateway.directory.delete("user", user.user_id)
    return {"deleted_users": ids}


async def user_list(gateway: Gateway, query: dict[str, Any]) -> Any:
    """``GET /user/list``."""
    users = [await user_json(gateway, u) for u in records(gateway, User)]
    return {"users": users, "total": len(users)}


# ---------------------------------------------------------------------- customers


async def customer_json(gateway: Gateway, customer: Customer) -> dict[str, Any]:
    """A customer as LiteLLM shows it (``CustomerResponse``), with its spend."""
    return {
        "user_id": customer.user_id,
        "alias": customer.alias,
        "blocked": customer.blocked,
        "allowed_model_region": customer.allowed_model_region,
        "default_model": customer.default_model,
        "budget_id": None,
        "litellm_budget_table": budget_table(customer),
        "metadata": customer.metadata,
        **await spend(gateway, customer),
    }


def _customer_id(data: dict[str, Any]) -> str:
    return check_id(data.get("user_id"), "user_id", any_text=True)


async def customer_new(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /customer/new``: an end user with a budget and limits (400 if it exists)."""
    customer_id = _customer_id(data)
    values, ignored = fields(data, Customer, skip=frozenset({"user_id"}))
    customer = create(gateway, Customer, customer_id, values)
    return {**await customer_json(gateway, customer), "ignored_fields": ignored}


async def customer_info(gateway: Gateway, query: dict[str, Any]) -> Any:
    """``GET /customer/info?end_user_id=``."""
    ident = query_id(query, "end_user_id", "/customer/info", "customer")
    return await customer_json(gateway, gateway.directory.require("customer", ident, Customer))


async def customer_update(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /customer/update``: change the fields given."""
    customer = gateway.directory.require("customer", _customer_id(data), Customer)
    new, ignored = update(gateway, customer, data)
    return {**await customer_json(gateway, new), "ignored_fields": ignored}


def _ids(data: dict[str, Any]) -> list[str]:
    ids = data.get("user_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(u, str) for u in ids):
        raise InvalidRequest("user_ids: a list of customer ids is required", param="user_ids")
    return [check_id(u, "user_ids", any_text=True) for u in ids]


async def customer_delete(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /customer/delete``: delete customers (all found first)."""
    ids = _ids(data)
    for ident in ids:
        gateway.directory.require("customer", ident, Customer)
    for ident in ids:
        gateway.directory.delete("customer", ident)
    return {"deleted_customers": len(ids), "message": f"deleted {len(ids)} customer(s)"}


async def customer_block(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /customer/block``: refuse requests with these ``user`` ids (a customer not
    yet recorded is created blocked, as LiteLLM does)."""
    out = []
    for ident in _ids(data):
        found = gateway.directory.get("customer", ident)
        new = (
            save(gateway, found, {"blocked": True}) if isinstance(found, Customer)
            else create(gateway, Customer, ident, {"blocked": True})
        )  # fmt: skip
        out.append(await customer_json(gateway, new))
    return {"blocked_users": out}


async def customer_unblock(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /customer/unblock``: the ids that stay blocked are listed (none, normally)."""
    ids = _ids(data)
    found = [gateway.directory.require("customer", i, Customer) for i in ids]
    for customer in found:
        save(gateway, customer, {"blocked": False})
    still = [c.user_id for c in records(gateway, Customer) if c.blocked and c.user_id in ids]
    return {"blocked_users": still}


ROUTES: dict[str, tuple[tuple[str, ...], Handler]] = {
    "/user/new": (("POST",), user_new),
    "/user/info": (("GET",), user_info),
    "/user/update": (("POST",), user_update),
    "/user/delete": (("POST",), user_delete),
    "/user/list": (("GET",), user_list),
    "/customer/new": (("POST",), customer_new),
    "/customer/info": (("GET",), customer_info),
    "/customer/update": (("POST",), customer_update),
    "/customer/delete": (("POST",), customer_delete),
    "/customer/block": (("POST",), customer_block),
    "/customer/unblock": (("POST",), customer_unblock),
    "/customer/list": (("GET",), listing(Customer, customer_json)),
}
