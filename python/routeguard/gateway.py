"""The Gateway: the one object users hold, and the path every request takes.

``chat(request)`` validates the OpenAI-shaped request, resolves the alias, and hands one
attempt function to ``Fallback.run``, which picks deployments (``routing.balance``),
retries and falls back. Non-streaming attempts return the provider's response; streaming
attempts open the upstream stream and wait for its first chunk, so fallback is possible
until the first chunk exists and never after. Later layers (cache, budgets, router,
enforcement) slot in around that call; the proxy in ``routeguard.server`` is a thin ASGI
adapter over ``chat_result``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routeguard import config as config_mod
from routeguard.budget.keys import KeyRecord, KeyStore
from routeguard.budget.layer import BudgetLayer, completion_estimate, prompt_estimate
from routeguard.budget.ledger import Reservation
from routeguard.cache.layer import CacheLayer, Ticket, replay
from routeguard.cache.semantic import CacheHit, Embeds
from routeguard.chunks import Assembler, to_chunks
from routeguard.config import Config, Deployment
from routeguard.errors import MidStreamError, ModelNotFound, ProviderError
from routeguard.fallback import Fallback
from routeguard.providers import get_provider
from routeguard.providers.base import Json, Provider
from routeguard.routing.balance import Balancer
from routeguard.routing.router import Router
from routeguard.schema import validate_chat, validate_embeddings

log = logging.getLogger("routeguard")


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
    cache: str = "off"  # "hit", "miss" or "off" (not cacheable / caching disabled)
    cache_score: float | None = None
    route: str | None = None  # why the router chose the served alias (routed routes only)

    @property
    def cost(self) -> float:
        """Dollar cost from the usage seen so far (complete once a stream is drained);
        a cache hit costs nothing."""
        if self.cache == "hit":
            return 0.0
        return self.deployment.cost(
            self.usage.get("prompt_tokens", 0), self.usage.get("completion_tokens", 0)
        )

    def overhead_ms(self, now: float | None = None) -> float:
        """Gateway time so far that was not spent waiting on upstream, in milliseconds."""
        now = time.perf_counter() if now is None else now
        return max(0.0, (now - self.started - self.upstream_s) * 1000)


def estimate_tokens(messages: list[Json]) -> int:
    """A cheap upper-bound-ish token estimate (~4 characters a token) for pre-call checks."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
        chars += 16  # role and framing
    return chars // 4


class Gateway:
    """Routes OpenAI-shaped requests to configured deployments with retries and fallback."""

    def __init__(self, config: Config, *, embedder: Embeds | None = None) -> None:
        self.config = config
        secret = config.server.key_hash_secret
        if config.server.key_store == "redis" and config.server.redis_url:
            from routeguard.budget.redis_keys import RedisKeyStore

            self.keys: KeyStore = RedisKeyStore(
                config.server.redis_url, secret=secret.get() if secret else None
            )
        else:
            self.keys = KeyStore(
                config.server.database or ":memory:", secret=secret.get() if secret else None
            )
        # Always on: virtual keys may carry their own budgets even with none configured.
        self.budget: BudgetLayer | None = BudgetLayer(config)
        if embedder is None:
            from routeguard.embed import default_embedder

            embedder = default_embedder(config.embedding.precision)
        caching = config.cache.enabled or any(c.enabled for c in config.route_cache.values())
        self.cache = CacheLayer(config, embedder) if caching else None
        # One embedder per request: routers embed with the cache's, so its vector is reused.
        router_embedder = self.cache.cache.embedder if self.cache is not None else embedder
        self.routers = {
            alias: Router.from_dict(alias, spec, embedder=router_embedder)
            for alias, spec in config.routing.items()
        }
        self.balancers = {
            alias: Balancer(deps, config.router.strategy)
            for alias, deps in config.deployments.items()
        }
        self.fallback = Fallback(
            config.router, self.balancers, config.fallbacks, config.context_window_fallbacks
        )
        self._providers: dict[str, Provider] = {}
        for deps in config.deployments.values():
            for d in deps:
                if d.provider not in self._providers:
                    self._providers[d.provider] = get_provider(d.provider)
        for w in config.warnings:
            log.warning("config: %s", w)

    @classmethod
    def from_config(
        cls, source: str | Path | Mapping[str, Any], *, embedder: Embeds | None = None
    ) -> Gateway:
        """Build a Gateway from a config file path or an already parsed mapping."""
        return cls(config_mod.load(source), embedder=embedder)

    def models(self) -> list[str]:
        """The aliases clients may request (models and routed routes)."""
        return self.config.aliases + [a for a in self.routers if a not in self.balancers]

    async def chat(self, request: Json) -> Json | AsyncIterator[Json]:
        """A chat completion in the OpenAI shape; an async iterator of chunks if ``stream``."""
        result = await self.chat_result(request)
        if result.stream is not None:
            return result.stream
        assert result.response is not None
        return result.response

    async def chat_result(
        self,
        request: Json,
        *,
        tenant: str = "default",
        use_cache: bool = True,
        accounts: Sequence[str | None] = (),
        metadata: Mapping[str, Any] | None = None,
        key: KeyRecord | None = None,
    ) -> ChatResult:
        """Like ``chat`` but returns the ChatResult with the serving details. ``tenant``
        isolates cache entries; ``use_cache=False`` skips the cache for this request;
        ``accounts`` names the budget accounts to charge (their ancestors are charged too);
        ``metadata`` (key, team, user, headers) feeds the routing rules; ``key`` (the
        caller's virtual key) adds the key's own budget and RPM/TPM limits."""
        started = time.perf_counter()
        validate_chat(request)
        alias = request["model"]
        router = self.routers.get(alias)
        if alias not in self.balancers and router is None:
            raise ModelNotFound(
                f"model '{alias}' is not configured; available: {', '.join(self.models())}",
                param="model",
            )
        enforcer = self.config.enforce.get(alias)  # tool-call policy on the response
        chain: tuple[str, ...] = ()
        if self.budget is not None:
            end_user = request.get("user")
            chain = self.budget.chain_for(
                accounts, key, end_user if isinstance(end_user, str) else None
            )
        ticket = None
        if self.cache is not None and use_cache and (router is None or router.mode != "pinned"):
            if not self.cache.begun:  # no explicit start(): start on the first request's loop
                await self.cache.start()
            ticket = self.cache.ticket(request, alias, tenant, key.key_id if key else None)
            if ticket is not None:
                hit = await self.cache.lookup(ticket)
                if hit is not None:
                    if chain and self.budget is not None:  # a hit counts against RPM too
                        await self.budget.check_rate(chain, request)
                    result = self._from_cache(request, alias, started, hit)
                    if enforcer is not None and result.response is not None:
                        result.response = await enforcer.aapply(result.response, metadata)
                    if enforcer is not None and result.stream is not None:
                        result.stream = enforcer.astream(result.stream, metadata)
                    return result
        route = None
        if router is not None:
            vector = ticket.vector if ticket is not None else None
            decision = await router.aroute(request, vector, metadata)
            if router.budget_aware is not None and chain and self.budget is not None:
                tight = await self.budget.pressured(chain, router.budget_aware)
                if tight is not None:
                    decision = router.downgrade(decision, tight)
            alias, route = decision.target_alias, decision.reason
        prompt_tokens = estimate_tokens(request["messages"])

        def fits(dep: Deployment) -> bool:
            return dep.context_window is None or prompt_tokens <= dep.context_window

        hold = None
        if chain and self.budget is not None:
            hold = await self.budget.admit(chain, request, self._reachable(alias))
        try:
            if request.get("stream"):
                result = await self._stream(request, alias, started, fits, ticket, hold)
                result.route = route
                if enforcer is not None and result.stream is not None:
                    result.stream = enforcer.astream(result.stream, metadata)
                return result

            async def attempt(dep: Deployment, timeout: float) -> Json:
                return await self._providers[dep.provider].chat(request, dep, timeout)

            out = await self.fallback.run(alias, attempt, fits=fits)
        except BaseException:
            if hold is not None and self.budget is not None:
                await self.budget.release(hold)
            raise
        usage = _usage(out.value.get("usage"))
        if hold is not None and self.budget is not None:
            await self.budget.settle(hold, out.deployment, usage)
        self.balancers[out.alias].record_tokens(out.deployment, usage.get("total_tokens", 0))
        if ticket is not None and self.cache is not None:
            self.cache.store(ticket, out.value)
        return ChatResult(
            alias=out.alias,
            deployment=out.deployment,
            attempts=len(out.attempts),
            upstream_s=out.upstream_s,
            started=started,
            response=await enforcer.aapply(out.value, metadata) if enforcer else out.value,
            usage=usage,
            cache="off" if ticket is None else "miss",
            route=route,
        )

    def _from_cache(self, request: Json, alias: str, started: float, hit: CacheHit) -> ChatResult:
        resp = replay(hit)
        result = ChatResult(
            alias=alias,
            deployment=self._some_deployment(alias),
            attempts=0,
            upstream_s=0.0,
            started=started,
            usage=_usage(resp.get("usage")),
            cache="hit",
            cache_score=hit.score,
        )
        if request.get("stream"):
            opts = request.get("stream_options")
            want_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            result.stream = _replay_stream(to_chunks(resp, include_usage=want_usage))
        else:
            result.response = resp
        return result

    def _some_deployment(self, alias: str) -> Deployment:
        """A deployment standing for ``alias`` (a routed route: one of its targets)."""
        if alias in self.balancers:
            return self.balancers[alias].deployments[0]
        return self.balancers[min(self.routers[alias].targets())].deployments[0]

    def _reachable(self, alias: str) -> list[Deployment]:
        """Every deployment a request for ``alias`` may end up on (for worst-case cost)."""
        aliases = self.fallback.plan(alias)
        for a in list(aliases):
            aliases += [
                c for c in self.config.context_window_fallbacks.get(a, ()) if c not in aliases
            ]
        return [d for a in aliases for d in self.config.deployments[a]]

    async def _stream(
        self,
        request: Json,
        alias: str,
        started: float,
        fits: Any,
        ticket: Ticket | None,
        hold: Reservation | None,
    ) -> ChatResult:
        async def attempt(dep: Deployment, timeout: float) -> tuple[Json, AsyncIterator[Json]]:
            it = self._providers[dep.provider].stream(request, dep, timeout).__aiter__()
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                raise ProviderError("upstream closed the stream before the first chunk") from None
            except BaseException:
                await _aclose(it)
                raise
            return first, it

        out = await self.fallback.run(alias, attempt, fits=fits)
        first, it = out.value
        opts = request.get("stream_options")
        want_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        result = ChatResult(
            alias=out.alias,
            deployment=out.deployment,
            attempts=len(out.attempts),
            upstream_s=out.upstream_s,
            started=started,
            cache="off" if ticket is None else "miss",
        )
        result.stream = self._relay(first, it, want_usage, result, ticket, hold, request)
        return result

    async def _relay(
        self,
        first: Json,
        it: AsyncIterator[Json],
        want_usage: bool,
        result: ChatResult,
        ticket: Ticket | None,
        hold: Reservation | None,
        request: Json,
    ) -> AsyncIterator[Json]:
        """Pass chunks on; note usage; turn late failures into MidStreamError; once the
        stream is complete, cache the assembled answer; settle the budget hold at the end
        (from usage, or from the text sent when the stream ended without usage)."""
        assembler = Assembler() if ticket is not None else None
        sent_chars = 0
        try:
            chunk: Json | None = first
            while chunk is not None:
                if assembler is not None:
                    assembler.feed(chunk)
                if hold is not None:
                    sent_chars += _delta_chars(chunk)
                usage = chunk.get("usage")
                if usage:
                    result.usage = _usage(usage)
                    self.balancers[result.alias].record_tokens(
                        result.deployment, result.usage.get("total_tokens", 0)
                    )
                    if not chunk.get("choices") and not want_usage:
                        chunk = await anext(it, None)
                        continue
                yield chunk
                chunk = await anext(it, None)
            if assembler is not None and ticket is not None and self.cache is not None:
                self.cache.store(ticket, assembler.result())
        except ProviderError as exc:
            raise MidStreamError(f"upstream stream failed after it started: {exc.message}") from exc
        finally:
            await _aclose(it)
            if hold is not None and self.budget is not None:
                usage = result.usage
                if "completion_tokens" not in usage:
                    usage = {
                        "prompt_tokens": prompt_estimate(request),
                        "completion_tokens": completion_estimate(sent_chars),
                    }
                await self.budget.settle(hold, result.deployment, usage)

    async def embeddings(self, request: Json) -> Json:
        """Embeddings in the OpenAI shape, through the same fallback machinery."""
        validate_embeddings(request)
        alias = request["model"]
        if alias not in self.balancers:
            raise ModelNotFound(f"model '{alias}' is not configured", param="model")

        async def attempt(dep: Deployment, timeout: float) -> Json:
            return await self._providers[dep.provider].embed(request, dep, timeout)

        out = await self.fallback.run(alias, attempt)
        return out.value

    async def start_cache(self) -> None:
        """Start the shared cache backend on the running loop (a no-op in memory mode; done
        by the first cacheable request otherwise; the proxy does it at startup)."""
        if self.cache is not None:
            await self.cache.start()

    def approval_queues(self) -> list[Any]:
        """The pending-approval queues of enforced routes (for ``/admin/approvals``)."""
        qs = {id(e.approvals): e.approvals for e in self.config.enforce.values() if e.approvals}
        return list(qs.values())

    async def aclose(self) -> None:
        """Release HTTP connections held for this event loop."""
        from routeguard.providers.http import close_session

        await close_session()
        if self.cache is not None:
            await self.cache.aclose()
        if self.budget is not None:
            await self.budget.close()
        if self.keys.shared:
            self.keys.close()  # its tailer thread and connections


def _delta_chars(chunk: Json) -> int:
    n = 0
    for c in chunk.get("choices") or ():
        delta = c.get("delta") or {}
        n += len(delta.get("content") or "")
        for tc in delta.get("tool_calls") or ():
            n += len((tc.get("function") or {}).get("arguments") or "")
    return n


async def _replay_stream(chunks: list[Json]) -> AsyncIterator[Json]:
    for c in chunks:
        yield c


def _usage(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {}
    return {k: v for k, v in usage.items() if isinstance(v, int)}


async def _aclose(it: AsyncIterator[Json]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()
