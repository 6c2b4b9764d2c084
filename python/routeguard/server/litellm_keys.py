"""LiteLLM's key management endpoints over our key store, for clients and scripts written
against a LiteLLM proxy: ``POST /key/generate``, ``GET /key/info?key=``, ``POST
/key/update``, ``POST /key/delete``. Their fields map onto :class:`~routeguard.budget.keys.
KeySpec` (``duration`` -> ``expires_at``, ``budget_duration`` -> ``budget_period``,
``rpm_limit`` -> ``rpm``, ``key_alias`` -> ``name``, ``user_id``/``team_id`` -> ``user``/
``team``); fields we do not keep are named in the answer's ``ignored_fields``. Keys are
named by the key itself (or our ``key_id``), as LiteLLM does.

``POST /key/regenerate`` (the key in ``key``) and ``POST /key/{key}/regenerate`` give an
existing key a new secret, shown once in the answer's ``key``: its id, spend, budgets, team,
user and limits stay, the fields ``/key/update`` takes may change in the same write, and
the old secret stops working at once on every instance sharing the key store. Secrets are
always ours (``new_key`` is refused), and the master key is the config's (``new_master_key``
is refused)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from routeguard.budget.keys import KeyRecord, KeyStore, parse_spec
from routeguard.config.budgets import duration_seconds, period_from_duration
from routeguard.errors import InvalidRequest

PATHS = ("/key/generate", "/key/info", "/key/update", "/key/delete", "/key/regenerate")
_RENAMED = {"user_id": "user", "team_id": "team", "key_alias": "name", "rpm_limit": "rpm",
            "tpm_limit": "tpm", "max_budget": "max_budget", "models": "models",
            "metadata": "metadata"}  # fmt: skip


def is_path(path: str) -> bool:
    """Whether ``path`` is one of LiteLLM's key endpoints (``/key/{key}/regenerate`` too)."""
    return path in PATHS or _named_in_path(path) is not None


def is_regenerate(path: str) -> bool:
    """Whether ``path`` is ``/key/regenerate`` or ``/key/{key}/regenerate``."""
    return path == "/key/regenerate" or _named_in_path(path) is not None


def _named_in_path(path: str) -> str | None:
    """The key named by a ``/key/{key}/regenerate`` path (None for any other path)."""
    if path.startswith("/key/") and path.endswith("/regenerate"):
        name = path[len("/key/") : -len("/regenerate")]
        return name if name and "/" not in name else None
    return None


def shown_path(path: str) -> str:
    """``path`` as traces may show it: a key in a ``/key/{key}/regenerate`` path masked."""
    return "/key/{key}/regenerate" if _named_in_path(path) is not None else path


def regenerate_target(path: str, body: Any) -> Any:
    """The key a regenerate request names: its body's ``key``, else the path's (as LiteLLM
    reads them); anything else for a request that names none (its handler says so)."""
    given = body.get("key") if isinstance(body, dict) else None
    return given if given is not None else _named_in_path(path)


def handle(keys: KeyStore, method: str, path: str, body: Any, query: str) -> tuple[int, Any]:
    """Serve one LiteLLM key request; returns (status, JSON body)."""
    if is_regenerate(path):
        if method != "POST":
            raise InvalidRequest(f"{path} takes POST", param=None)
        return _regenerate(keys, path, body)
    if path == "/key/info" and method == "GET":
        token = (parse_qs(query).get("key") or [""])[0]
        if not token:
            raise InvalidRequest("/key/info needs ?key=<the key>", param="key")
        rec = keys.find(token)
        return 200, {"key": token, "info": key_info(rec)}
    if method != "POST":
        raise InvalidRequest(f"{path} takes POST", param=None)
    data = body if isinstance(body, dict) else {}
    if body is not None and not isinstance(body, dict):
        raise InvalidRequest(f"{path} takes a JSON object")
    if path == "/key/generate":
        spec, ignored = _spec(data, now=time.time())
        token, rec = keys.create(parse_spec(spec))
        return 200, {"key": token, **key_info(rec), "ignored_fields": ignored}
    if path == "/key/update":
        given = data.get("key")
        if not isinstance(given, str) or not given:
            raise InvalidRequest("/key/update needs the key in 'key'", param="key")
        rec = keys.find(given)
        changes, ignored = _spec({k: v for k, v in data.items() if k != "key"}, now=time.time())
        rec = keys.update(rec.key_id, changes)
        return 200, {"key": given, **key_info(rec), "ignored_fields": ignored}
    if path == "/key/delete":
        names = data.get("keys")
        if not isinstance(names, list) or not all(isinstance(k, str) for k in names):
            raise InvalidRequest("/key/delete needs 'keys': a list of keys", param="keys")
        records = [keys.find(k) for k in names]  # all found before any is revoked
        for rec in records:
            keys.revoke(rec.key_id)
        return 200, {"deleted_keys": names}
    raise InvalidRequest(f"no route for {method} {path}")


def _regenerate(keys: KeyStore, path: str, body: Any) -> tuple[int, Any]:
    """A new secret for the key named, with the ``/key/update`` changes the body asks for,
    in one write (the old secret fails from then on)."""
    if body is not None and not isinstance(body, dict):
        raise InvalidRequest("/key/regenerate takes a JSON object")
    data = body or {}
    given = regenerate_target(path, data)
    if not isinstance(given, str) or not given:
        raise InvalidRequest(
            "/key/regenerate needs the key: in 'key', or in the path (/key/{key}/regenerate)",
            param="key",
        )
    if data.get("new_master_key") is not None:
        raise InvalidRequest(
            "new_master_key: the master key is server.master_key in the config; change it "
            "there and reload (virtual keys do not depend on it)",
            param="new_master_key",
        )
    if data.get("new_key") is not None:
        raise InvalidRequest(
            "new_key: secrets are generated by the proxy (256 random bits); leave new_key out "
            "and read the new secret from the answer's 'key'",
            param="new_key",
        )
    try:
        rec = keys.find(given)
    except InvalidRequest as exc:  # not echoed: what was sent may be some other secret
        if exc.status_code != 404:
            raise
        rec = None
    if rec is None or rec.revoked:  # a deleted key stays deleted: answered as a missing one
        raise _KeyNotFound("no such key: name it by the key or its key_id", param="key")
    fields = {k: v for k, v in data.items() if k not in ("key", "new_key", "new_master_key")}
    changes, ignored = _spec(fields, now=time.time())
    token, rec = keys.rotate(rec.key_id, changes)
    return 200, {"key": token, **key_info(rec), "ignored_fields": ignored}


def _spec(data: dict[str, Any], *, now: float) -> tuple[dict[str, Any], list[str]]:
    """Our KeySpec fields from LiteLLM's, and the LiteLLM fields that have no place."""
    spec: dict[str, Any] = {}
    ignored = []
    for k, v in data.items():
        if k in _RENAMED:
            if v is not None:
                spec[_RENAMED[k]] = v
        elif k == "duration":
            if v is not None:  # null: never expires
                try:
                    spec["expires_at"] = now + duration_seconds(str(v))
                except ValueError as exc:
                    raise InvalidRequest(f"duration: {exc}", param="duration") from None
        elif k == "budget_duration":
            if v is not None:
                try:
                    spec["budget_period"] = period_from_duration(str(v))
                except ValueError as exc:
                    raise InvalidRequest(
                        f"budget_duration: {exc}", param="budget_duration"
                    ) from None
        else:
            ignored.append(k)
    if isinstance(spec.get("max_budget"), int) and not isinstance(spec["max_budget"], bool):
        spec["max_budget"] = float(spec["max_budget"])
    return spec, sorted(ignored)


class _KeyNotFound(InvalidRequest):
    status_code = 404
    code = "key_not_found"


def key_info(rec: KeyRecord) -> dict[str, Any]:
    """A key in LiteLLM's field names, followed by ours."""
    s = rec.spec
    return {
        "key_alias": s.name,
        "user_id": s.user,
        "team_id": s.team,
        "models": s.models or [],
        "max_budget": s.max_budget,
        "budget_duration": s.budget_period,
        "rpm_limit": s.rpm,
        "tpm_limit": s.tpm,
        "expires": s.expires_at,
        "metadata": s.metadata,
        "blocked": rec.revoked,
        **rec.public(),
    }
