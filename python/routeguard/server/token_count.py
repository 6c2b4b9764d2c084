"""``POST /v1/messages/count_tokens``: the upstream's own count where it has one, else ours.

Flow: check the body and the key's scope (a model out of scope is answered as a missing
one) -> one request against the caller's RPM limits (no tokens, no spend, no hold) -> the
deployment a chat request for the alias would try first (:meth:`Gateway.first_deployment`:
key scope, customer region, health and capacity, along the fallbacks) -> when its provider
counts tokens itself (Anthropic's API, Claude on Vertex AI), the request goes there with the
deployment's credentials and model and the client's ``anthropic-version``/``anthropic-beta``; an
upstream 4xx comes back as the upstream's error, in Anthropic's shape; a connection error,
timeout or 5xx falls back to the local count. Otherwise (another provider, a routed
route, nothing available now) the local estimate answers (``messages.count_tokens``).

Every answer says who counted: ``x-routeguard-count: upstream`` (with
``x-routeguard-deployment``) or ``local`` (with ``x-routeguard-count-reason``: ``provider``,
``route``, ``unavailable`` or ``upstream-error``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from routeguard import scrub
from routeguard.errors import (
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
)
from routeguard.providers import client_headers
from routeguard.providers.base import counts_tokens

if TYPE_CHECKING:
    from collections.abc import Iterable

    from routeguard.gateway import Gateway
    from routeguard.server.auth import Principal

log = scrub.guard(logging.getLogger("routeguard.server"))

Json = dict[str, Any]
Headers = list[tuple[bytes, bytes]]


def _local(body: Json, reason: str) -> tuple[Json, Headers]:
    from routeguard.server.messages import count_tokens

    return count_tokens(body), [(b"x-routeguard-count", b"local"),
                                (b"x-routeguard-count-reason", reason.encode())]  # fmt: skip


def _falls_back(exc: ProviderError) -> bool:
    """Whether the upstream failed in a way the local count can stand in for (it is down,
    slow or broken), rather than refusing this request (a 4xx the caller must see)."""
    return isinstance(exc, UpstreamConnectionError | UpstreamTimeout | UpstreamServerError) or (
        type(exc) is ProviderError  # a malformed answer
    )


async def count(
    gateway: Gateway, principal: Principal, headers: Iterable[tuple[bytes, bytes]], body: Any
) -> tuple[Json, Headers]:
    """The ``{"input_tokens": N}`` answer to a count_tokens body, and its response headers."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: expected the name of a model", param="model")
    key = principal.key
    if not gateway.serves(model) or (key is not None and not key.allows(model)):
        # the same answer either way: a key cannot probe for model names
        raise ModelNotFound(f"model '{model}' is not configured", param="model")
    meta = body.get("metadata")
    user = meta.get("user_id") if isinstance(meta, dict) else None
    end_user = user if isinstance(user, str) else None
    chain = gateway.budget.chain_for(principal.accounts, key, end_user)
    if chain:
        await gateway.budget.count_request(chain)
    picked = gateway.first_deployment(model, key, end_user)
    if picked is None:
        routed = model in gateway.routers and model not in gateway.balancers
        # Off the event loop: a large body costs real time to count.
        return await asyncio.to_thread(_local, body, "route" if routed else "unavailable")
    dep, provider = picked
    if not counts_tokens(provider):
        return await asyncio.to_thread(_local, body, "provider")
    sent = client_headers.from_headers(headers)
    if sent is not None:  # this request's task only
        client_headers.ANTHROPIC.set(sent)
    # count_tokens takes no metadata (the customer was read from it above).
    upstream = {k: v for k, v in body.items() if k != "metadata"}
    router = gateway.config.router
    timeout = min(dep.timeout or router.timeout, router.deadline)
    try:
        async with asyncio.timeout(timeout):
            tokens = await provider.count_tokens(upstream, dep, timeout)
    except TimeoutError:
        err: ProviderError = UpstreamTimeout(f"no token count within {timeout:g}s")
    except ProviderError as exc:
        if not _falls_back(exc):
            raise
        err = exc
    else:
        deployment = (b"x-routeguard-deployment", dep.id.encode())
        return {"input_tokens": tokens}, [(b"x-routeguard-count", b"upstream"), deployment]
    log.warning(
        "count_tokens on %s failed (%s: %s): answered with the local count",
        dep.id, type(err).__name__, err.detail,
    )  # fmt: skip
    return await asyncio.to_thread(_local, body, "upstream-error")
