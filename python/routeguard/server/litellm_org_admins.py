"""What an organization's admin may do: a virtual key whose ``user_id`` is a member of an
organization with role ``org_admin`` (LiteLLM's org admin) manages that organization.

It may read the organization and change its alias and metadata, keep or lower its budget and
rate limits (never raise them: that is the master key's), manage its members
(``/organization/member_add``, ``member_update``, ``member_delete``); create teams in it
(``/team/new`` with its ``organization_id``, a budget and rate limits no larger than the
organization's), and read, update, block, delete and list them and manage their members;
and make, update and delete the keys of those teams, owned by members of the team or of
the organization. A team or key it names that is not in one of its organizations (or does
not exist) is answered as any other caller's request would be: the team admin's rules
apply (:mod:`.litellm_entities`), so a missing team and another organization's are refused
alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeguard.budget.directory import Organization, Team
from routeguard.errors import PermissionDenied, RouteguardError
from routeguard.server.litellm_orgs import org_admin_of

if TYPE_CHECKING:
    from routeguard.budget.keys import KeyRecord
    from routeguard.gateway import Gateway

_ORG_PATHS = frozenset({"/organization/info", "/organization/update", "/organization/member_add",
                        "/organization/member_update", "/organization/member_delete"})  # fmt: skip
_TEAM_PATHS = frozenset({"/team/info", "/team/update", "/team/member_add", "/team/member_delete",
                         "/team/member_update", "/team/block", "/team/unblock"})  # fmt: skip
PATHS = _ORG_PATHS | _TEAM_PATHS | {"/team/new", "/team/delete", "/team/list",
                                    "/key/generate", "/key/update", "/key/delete"}  # fmt: skip
"""What an organization's admin may call (each checked against what it names)."""
# Of an organization, its admin may change these (the last three only kept or lowered).
_ORG_FIELDS = frozenset({"organization_id", "organization_alias", "metadata", "max_budget",
                         "rpm_limit", "tpm_limit"})  # fmt: skip
_CAPS = ("max_budget", "rpm_limit", "tpm_limit")
_NOT_KEPT = frozenset({"members", "created_at", "updated_at"})


def permits(gateway: Gateway, key: KeyRecord, path: str, data: dict[str, Any]) -> bool:
    """True when ``key``'s user is an admin of the organization(s) the request names and the
    request stays within what an org admin may do (PermissionDenied naming the field when it
    asks for more); False when no organization it administers is concerned (the caller then
    applies the team admin's rules)."""
    user = key.spec.user
    if not user or path not in PATHS:
        return False
    admined = _Admined(gateway, user)
    if path in _ORG_PATHS:
        org = admined.org(data.get("organization_id"))
        if org is None:
            return False
        if path == "/organization/update":
            _require_org_changes(org, data)
        return True
    if path == "/team/list":
        return admined.org(data.get("organization_id")) is not None
    if path == "/team/new":
        org = admined.org(data.get("organization_id"))
        if org is None:
            return False
        _within(org, data, "team")
        return True
    if path == "/team/delete":
        ids = data.get("team_ids")
        return isinstance(ids, list) and bool(ids) and all(admined.team(t) for t in ids)
    if path in _TEAM_PATHS:
        team = admined.team(data.get("team_id"))
        if team is None:
            return False
        if path == "/team/update":
            _require_team_update(admined, team, data)
        return True
    if path == "/key/generate":
        team = admined.team(data.get("team_id"))
        if team is None:
            return False
        _require_owner(admined, team, data.get("user_id"))
        return True
    if path == "/key/delete":
        names = data.get("keys")
        return (isinstance(names, list) and bool(names)
                and all(admined.team(_key_team(gateway, n)) for n in names))  # fmt: skip
    # /key/update: a key of one of its teams, kept among them, owned by a member.
    team = admined.team(_key_team(gateway, data.get("key")))
    if team is None:
        return False
    moved = data.get("team_id")
    if moved is not None and moved != team.team_id:
        target = admined.team(moved)
        if target is None:
            raise PermissionDenied(
                "team_id: an organization admin may move a key only to a team of an "
                "organization it administers",
                param="team_id",
            )
        team = target
    _require_owner(admined, team, data.get("user_id"))
    return True


class _Admined:
    """The organizations ``user`` administers, looked up as the request names them."""

    def __init__(self, gateway: Gateway, user: str) -> None:
        self.gateway = gateway
        self.user = user

    def org(self, org_id: Any) -> Organization | None:
        """The organization ``org_id`` if the user administers it."""
        if not isinstance(org_id, str) or not org_id:
            return None
        org = self.gateway.directory.get("organization", org_id)
        return org if isinstance(org, Organization) and org_admin_of(org, self.user) else None

    def team(self, team_id: Any) -> Team | None:
        """The team ``team_id`` if it is in an organization the user administers."""
        if not isinstance(team_id, str) or not team_id:
            return None
        team = self.gateway.directory.get("team", team_id)
        if not isinstance(team, Team) or self.org(team.organization_id) is None:
            return None
        return team


def _key_team(gateway: Gateway, name: Any) -> str | None:
    """The team of the key ``name`` (the key or its id); None when none or not found."""
    if not isinstance(name, str) or not name:
        return None
    try:
        return gateway.keys.find(name).spec.team
    except RouteguardError:
        return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _within(org: Organization, data: dict[str, Any], what: str) -> None:
    """A team's ``max_budget``, ``rpm_limit`` and ``tpm_limit`` set by an org admin are no
    larger than its organization's (LiteLLM's check of an organization's teams)."""
    for name in _CAPS:
        cap, asked = getattr(org, name), data.get(name)
        if cap is not None and _number(asked) and asked > cap:
            raise PermissionDenied(
                f"{name}: {asked} is above organization '{org.organization_id}''s {name} "
                f"({cap:g}); an organization admin may give a {what} at most its "
                "organization's",
                param=name,
            )


def _require_team_update(admined: _Admined, team: Team, data: dict[str, Any]) -> None:
    """An org admin's ``/team/update``: the team stays in an organization it administers,
    within that organization's budget and rate limits."""
    moved = data.get("organization_id", team.organization_id)
    org = admined.org(moved)
    if org is None:
        raise PermissionDenied(
            "organization_id: an organization admin may move a team only to an organization "
            "it administers",
            param="organization_id",
        )
    _within(org, data, "team")


def _require_owner(admined: _Admined, team: Team, owner: Any) -> None:
    """A key's ``user_id`` set by an org admin is a member of the team or its organization."""
    if owner is None:
        return
    org = admined.org(team.organization_id)
    if owner in (m.user_id for m in team.members_with_roles) or (
        org is not None and owner in (m.user_id for m in org.members)
    ):
        return
    raise PermissionDenied(
        f"user_id: '{owner}' is not a member of team '{team.team_id}' or of its organization",
        param="user_id",
    )


def _require_org_changes(org: Organization, data: dict[str, Any]) -> None:
    """An org admin's ``/organization/update``: alias and metadata; budget and rate limits
    kept or lowered (raising or removing one is the master key's)."""
    for name in sorted(set(data) - _ORG_FIELDS):
        if name in _NOT_KEPT or not hasattr(org, name) or data[name] == getattr(org, name):
            continue  # not changed, or not kept (the answer's ignored_fields)
        raise PermissionDenied(
            f"{name}: only the master key may change an organization's {name}", param=name
        )
    for name in _CAPS:
        if name not in data:
            continue
        cap, asked = getattr(org, name), data[name]
        if cap is not None and (asked is None or (_number(asked) and asked > cap)):
            raise PermissionDenied(
                f"{name}: only the master key may raise or remove an organization's {name} "
                f"(organization '{org.organization_id}' has {cap:g}, asked for {asked}); "
                "its admin may keep or lower it",
                param=name,
            )
