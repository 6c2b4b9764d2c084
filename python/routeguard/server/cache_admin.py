"""The cache's admin API (master key only): delete entries and correct cached answers.

``DELETE /admin/cache`` takes its filters as query parameters *or* a JSON body (not both):
``route``, ``tenant``, ``namespace``, ``prompt`` (any mix; an entry must match each one
given), or ``all: true`` (alone) to delete everything. ``POST /admin/cache/correct`` takes a
JSON body: ``prompt``, ``content`` (the new answer), and ``tenant`` or ``namespace`` (a
correction never crosses tenants unasked), optionally ``route``. Both go through
:class:`~routeguard.cache.layer.CacheLayer` and answer how many entries changed on this
instance; with the Redis backend the other instances apply the same change from the stream.
Bad input is a 400 naming the field; a correction that matches nothing is a 404.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from routeguard.cache.layer import CacheLayer
from routeguard.errors import CacheEntryNotFound, InvalidRequest
from routeguard.gateway import Gateway

log = logging.getLogger("routeguard.cache")
PATHS = ("/admin/cache", "/admin/cache/correct")
FILTERS = ("route", "tenant", "namespace", "prompt")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def allowed_method(path: str) -> str:
    """The one HTTP method ``path`` (one of :data:`PATHS`) accepts."""
    return "DELETE" if path == "/admin/cache" else "POST"


async def delete(gateway: Gateway, query: bytes, body: Mapping[str, Any]) -> dict[str, Any]:
    """``DELETE /admin/cache``: remove the entries the filters select."""
    layer = _layer(gateway)
    raw = _query(query)
    if raw and body:
        raise InvalidRequest(
            "give the filters as query parameters or as a JSON body, not both", param=None
        )
    filters = dict(raw or body)
    everything = _flag(filters.pop("all", False))
    chosen = _filters(gateway, filters, allowed=FILTERS)
    if everything and chosen:
        raise InvalidRequest(
            f"all: true deletes every entry; drop it, or drop {', '.join(chosen)}", param="all"
        )
    if not everything and not chosen:
        raise InvalidRequest(
            "say which entries to delete: route, tenant, namespace and/or prompt, "
            "or all: true for every entry",
            param="all",
        )
    removed = await layer.delete(**chosen)
    log.info("cache: admin delete by %s removed %d entries here", _named(chosen), removed)
    return {
        "object": "cache.deletion",
        "deleted": removed,
        "filters": chosen if chosen else {"all": True},
        **_reach(layer),
    }


async def correct(gateway: Gateway, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /admin/cache/correct``: replace the cached answer of one prompt."""
    layer = _layer(gateway)
    fields = dict(body)
    content = fields.pop("content", None)
    if not isinstance(content, str):
        raise InvalidRequest("content: expected the corrected answer as a string", param="content")
    chosen = _filters(gateway, fields, allowed=FILTERS)
    if "prompt" not in chosen:
        raise InvalidRequest(
            "prompt: the prompt whose answer to correct is required", param="prompt"
        )
    if "tenant" not in chosen and "namespace" not in chosen:
        raise InvalidRequest(
            "tenant: required (or namespace): a correction is served to one tenant's callers",
            param="tenant",
        )
    prompt = chosen.pop("prompt")
    replaced = await layer.correct(prompt, content, **chosen)
    log.info("cache: admin correction by %s replaced %d entries here", _named(chosen), replaced)
    if not replaced:
        where = ", ".join(f"{k} {v!r}" for k, v in chosen.items())
        raise CacheEntryNotFound(
            f"no cached answer for this prompt ({where}): nothing to correct", param="prompt"
        )
    return {
        "object": "cache.correction",
        "replaced": replaced,
        "filters": {**chosen, "prompt": prompt},
        **_reach(layer),
    }


def _layer(gateway: Gateway) -> CacheLayer:
    if gateway.cache is None:
        raise InvalidRequest(
            "the cache is off in this proxy's config (cache.enabled): nothing to change"
        )
    return gateway.cache


def _query(raw: bytes) -> dict[str, str]:
    """Query parameters, each given once (a repeated one is refused, not guessed at)."""
    out: dict[str, str] = {}
    for name, values in parse_qs(raw.decode("latin-1"), keep_blank_values=True).items():
        if len(values) > 1:
            raise InvalidRequest(f"{name}: given {len(values)} times; give it once", param=name)
        out[name] = values[0]
    return out


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise InvalidRequest(f"all: expected true or false, got {value!r}", param="all")


def _filters(
    gateway: Gateway, fields: Mapping[str, Any], *, allowed: tuple[str, ...]
) -> dict[str, str]:
    """The filters given, checked: known names, non-empty strings, a route this proxy has."""
    chosen: dict[str, str] = {}
    for name, value in fields.items():
        if name not in allowed:
            raise InvalidRequest(
                f"{name}: not a cache filter (use {', '.join(allowed)})", param=name
            )
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"{name}: expected a non-empty string", param=name)
        chosen[name] = value
    route = chosen.get("route")
    config = gateway.config
    if route is not None and route not in config.deployments and route not in config.routing:
        raise InvalidRequest(f"route: '{route}' is not a model alias of this proxy", param="route")
    return chosen


def _named(chosen: Mapping[str, str]) -> str:
    """The filters for a log line: tenant, route and namespace, never a prompt's text."""
    shown = [f"{k}={v!r}" if k != "prompt" else "prompt" for k, v in chosen.items()]
    return ", ".join(shown) or "all"


def _reach(layer: CacheLayer) -> dict[str, Any]:
    """Where the change applies: this instance, and the others through Redis."""
    if layer.cache.store is None:
        return {"backend": "memory", "note": "counts this instance (memory backend: no others)"}
    return {
        "backend": "redis",
        "note": "counts this instance; the change is in the Redis stream and every other "
        "instance applies it as it catches up",
    }
