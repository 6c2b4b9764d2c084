"""LiteLLM's key management endpoints over our key store, for clients and scripts written
against a LiteLLM proxy: ``POST /key/generate``, ``GET /key/info?key=``, ``POST
/key/update``, ``POST /key/delete``. Their fields map onto :class:`~routeguard.budget.keys.
KeySpec` (``duration`` -> ``expires_at``, ``budget_duration`` -> ``budget_period``,
``rpm_limit`` -> ``rpm``, ``key_alias`` -> ``name``, ``user_id``/``team_id`` -> ``user``/
``team``); fields we do not keep are named in the answer's ``ignored_fields``. Keys are
named by the key itself (or our ``key_id``), as LiteLLM does."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from routeguard.budget.keys import KeyRecord, KeyStore, parse_spec
from routeguard.config.budgets import duration_seconds, period_from_duration
from routeguard.errors import InvalidRequest

PATHS = ("/key/generate", "/key/info", "/key/update", "/key/delete")
_RENAMED = {"user_id": "user", "team_id": "team", "key_alias": "name", "rpm_limit": "rpm",
            "tpm_limit": "tpm", "max_budget": "max_budget", "models": "models",
            "metadata": "metadata"}  # fmt: skip


def handle(keys: KeyStore, method: str, path: str, body: Any, query: str) -> tuple[int, Any]:
    """Serve one LiteLLM key request; returns (status, JSON body)."""
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
