"""The admin API for virtual keys (master key only; the cache's admin routes, under
``/admin/cache``, are ``cache_admin``'s).

Routes: ``POST /admin/keys`` (create; the key is in the response once), ``GET /admin/keys``,
``GET|PATCH|DELETE /admin/keys/{id}`` (DELETE revokes), ``POST /admin/keys/{id}/rotate``,
and LiteLLM's ``/key/generate``, ``/key/info``, ``/key/update``, ``/key/delete``,
``/key/regenerate`` (:mod:`.litellm_keys`); LiteLLM's team, user, customer and organization
endpoints are :mod:`.litellm_entities`'. Responses are JSON; errors follow the proxy's
OpenAI-style format.
"""

from __future__ import annotations

from typing import Any

from routeguard.budget.keys import KeyStore, parse_spec
from routeguard.errors import InvalidRequest
from routeguard.server import litellm_entities, litellm_keys


def is_admin_path(path: str) -> bool:
    """Whether ``path`` belongs to the admin API."""
    return (
        path.startswith(
            (
                "/admin/keys",
                "/admin/budgets",
                "/admin/approvals",
                "/admin/spend",
                "/admin/cache",
                "/admin/reload",
            )
        )
        or litellm_keys.is_path(path)
        or path.rstrip("/") in litellm_entities.PATHS
    )


def handle(
    keys: KeyStore,
    method: str,
    path: str,
    body: Any,
    approvals: list[Any] | None = None,
    query: str = "",
) -> tuple[int, Any]:
    """Serve one admin request; returns (status, JSON body)."""
    if path.startswith("/admin/approvals"):  # tool calls waiting for a human (enforce.proxy)
        from routeguard.enforce.proxy import handle_approvals

        return handle_approvals(approvals or [], method, path, body)
    if litellm_keys.is_path(path):
        return litellm_keys.handle(keys, method, path, body, query)
    segments = [p for p in path.split("/") if p]
    if segments[:2] != ["admin", "keys"]:  # /admin/budgets, /admin/keysx...: not a key route
        raise _NoRoute(f"no admin route for {method} {path}")
    parts = segments[2:]
    if not parts:
        if method == "POST":
            token, rec = keys.create(parse_spec(body))
            return 201, {"key": token, **rec.public()}
        if method == "GET":
            return 200, {"object": "list", "data": [r.public() for r in keys.list()]}
    elif len(parts) == 1:
        key_id = parts[0]
        if method == "GET":
            return 200, keys.get(key_id).public()
        if method == "PATCH":
            if not isinstance(body, dict):
                raise InvalidRequest("PATCH body must be a JSON object of fields to change")
            return 200, keys.update(key_id, body).public()
        if method == "DELETE":
            return 200, keys.revoke(key_id).public()
    elif len(parts) == 2 and parts[1] == "rotate" and method == "POST":
        token, rec = keys.rotate(parts[0])
        return 200, {"key": token, **rec.public()}
    raise _NoRoute(f"no admin route for {method} {path}")


class _NoRoute(InvalidRequest):
    status_code = 404
    code = "not_found"
