"""The dispatcher of LiteLLM's team, user, customer and organization endpoints (master key
only; the handlers are in :mod:`.litellm_teams` and :mod:`.litellm_users`): finds the
handler, checks the method, reads the body or the query, and answers ``(status, JSON)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeguard.errors import InvalidRequest
from routeguard.server import litellm_teams, litellm_users
from routeguard.server.litellm_records import body_of, query_of

if TYPE_CHECKING:
    from routeguard.gateway import Gateway

ROUTES = {**litellm_teams.ROUTES, **litellm_users.ROUTES}
# LiteLLM still serves its customer endpoints under their first name.
ALIASES = {p.replace("/customer/", "/end_user/"): p for p in litellm_users.ROUTES
           if p.startswith("/customer/")}  # fmt: skip
PATHS = frozenset(ROUTES) | frozenset(ALIASES)


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
