"""The dispatcher of LiteLLM's team, user, customer and organization endpoints (the handlers
are in :mod:`.litellm_teams` and :mod:`.litellm_users`): finds the handler, checks the method,
reads the body or the query, and answers ``(status, JSON)``.

Every endpoint answers the master key. A team's admin (a virtual key whose ``user_id`` is a
member of the team with ``role: admin``, as in LiteLLM) may also read its team
(``/team/info``), add and remove its members, and make keys for it (``/key/generate`` with
its ``team_id``, for itself or another member): nothing that changes budgets, limits, models
or other teams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeguard.budget.directory import Team
from routeguard.budget.keys import KeyRecord
from routeguard.errors import InvalidRequest, PermissionDenied
from routeguard.server import litellm_teams, litellm_users
from routeguard.server.litellm_records import body_of, query_of

if TYPE_CHECKING:
    from routeguard.gateway import Gateway

ROUTES = {**litellm_teams.ROUTES, **litellm_users.ROUTES}
# LiteLLM still serves its customer endpoints under their first name.
ALIASES = {p.replace("/customer/", "/end_user/"): p for p in litellm_users.ROUTES
           if p.startswith("/customer/")}  # fmt: skip
PATHS = frozenset(ROUTES) | frozenset(ALIASES)


# What a team's admin may call, for its own team.
TEAM_ADMIN_PATHS = frozenset(
    {"/team/info", "/team/member_add", "/team/member_delete", "/key/generate"}
)


def team_admin_path(path: str) -> bool:
    """Whether a team's admin (not only the master key) may call ``path`` (exactly)."""
    return path in TEAM_ADMIN_PATHS


def require_team_admin(gateway: Gateway, key: KeyRecord, path: str, body: Any, query: str) -> None:
    """PermissionDenied unless ``key`` belongs to an admin of the team the request names
    (and, for ``/key/generate``, the new key's user is that admin or a member)."""
    data = query_of(query) if path == "/team/info" else body if isinstance(body, dict) else {}
    team_id, user = data.get("team_id"), key.spec.user
    team = gateway.directory.get("team", team_id) if isinstance(team_id, str) else None
    if not (
        isinstance(team, Team)
        and user
        and any(m.user_id == user and m.role == "admin" for m in team.members_with_roles)
    ):
        raise PermissionDenied(
            f"{path} needs the master key, or a key of an admin of the team it names"
        )
    owner = data.get("user_id")
    if (
        path == "/key/generate"
        and owner is not None
        and owner not in (m.user_id for m in team.members_with_roles)
    ):
        raise PermissionDenied(f"user_id: '{owner}' is not a member of team '{team_id}'")


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
