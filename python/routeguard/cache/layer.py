"""The cache as a layer of the gateway: which requests are cacheable, under which key, and
the lookup/store calls around the upstream call.

Per request: ``lookup`` decides cacheability (a single answer, a last message from the user
with text only, caching on for the alias, not opted out), builds the key parts (namespace =
tenant + alias + every answer-changing parameter; context = the messages before the last;
prompt = the last user message), tries the exact tier, then embeds the prompt once (off the
event loop) and searches. On a miss it returns a ``Ticket`` holding the vector, so
``store`` after a successful upstream call costs no second embedding.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.cache.keys import request_namespace
from routeguard.cache.semantic import CacheHit, Embeds, SemanticCache
from routeguard.cache.verify import HitVerifier
from routeguard.config import CacheSettings, Config

Json = dict[str, Any]


@dataclass(slots=True)
class Ticket:
    """A cacheable request that missed: what ``store`` needs to put the answer."""

    prompt: str
    namespace: str
    context: list[Json]
    settings: CacheSettings
    vector: npt.NDArray[np.float32] | None = None


class CacheLayer:
    """Lookup and store for the gateway, over one SemanticCache shared by all routes."""

    def __init__(self, config: Config, embedder: Embeds | None = None) -> None:
        self.config = config
        c = config.cache
        self.cache = SemanticCache(
            embedder,
            threshold=c.threshold,
            ttl=c.ttl,
            max_entries=c.max_entries,
            verifier=HitVerifier() if c.verify else None,
        )

    def ticket(self, request: Json, alias: str, tenant: str) -> Ticket | None:
        """The key parts if this request may be served from / stored in the cache."""
        settings = self.config.cache_for(alias)
        if not settings.enabled or request.get("n", 1) not in (1, None):
            return None
        messages = request["messages"]
        last = messages[-1]
        if last.get("role") != "user":
            return None
        prompt = _text(last.get("content"))
        if prompt is None:
            return None
        ns = request_namespace(tenant, alias, request)
        return Ticket(prompt, ns, list(messages[:-1]), settings)

    async def lookup(self, ticket: Ticket) -> CacheHit | None:
        """Exact tier, then (embedding once, in a worker thread) the semantic tier."""
        c = self.cache
        hit = c.get_exact(ticket.prompt, ticket.namespace, ticket.context)
        if hit is not None:
            return hit
        ticket.vector = (await asyncio.to_thread(c.embedder.embed, [ticket.prompt]))[0]
        return c.get(
            ticket.prompt,
            ticket.namespace,
            ticket.context,
            threshold=ticket.settings.threshold,
            vector=ticket.vector,
        )

    def store(self, ticket: Ticket, response: Json) -> None:
        """Keep a successful upstream answer for later requests."""
        if not response.get("choices"):
            return
        self.cache.put(
            ticket.prompt,
            response,
            ticket.namespace,
            ticket.context,
            ttl=ticket.settings.ttl,
            vector=ticket.vector,
        )


def replay(hit: CacheHit) -> Json:
    """A cached response as a fresh completion (new id and timestamp, same content)."""
    resp: Json = dict(hit.response)
    resp["id"] = f"chatcmpl-cache-{uuid.uuid4().hex[:24]}"
    resp["created"] = int(time.time())
    return resp


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text":
                return None  # images, audio, files: not something we match on
            parts.append(str(p.get("text", "")))
        return "\n".join(parts)
    return None
