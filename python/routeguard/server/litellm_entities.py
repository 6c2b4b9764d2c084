"""The dispatcher of LiteLLM's team, user, customer and organization endpoints (the handlers
are in :mod:`.litellm_teams`, :mod:`.litellm_orgs` and :mod:`.litellm_users`): finds the
handler, checks the method, reads the body or the query, and answers ``(status, JSON)``.

Every endpoint answers the master key. An organization's admin may manage its organization
(:mod:`.litellm_org_admins`). A team's admin (a virtual key whose ``user_id`` is a
member of the team with ``role: admin``, as in LiteLLM) may also, for its own team: read it
(``/team/info``), update it (``/team/update``: its alias, metadata, rate limits, its
members' ``team_member_*`` defaults, its models narrowed, its ``max_budget`` kept or
lowered; raising or clearing the budget, its period, its organization or its block answer
only the master key), manage its members
(``/team/member_add``, ``member_delete``, ``member_update``), make keys for it
(``/key/generate`` with its ``team_id``, for itself or another member), update them
(``/key/update``: a key of the team, kept in the team, owned by a member, within the team's
``max_budget``, ``models`` and rate limits), give them a new secret (``/key/regenerate``, by
the rules of ``/key/update``) and delete them (``/key/delete``, every key named being one of
the team's). Anything else is a 403 naming the field; a team or key not found is refused as
another team's is, so an admin cannot probe for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from routeguard.budget.directory import Team
from routeguard.budget.keys import KeyRecord
from routeguard.errors import InvalidRequest, PermissionDenied, RouteguardError
from routeguard.server import (
    litellm_keys,
    litellm_org_admins,
    litellm_orgs,
    litellm_teams,
    litellm_users,
)
from routeguard.server.litellm_records import body_of, query_of

if TYPE_CHECKING:
    from routeguard.gateway import Gateway

ROUTES = {**litellm_teams.ROUTES, **litellm_orgs.ROUTES, **litellm_users.ROUTES}
# LiteLLM still serves its customer endpoints under their first name.
ALIASES = {p.replace("/customer/", "/end_user/"): p for p in litellm_users.ROUTES
           if p.startswith("/customer/")}  # fmt: skip
PATHS = frozenset(ROUTES) | frozenset(ALIASES)


# What a team's admin may call, for its own team.
TEAM_ADMIN_PATHS = frozenset(
    {"/team/info", "/team/update", "/team/member_add", "/team/member_delete",
     "/team/member_update", "/key/generate", "/key/update", "/key/delete"}
)  # fmt: skip
# The team fields its admin may change with /team/update (models and max_budget only down).
# The team_member_* defaults only narrow what a member may spend of the team's budget.
TEAM_ADMIN_FIELDS = frozenset({"team_alias", "metadata", "rpm_limit", "tpm_limit", "models",
                               "max_budget", "team_member_budget", "team_member_budget_duration",
                               "team_member_rpm_limit", "team_member_tpm_limit"})  # fmt: skip
_TEAM_FIELDS = frozenset(f.name for f in msgspec.structs.fields(Team))


DELEGATED_PATHS = TEAM_ADMIN_PATHS | litellm_org_admins.PATHS
# The field that names what a refused request is about.
_TARGET = {"/key/generate": "team_id", "/key/update": "key", "/key/delete": "keys",
           "/team/delete": "team_ids", "/team/new": "organization_id",
           "/team/list": "organization_id"}  # fmt: skip
_GETS = frozenset({"/team/info", "/team/list", "/organization/info"})


def delegated_path(path: str) -> bool:
    """Whether a team's or an organization's admin (not only the master key) may call
    ``path`` (exactly; a ``/key/{key}/regenerate`` path too)."""
    return path in DELEGATED_PATHS or litellm_keys.is_regenerate(path)


def require_delegated(gateway: Gateway, key: KeyRecord, path: str, body: Any, query: str) -> None:
    """PermissionDenied unless ``key`` belongs to an admin of the organization or team the
    request names and the request stays within what that admin may do (see the module's
    docstring)."""
    data = query_of(query) if path in _GETS else body if isinstance(body, dict) else {}
    if litellm_keys.is_regenerate(path):  # by the rules of /key/update, on the key it names
        named = {**data, "key": litellm_keys.regenerate_target(path, data)}
        if litellm_org_admins.permits(gateway, key, "/key/update", named):
            return
    elif litellm_org_admins.permits(gateway, key, path, data):
        return
    if path not in TEAM_ADMIN_PATHS and not litellm_keys.is_regenerate(path):
        target = _TARGET.get(path, "organization_id" if "/organization/" in path else "team_id")
        raise PermissionDenied(
            f"{path} needs the master key, or a key of an admin of the organization "
            "(or team) it names",
            param=target,
        )
    _require_team_admin(gateway, key, path, data)


def _require_team_admin(gateway: Gateway, key: KeyRecord, path: str, data: dict[str, Any]) -> None:
    """PermissionDenied unless ``key`` belongs to an admin of the team the request names and
    the request stays within what a team admin may do (see the module's docstring)."""
    if path == "/key/delete":
        _require_team_keys(gateway, key, data.get("keys"))
        return
    if path == "/key/update":
        _require_key_update(gateway, key, data)
        return
    if litellm_keys.is_regenerate(path):  # the rules of /key/update, on the key it names
        named = litellm_keys.regenerate_target(path, data)
        _require_key_update(gateway, key, {**data, "key": named}, "/key/regenerate")
        return
    team = _admin_team(gateway, key, data.get("team_id"), path)
    owner = data.get("user_id")
    if (
        path == "/key/generate"
        and owner is not None
        and owner not in (m.user_id for m in team.members_with_roles)
    ):
        raise PermissionDenied(
            f"user_id: '{owner}' is not a member of team '{team.team_id}'", param="user_id"
        )
    if path == "/team/update":
        _require_admin_changes(team, data)


def _admin_team(gateway: Gateway, key: KeyRecord, team_id: Any, path: str) -> Team:
    """The team ``team_id`` if ``key``'s user is one of its admins, else PermissionDenied."""
    team = gateway.directory.get("team", team_id) if isinstance(team_id, str) else None
    user = key.spec.user
    if not (
        isinstance(team, Team)
        and user
        and any(m.user_id == user and m.role == "admin" for m in team.members_with_roles)
    ):
        raise PermissionDenied(
            f"{path} needs the master key, or a key of an admin of the team it names "
            "(or of its organization)",
            param="team_id",
        )
    return team


def _require_team_keys(gateway: Gateway, key: KeyRecord, names: Any) -> None:
    """Every key ``names`` lists belongs to a team ``key``'s user is an admin of (a key not
    found is refused alike, so a team admin cannot probe for keys)."""
    if not isinstance(names, list) or not names or not all(isinstance(k, str) for k in names):
        raise PermissionDenied(
            "/key/delete by a team admin needs 'keys': a list of keys of its team", param="keys"
        )
    for name in names:
        try:
            _admin_team(gateway, key, gateway.keys.find(name).spec.team, "/key/delete")
        except RouteguardError:  # one answer for a foreign key and a missing one: no probing
            raise PermissionDenied(
                "/key/delete needs the master key, or a key of an admin of the team (or of "
                "its organization) of every key it names",
                param="keys",
            ) from None


def _require_key_update(
    gateway: Gateway, key: KeyRecord, data: dict[str, Any], path: str = "/key/update"
) -> None:
    """A team admin's ``/key/update``: the key is one of its team's (a key not found is refused
    alike), stays in that team, belongs to a member, and asks for no more than the team has
    (``max_budget``, ``models``, ``rpm_limit``, ``tpm_limit``), as LiteLLM checks a team's
    keys against the team."""
    given = data.get("key")
    try:
        found = gateway.keys.find(given) if isinstance(given, str) and given else None
    except RouteguardError:
        found = None
    # a deleted key is refused as a missing one
    team_id = found.spec.team if found is not None and not found.revoked else None
    try:
        team = _admin_team(gateway, key, team_id, path)
    except PermissionDenied:  # one answer for a foreign key and a missing one: no probing
        raise PermissionDenied(
            f"{path} needs the master key, or a key of an admin of the team (or of its "
            "organization) of the key it names",
            param="key",
        ) from None
    moved = data.get("team_id")
    if moved is not None and moved != team.team_id:
        raise PermissionDenied(
            f"team_id: only the master key may move a key out of team '{team.team_id}'",
            param="team_id",
        )
    owner = data.get("user_id")
    if owner is not None and owner not in (m.user_id for m in team.members_with_roles):
        raise PermissionDenied(
            f"user_id: '{owner}' is not a member of team '{team.team_id}'", param="user_id"
        )
    for name in ("max_budget", "rpm_limit", "tpm_limit"):
        cap, asked = getattr(team, name), data.get(name)
        if cap is not None and _number(asked) and asked > cap:
            raise PermissionDenied(
                f"{name}: {asked} is above team '{team.team_id}''s {name} ({cap:g}); "
                "a team admin may give its team's keys at most the team's",
                param=name,
            )
    models = data.get("models")
    if team.models and isinstance(models, list):
        outside = [str(m) for m in models if m not in team.models]
        if outside:
            raise PermissionDenied(
                f"models: {', '.join(outside)} not among team '{team.team_id}''s models "
                f"({', '.join(team.models)})",
                param="models",
            )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require_admin_changes(team: Team, data: dict[str, Any]) -> None:
    """A team admin's ``/team/update`` changes only what it may: its budget kept or lowered,
    its models narrowed; everything else of the budget answers the master key."""
    ignored = {"team_id", "members_with_roles", "created_at", "updated_at"}  # not updated
    for name in sorted(_TEAM_FIELDS - TEAM_ADMIN_FIELDS - ignored):
        if name in data and data[name] != getattr(team, name):
            raise PermissionDenied(
                f"{name}: only the master key may change a team's {name}", param=name
            )
    if "max_budget" in data:
        new = data["max_budget"]
        if team.max_budget is not None and (
            new is None
            or (isinstance(new, int | float) and not isinstance(new, bool)
                and new > team.max_budget)
        ):  # fmt: skip
            raise PermissionDenied(
                f"max_budget: only the master key may raise or remove a team's max_budget "
                f"(team '{team.team_id}' has {team.max_budget:g}, asked for {new}); "
                "a team admin may keep or lower it",
                param="max_budget",
            )
    models = data.get("models")
    if team.models and isinstance(models, list):
        wider = [m for m in models if m not in team.models]
        if not models or wider:
            raise PermissionDenied(
                "models: a team admin may only narrow its team's models "
                f"({', '.join(team.models)})"
                + (f"; not add {', '.join(map(str, wider))}" if wider else ""),
                param="models",
            )


class _MethodNotAllowed(InvalidRequest):
    status_code = 405
    code = "method_not_allowed"


async def handle(
    gateway: Gateway, method: str, path: str, body: Any, query: str
) -> tuple[int, Any]:
    """Serve one request to a path of :data:`PATHS`; returns (status, JSON body)."""
    path = ALIASES.get(path, path)
    methods, handler = ROUTES[path]
    if method not in methods:
        raise _MethodNotAllowed(f"{path} accepts {' or '.join(methods)}, not {method}")
    if method == "GET":
        data: dict[str, Any] = query_of(query)
    else:
        data = body_of(path, body)
    return 200, await handler(gateway, data)
