"""What serving one request produced: the response or stream, the deployment that served it,
its usage and cost, and how it was obtained (cache, route, attempts)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from routeguard.deployment import Deployment
from routeguard.providers.base import Json
from routeguard.routing.balance import Charge

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(slots=True)
class ChatResult:
    """A served request: the response (or stream) and how it was obtained."""

    alias: str
    deployment: Deployment
    attempts: int
    upstream_s: float
    started: float
    response: Json | None = None
    stream: AsyncIterator[Json] | None = None
    usage: dict[str, int] = field(default_factory=dict)
    # "hit", "miss", "shadow" (a would-be hit sent upstream to check the cache's answer) or
    # "off" (not cacheable / caching disabled)
    cache: str = "off"
    cache_score: float | None = None
    cache_tier: str | None = None  # a hit's tier: "exact" or "semantic"
    cache_refused: bool = False  # the verifier refused a candidate at or above the threshold
    cache_key: str | None = None  # the entry a hit was served from
    route: str | None = None  # why the router chose the served alias (routed routes only)
    dropped: tuple[str, ...] = ()  # request fields the provider could not honour (drop_params)
    request_id: str | None = None  # the id feedback names (the proxy's x-routeguard-request-id)
    shadow: Any = None  # a routeguard.routing.shadow.ShadowJob not yet started (the proxy's)
    charge: Charge | None = None  # what the call counted against its deployment's minute
    # The shape of response / stream: "chat" (chat.completion and its chunks) or "responses"
    # (a Responses API request passed through: the response object or its events).
    wire: str = "chat"
    # The budget charge of this answer, deferred (chat_result(defer_settle=True)) to the
    # event loop's next turn: calling it makes it now (Gateway.finish), once.
    owed: Callable[[], None] | None = None
    # The usage the budget was charged when the provider's had no usable counts (an
    # estimate: see routeguard.relay.billable_usage); None when it was charged as reported.
    billed: dict[str, int] | None = None

    @property
    def cost(self) -> float:
        """Dollar cost from the usage seen so far (complete once a stream is drained), or
        from the estimate charged for it (:attr:`billed`); a cache hit costs nothing."""
        if self.cache == "hit":
            return 0.0
        usage = self.usage if self.billed is None else self.billed
        return self.deployment.cost(
            usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        )

    def overhead_ms(self, now: float | None = None) -> float:
        """Gateway time so far that was not spent waiting on upstream, in milliseconds."""
        now = time.perf_counter() if now is None else now
        return max(0.0, (now - self.started - self.upstream_s) * 1000)
