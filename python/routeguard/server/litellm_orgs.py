"""LiteLLM's organization endpoints over the key store's directory.

``POST /organization/new``, ``GET /organization/info?organization_id=``, ``PATCH`` (or
``POST``) ``/organization/update``, ``DELETE`` (or ``POST``) ``/organization/delete``
(``organization_ids``), ``GET /organization/list``, and its members: ``POST
/organization/member_add`` (one ``{role, user_id, user_email}`` or a list; unknown users
are created, as LiteLLM does), ``PATCH`` (or ``POST``) ``/organization/member_update``,
``DELETE`` (or ``POST``) ``/organization/member_delete``. A member's ``role`` is
``org_admin``, ``internal_user`` or ``internal_user_viewer``; an ``org_admin`` may manage
the organization's teams (:mod:`.litellm_org_admins`). An organization's budget covers
every team in it."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import msgspec

from routeguard.budget.directory import (
    NotFound,
    Organization,
    OrgMember,
    Team,
    User,
    check_id,
    unknown_fields,
)
from routeguard.errors import InvalidRequest
from routeguard.server.litellm_records import (
    Handler,
    budget_table,
    build,
    create,
    fields,
    iso,
    listing,
    named_member,
    query_id,
    records,
    save,
    spend,
    update,
)

if TYPE_CHECKING:
    from routeguard.gateway import Gateway

_MEMBERS = frozenset({"members"})  # changed through the member endpoints only


async def org_json(gateway: Gateway, org: Organization) -> dict[str, Any]:
    """An organization as LiteLLM shows it (``LiteLLM_OrganizationTableWithMembers``), with
    its teams and members."""
    teams = [t for t in records(gateway, Team) if t.organization_id == org.organization_id]
    return {
        "organization_id": org.organization_id,
        "organization_alias": org.organization_alias,
        "models": org.models,
        "metadata": org.metadata,
        "max_budget": org.max_budget,
        "budget_duration": org.budget_duration,
        "tpm_limit": org.tpm_limit,
        "rpm_limit": org.rpm_limit,
        "litellm_budget_table": budget_table(org),
        "teams": [{"team_id": t.team_id, "team_alias": t.team_alias} for t in teams],
        "members": [membership(org, m) for m in org.members],
        "created_at": iso(org.created_at),
        "updated_at": iso(org.updated_at),
        **await spend(gateway, org),
    }


def membership(org: Organization, m: OrgMember) -> dict[str, Any]:
    """A member as LiteLLM shows it (``LiteLLM_OrganizationMembershipTable``)."""
    return {"organization_id": org.organization_id, "user_id": m.user_id,
            "user_email": m.user_email, "user_role": m.role}  # fmt: skip


def org_admin_of(org: Organization, user_id: str | None) -> bool:
    """Whether ``user_id`` is one of ``org``'s ``org_admin`` members."""
    return bool(user_id) and any(m.user_id == user_id and m.role == "org_admin"
                                 for m in org.members)  # fmt: skip


def _org_id(data: dict[str, Any]) -> str:
    return check_id(data.get("organization_id"), "organization_id")


async def org_new(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /organization/new`` (``organization_alias`` required, as in LiteLLM)."""
    given = data.get("organization_id")
    org_id = check_id(given, "organization_id") if given else str(uuid.uuid4())
    values, ignored = fields(data, Organization, skip=frozenset({"organization_id"}))
    if "members" in values:
        del values["members"]
        ignored = sorted([*ignored, "members"])
    if not values.get("organization_alias"):
        raise InvalidRequest("organization_alias is required", param="organization_alias")
    org = create(gateway, Organization, org_id, values)
    return {**await org_json(gateway, org), "ignored_fields": ignored}


async def org_info(gateway: Gateway, query: dict[str, Any]) -> Any:
    """``GET /organization/info?organization_id=``."""
    org_id = query_id(query, "organization_id", "/organization/info", "organization")
    org = gateway.directory.require("organization", org_id, Organization)
    return await org_json(gateway, org)


async def org_update(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``PATCH /organization/update``: change the fields given (members: the member
    endpoints)."""
    org = gateway.directory.require("organization", _org_id(data), Organization)
    new, ignored = update(gateway, org, data, skip=_MEMBERS)
    if "members" in data:
        ignored = sorted([*ignored, "members"])
    return {**await org_json(gateway, new), "ignored_fields": ignored}


async def org_delete(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``DELETE /organization/delete``: organizations without teams (400 naming the
    teams otherwise: move or delete them first)."""
    ids = data.get("organization_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(o, str) for o in ids):
        raise InvalidRequest(
            "organization_ids: a list of organization ids is required", param="organization_ids"
        )
    orgs = [gateway.directory.require("organization", o, Organization) for o in ids]
    out = []
    for org in orgs:
        shown = await org_json(gateway, org)
        if shown["teams"]:
            names = ", ".join(t["team_id"] for t in shown["teams"])
            raise InvalidRequest(
                f"organization_ids: organization '{org.organization_id}' still has teams "
                f"({names}): move or delete them first",
                param="organization_ids",
            )
        out.append(shown)
    for org in orgs:
        gateway.directory.delete("organization", org.organization_id)
    return out


def _members(value: Any) -> list[OrgMember]:
    """A ``member`` value (one object or a list) as OrgMembers, each naming a user."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise InvalidRequest("member: at least one member is required", param="member")
    extra = unknown_fields(items, OrgMember)
    if extra:
        raise InvalidRequest(f"member: unknown member field(s) {', '.join(extra)}",
                             param="member")  # fmt: skip
    try:
        found = [msgspec.convert(m, OrgMember, strict=True) for m in items]
    except msgspec.ValidationError as exc:
        raise InvalidRequest(
            f"member: {exc} (role: org_admin, internal_user or internal_user_viewer)",
            param="member",
        ) from None
    for m in found:
        if not m.user_id and not m.user_email:
            raise InvalidRequest("member: a member needs user_id or user_email", param="member")
        if m.user_id is not None:
            check_id(m.user_id, "member")
    return found


def _same(a: OrgMember, b: OrgMember) -> bool:
    return (a.user_id is not None and a.user_id == b.user_id) or (
        a.user_id is None and b.user_id is None and a.user_email == b.user_email
    )


async def org_member_add(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``POST /organization/member_add``: add members (one or a list), creating unknown
    users; a member already there takes the role given."""
    org = gateway.directory.require("organization", _org_id(data), Organization)
    if "member" not in data:
        raise InvalidRequest("member: a member ({role, user_id}) is required", param="member")
    added = _members(data["member"])
    kept = [m for m in org.members if not any(_same(m, a) for a in added)]
    new = save(gateway, org, {"members": kept + added})
    users = []
    for m in added:
        if m.user_id and not isinstance(gateway.directory.get("user", m.user_id), User):
            gateway.directory.put(build(User, {"user_id": m.user_id, "user_email": m.user_email}))
        if m.user_id:
            users.append({"user_id": m.user_id, "user_email": m.user_email})
    return {
        "organization_id": new.organization_id,
        "updated_users": users,
        "updated_organization_memberships": [membership(new, m) for m in added],
        "ignored_fields": sorted(set(data) - {"organization_id", "member"}),
    }


def _member(org: Organization, data: dict[str, Any]) -> OrgMember:
    """The member of ``org`` that ``user_id`` (else ``user_email``) names (404 if none)."""
    found = named_member(org.members, data)
    if found is None:
        who = data.get("user_id") or data.get("user_email")
        raise NotFound(
            f"user_id: {who} is not a member of organization '{org.organization_id}'",
            param="user_id",
        )
    return found


async def org_member_update(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``PATCH /organization/member_update``: change the ``role`` of the member named by
    ``user_id`` or ``user_email``."""
    org = gateway.directory.require("organization", _org_id(data), Organization)
    found = _member(org, data)
    role = data.get("role", found.role)
    if role not in ("org_admin", "internal_user", "internal_user_viewer"):
        raise InvalidRequest(
            "role must be 'org_admin', 'internal_user' or 'internal_user_viewer'", param="role"
        )
    now = msgspec.structs.replace(found, role=role)
    new = save(gateway, org, {"members": [now if m is found else m for m in org.members]})
    known = {"organization_id", "user_id", "user_email", "role"}
    return {**membership(new, now), "ignored_fields": sorted(set(data) - known)}


async def org_member_delete(gateway: Gateway, data: dict[str, Any]) -> Any:
    """``DELETE /organization/member_delete``: remove the member named by ``user_id`` or
    ``user_email``; returns its membership."""
    org = gateway.directory.require("organization", _org_id(data), Organization)
    found = _member(org, data)
    new = save(gateway, org, {"members": [m for m in org.members if m is not found]})
    return membership(new, found)


def leave_orgs(gateway: Gateway, user_id: str) -> None:
    """Take ``user_id`` out of every organization (the user is being deleted: a user made
    later with the same id must not inherit its roles)."""
    for org in records(gateway, Organization):
        if any(m.user_id == user_id for m in org.members):
            save(gateway, org, {"members": [m for m in org.members if m.user_id != user_id]})


ROUTES: dict[str, tuple[tuple[str, ...], Handler]] = {
    "/organization/new": (("POST",), org_new),
    "/organization/info": (("GET",), org_info),
    "/organization/update": (("PATCH", "POST"), org_update),
    "/organization/delete": (("DELETE", "POST"), org_delete),
    "/organization/list": (("GET",), listing(Organization, org_json)),
    "/organization/member_add": (("POST",), org_member_add),
    "/organization/member_update": (("PATCH", "POST"), org_member_update),
    "/organization/member_delete": (("DELETE", "POST"), org_member_delete),
}
