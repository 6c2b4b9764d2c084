"""Readiness: whether this proxy instance can serve requests as configured right now.

``/health/liveness`` answers 200 while the process runs; ``/health/readiness`` runs
:func:`readiness`: the models loaded (``Gateway.warm_up`` done) and every shared store the
configuration uses answering a PING (the cache's Redis, the budget store, the key store),
each check under its own short timeout and all at once. A check is ``"ok"`` or says what is
wrong (``"loading"``, ``"unreachable (ConnectionError)"``); the names are fixed, so a probe's
body never carries a host or a secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routeguard.gateway import Gateway

CHECK_TIMEOUT_S = 1.0


async def _answers(ping: Callable[[], Awaitable[Any]]) -> str:
    """``"ok"`` when ``ping()`` returns within the timeout, else why not."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await ping()
    except TimeoutError:
        return "unreachable (timeout)"
    except Exception as exc:  # any failure to answer is "not ready", named by its type
        return f"unreachable ({type(exc).__name__})"
    return "ok"


async def readiness(gateway: Gateway) -> dict[str, str]:
    """Each readiness check of ``gateway`` and its state (``"ok"`` when ready)."""
    checks: dict[str, str] = {"models": "ok" if gateway.warmed_up else "loading"}
    pending: dict[str, Awaitable[str]] = {}
    cache = gateway.cache
    store = cache.cache.store if cache is not None else None
    redis = getattr(store, "redis", None)  # the Redis store; None in memory mode
    if redis is not None:
        pending["cache"] = _answers(redis.ping)
    budget_ping = getattr(gateway.budget.backend, "ping", None)
    if budget_ping is not None:
        pending["budget_store"] = _answers(budget_ping)
    keys = gateway.keys
    key_ping = getattr(keys, "ping", None)
    if keys.shared and key_ping is not None:
        pending["key_store"] = _answers(lambda: asyncio.to_thread(key_ping))
    if pending:
        states = await asyncio.gather(*pending.values())
        checks.update(zip(pending, states, strict=True))
    return checks
