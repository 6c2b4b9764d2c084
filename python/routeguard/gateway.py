"""The Gateway: the one object users hold, and the path every request takes.

``chat(request)`` validates the OpenAI-shaped request, resolves the alias, and hands one
attempt function to ``Fallback.run``, which picks deployments (``routing.balance``),
retries and falls back. Non-streaming attempts return the provider's response; streaming
attempts open the upstream stream and wait for its first chunk, so fallback is possible
until the first chunk exists and never after. Around that call, in this order: the key's
scope (on every alias that may serve the request) -> admission (RPM/TPM and a budget hold
bounded from byte counts, before anything costly) -> cache -> route -> call -> settle ->
enforce. A stream is served through a ``routeguard.relay.Relay``, which settles its hold.
The proxy in ``routeguard.server`` is a thin ASGI adapter over ``chat_result``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from routeguard import config as config_mod
from routeguard.budget.bound import measure, measure_embeddings
from routeguard.budget.keys import KeyRecord, KeyStore
from routeguard.budget.layer import BudgetLayer
from routeguard.budget.ledger import Reservation
from routeguard.cache.layer import CacheLayer, Ticket, replay
from routeguard.cache.semantic import CacheHit, Embeds
from routeguard.chunks import to_chunks
from routeguard.config import Config, Deployment
from routeguard.enforce.proxy import build_enforcers
from routeguard.errors import (
    AllAttemptsFailed,
    AuthenticationError,
    BudgetExceeded,
    ContextWindowExceeded,
    ModelNotFound,
    PermissionDenied,
    ProviderError,
    RequestTooLarge,
    RouteguardError,
)
from routeguard.fallback import Fallback
from routeguard.providers import get_provider
from routeguard.providers.base import Json, Provider
from routeguard.relay import Closing, Relay, aclose, usage_of
from routeguard.result import ChatResult
from routeguard.routing.balance import Balancer
from routeguard.routing.router import RouteDecision, Router
from routeguard.schema import validate_chat, validate_embeddings

log = logging.getLogger("routeguard")

# How long a budget hold outlives its request's deadline: time to settle once the answer is in.
HOLD_MARGIN_S = 5.0


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
        self.enforcers = build_enforcers(config.enforce) if config.enforce else {}
        self.routers = {
            alias: Router.from_settings(alias, spec, embedder=router_embedder)
            for alias, spec in config.routing.items()
        }
        self.balancers = {
            alias: Balancer(deps, config.router.strategy)
            for alias, deps in config.deployments.items()
        }
        self.fallback = Fallback(
            config.router, self.balancers, config.fallbacks, config.context_window_fallbacks
        )
        self._scoped: dict[frozenset[str], Fallback] = {}  # a key scope -> its walker
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
        caller's virtual key) limits the models that may serve the request to its scope
        (PermissionDenied) and adds its own budget and RPM/TPM limits."""
        started = time.perf_counter()
        validate_chat(request)
        alias = request["model"]
        router = self.routers.get(alias)
        if alias not in self.balancers and router is None:
            raise ModelNotFound(
                f"model '{alias}' is not configured; available: {', '.join(self.models())}",
                param="model",
            )
        _require_scope(key, alias)
        if alias in self.config.input_limits:
            self._check_input_size(alias, measure(request).bytes)
        targets = self._targets(alias, router, key)
        enforcer = self.enforcers.get(alias)  # tool-call policy on the response
        stream = bool(request.get("stream"))
        # Admission first (rate limits and a hold bounded from byte counts), so a caller
        # out of budget costs no embedding, cache lookup or routing.
        chain: tuple[str, ...] = ()
        hold = None
        forced = None  # a budget-aware route sent to its cheap alias at admission
        if self.budget is not None:
            end_user = request.get("user")
            chain = self.budget.chain_for(
                accounts, key, end_user if isinstance(end_user, str) else None
            )
            if chain:
                hold, forced = await self._admit(chain, request, router, targets, key, stream)
        try:
            return await self._serve(
                request, alias, router, key, tenant, use_cache, metadata, enforcer, chain,
                hold, started, forced,
            )  # fmt: skip
        except BaseException:
            if hold is not None and self.budget is not None and hold.is_open:
                await self.budget.release(hold)
            raise

    async def _serve(
        self,
        request: Json,
        alias: str,
        router: Router | None,
        key: KeyRecord | None,
        tenant: str,
        use_cache: bool,
        metadata: Mapping[str, Any] | None,
        enforcer: Any,
        chain: tuple[str, ...],
        hold: Reservation | None,
        started: float,
        forced: RouteDecision | None = None,
    ) -> ChatResult:
        """Cache -> route -> call with fallback -> settle, for an admitted request (the
        caller releases ``hold`` if this raises before a stream takes it over)."""
        ticket = None
        if self.cache is not None and use_cache and (router is None or router.mode != "pinned"):
            if not self.cache.begun:  # no explicit start(): start on the first request's loop
                await self.cache.start()
            ticket = self.cache.ticket(request, alias, tenant, key.key_id if key else None)
            if ticket is not None:
                hit = await self.cache.lookup(ticket)
                if hit is not None:
                    if hold is not None and self.budget is not None:
                        await self.budget.release(hold)  # a hit costs nothing (rate: counted)
                    result = self._from_cache(request, alias, started, hit)
                    if enforcer is not None and result.response is not None:
                        result.response = await enforcer.aapply(result.response, metadata)
                    if enforcer is not None and result.stream is not None:
                        result.stream = enforcer.astream(result.stream, metadata)
                    return result
        route = None
        if forced is not None:
            alias, route = forced.target_alias, forced.reason
        elif router is not None:
            vector = ticket.vector if ticket is not None else None
            decision = await router.aroute(request, vector, metadata)
            if router.budget_aware is not None and chain and self.budget is not None:
                own = hold.amount if hold is not None else 0
                tight = await self.budget.pressured(chain, router.budget_aware, own)
                if tight is not None:
                    decision = router.downgrade(decision, tight)
            decision = _in_scope(router, decision, key)
            alias, route = decision.target_alias, decision.reason
        prompt_tokens = estimate_tokens(request["messages"])

        def fits(dep: Deployment) -> bool:
            return dep.context_window is None or prompt_tokens <= dep.context_window

        fallback = self._fallback_for(key)
        if request.get("stream"):
            try:
                result = await self._stream(request, alias, started, fits, ticket, hold, fallback)
            except (AllAttemptsFailed, ContextWindowExceeded) as exc:
                raise self._scope_error(exc, alias, key) from exc
            result.route = route
            if enforcer is not None and result.stream is not None:
                inner = result.stream
                result.stream = Closing(enforcer.astream(inner, metadata), inner)
            return result

        async def attempt(dep: Deployment, timeout: float) -> Json:
            return await self._providers[dep.provider].chat(request, dep, timeout)

        try:
            out = await fallback.run(alias, attempt, fits=fits)
        except (AllAttemptsFailed, ContextWindowExceeded) as exc:
            raise self._scope_error(exc, alias, key) from exc
        usage = usage_of(out.value.get("usage"))
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

    async def _admit(
        self,
        chain: tuple[str, ...],
        request: Json,
        router: Router | None,
        targets: list[str],
        key: KeyRecord | None,
        stream: bool,
    ) -> tuple[Reservation, RouteDecision | None]:
        """Rate limits and a hold of the worst case over every target. A budget-aware
        route that cannot afford that is held for its cheap alias alone and sent there."""
        assert self.budget is not None
        ttl = self._hold_ttl(stream)
        try:
            return await self.budget.admit(
                chain, request, self._reachable(targets, key), ttl_s=ttl
            ), None
        except BudgetExceeded as exc:
            cheap = router.cheap if router is not None and router.budget_aware is not None else None
            if cheap is None or targets == [cheap] or (key is not None and not key.allows(cheap)):
                raise
            held = await self.budget.reserve(
                chain, request, self._reachable([cheap], key), ttl_s=ttl
            )
            return held, RouteDecision(cheap, f"budget:{exc.account}")

    def _check_input_size(self, alias: str, size: int) -> None:
        """RequestTooLarge when ``size`` input bytes exceed ``routes.<alias>.max_input_bytes``."""
        limit = self.config.input_limits.get(alias)
        if limit is not None and size > limit:
            raise RequestTooLarge(
                f"the input to '{alias}' is {size} bytes; this model accepts at most {limit}",
                param="messages",
            )

    def _hold_ttl(self, stream: bool) -> float | None:
        """How long a hold must outlive its request: the overall deadline (and a stream's
        longest duration) plus a margin; None when the configured TTL is long enough."""
        r = self.config.router
        need = r.deadline + (r.max_stream_duration if stream else 0.0) + HOLD_MARGIN_S
        return need if need > self.config.budget.reservation_ttl else None

    def _targets(self, alias: str, router: Router | None, key: KeyRecord | None) -> list[str]:
        """The aliases a request for ``alias`` may be served by (a routed route: every
        target it can pick) within ``key``'s scope; PermissionDenied when none is left."""
        if router is None:
            return [alias]
        targets = sorted(router.targets())
        allowed = [t for t in targets if key is None or key.allows(t)]
        if not allowed:
            assert key is not None
            raise PermissionDenied(
                f"API key {key.key_id} may use '{alias}' but none of the models it routes "
                f"to ({', '.join(targets)}); add one to the key's models"
            )
        return allowed

    def _fallback_for(self, key: KeyRecord | None) -> Fallback:
        """The fallback walker for ``key``: fallbacks and context-window fallbacks outside
        its scope are dropped (cooldowns and balancers stay shared)."""
        models = key.spec.models if key is not None else None
        if models is None:
            return self.fallback
        scope = frozenset(models)
        fb = self._scoped.get(scope)
        if fb is None:
            fb = copy.copy(self.fallback)
            fb.fallbacks = _within(self.fallback.fallbacks, scope)
            fb.context_window_fallbacks = _within(self.fallback.context_window_fallbacks, scope)
            if len(self._scoped) >= 1024:
                self._scoped.clear()
            self._scoped[scope] = fb
        return fb

    def _scope_error(
        self, exc: AllAttemptsFailed | ContextWindowExceeded, alias: str, key: KeyRecord | None
    ) -> RouteguardError:
        """``exc``, or PermissionDenied when it failed only because the models that could
        have served the request (a longer context, a fallback) are outside ``key``'s scope."""
        if key is None or key.spec.models is None:
            return exc
        skipped = [a for a in self._aliases(alias, self.fallback) if not key.allows(a)]
        if not skipped:
            return exc
        only_context = isinstance(exc, ContextWindowExceeded) or all(
            isinstance(a.error, ContextWindowExceeded) or a.skipped is not None
            for a in exc.attempts
        )
        note = (
            f"nothing within API key {key.key_id}'s models could serve '{alias}': "
            f"{', '.join(skipped)} would be next but the key may not use "
            f"{'it' if len(skipped) == 1 else 'them'}"
        )
        if only_context:
            return PermissionDenied(f"{note} ({exc.message})")
        exc.message = f"{exc.message}; {note}"
        return exc

    def _from_cache(self, request: Json, alias: str, started: float, hit: CacheHit) -> ChatResult:
        resp = replay(hit)
        result = ChatResult(
            alias=alias,
            deployment=self._some_deployment(alias),
            attempts=0,
            upstream_s=0.0,
            started=started,
            usage=usage_of(resp.get("usage")),
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

    def _aliases(self, alias: str, fallback: Fallback) -> list[str]:
        """``alias``, its fallbacks and every context-window fallback on the way."""
        aliases = fallback.plan(alias)
        for a in list(aliases):
            aliases += [c for c in fallback.context_window_fallbacks.get(a, ()) if c not in aliases]
        return aliases

    def _reachable(self, targets: Sequence[str], key: KeyRecord | None) -> list[Deployment]:
        """Every deployment a request served by ``targets`` may end up on within ``key``'s
        scope (for the worst-case cost)."""
        fallback = self._fallback_for(key)
        seen: list[str] = []
        for t in targets:
            seen += [a for a in self._aliases(t, fallback) if a not in seen]
        return [d for a in seen for d in self.config.deployments.get(a, ())]

    async def _stream(
        self,
        request: Json,
        alias: str,
        started: float,
        fits: Any,
        ticket: Ticket | None,
        hold: Reservation | None,
        fallback: Fallback,
    ) -> ChatResult:
        async def attempt(dep: Deployment, timeout: float) -> tuple[Json, AsyncIterator[Json]]:
            it = self._providers[dep.provider].stream(request, dep, timeout).__aiter__()
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                raise ProviderError("upstream closed the stream before the first chunk") from None
            except BaseException:
                await aclose(it)
                raise
            return first, it

        out = await fallback.run(alias, attempt, fits=fits, first_byte=True)
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
        limit = self.config.router.max_stream_duration
        ends_at = asyncio.get_running_loop().time() + limit - (time.perf_counter() - started)
        result.stream = Relay(
            first,
            it,
            result=result,
            request=request,
            want_usage=want_usage,
            ends_at=ends_at,
            hold=hold,
            budget=self.budget,
            balancer=self.balancers[out.alias],
            cache=self.cache,
            ticket=ticket,
            settings=self.config,
        )
        return result

    async def embeddings(
        self,
        request: Json,
        *,
        accounts: Sequence[str | None] = (),
        key: KeyRecord | None = None,
    ) -> Json:
        """Embeddings in the OpenAI shape, through the same fallback machinery; scoped,
        rate-limited, held and settled like chat (``accounts`` and ``key`` as in
        :meth:`chat_result`)."""
        validate_embeddings(request)
        alias = request["model"]
        if alias not in self.balancers:
            raise ModelNotFound(f"model '{alias}' is not configured", param="model")
        _require_scope(key, alias)
        size = measure_embeddings(request)
        self._check_input_size(alias, size.bytes)
        hold = None
        if self.budget is not None:
            end_user = request.get("user")
            chain = self.budget.chain_for(
                accounts, key, end_user if isinstance(end_user, str) else None
            )
            if chain:
                hold = await self.budget.admit_size(
                    chain, size, 0, self._reachable([alias], key), ttl_s=self._hold_ttl(False)
                )

        async def attempt(dep: Deployment, timeout: float) -> Json:
            return await self._providers[dep.provider].embed(request, dep, timeout)

        try:
            out = await self._fallback_for(key).run(alias, attempt)
        except BaseException as exc:
            if hold is not None and self.budget is not None and hold.is_open:
                await self.budget.release(hold)
            if isinstance(exc, AllAttemptsFailed | ContextWindowExceeded):
                raise self._scope_error(exc, alias, key) from exc
            raise
        usage = usage_of(out.value.get("usage"))
        if "prompt_tokens" not in usage:  # not reported: charge (and report) the typical count
            dep = out.deployment
            usage["prompt_tokens"] = usage["total_tokens"] = size.typical(dep.provider, dep.model)
            out.value["usage"] = {"prompt_tokens": usage["prompt_tokens"],
                                  "total_tokens": usage["total_tokens"]}  # fmt: skip
        if hold is not None and self.budget is not None:
            await self.budget.settle(hold, out.deployment, usage)
        self.balancers[out.alias].record_tokens(out.deployment, usage.get("prompt_tokens", 0))
        return out.value

    async def start_cache(self) -> None:
        """Start the shared cache backend on the running loop (a no-op in memory mode; done
        by the first cacheable request otherwise; the proxy does it at startup)."""
        if self.cache is not None:
            await self.cache.start()

    async def warm_up(self) -> None:
        """Load the embedder and router models now (the proxy does it before it reports
        ready), so the first request that needs them costs what later ones do."""
        # The request schema's first check builds msgspec's type info (~1 ms), once.
        validate_chat({"model": "warm-up", "messages": [{"role": "user", "content": "hi"}]})
        if self.cache is not None:
            emb = self.cache.cache.embedder
            aembed = getattr(emb, "aembed", None)  # off the loop either way
            await (aembed(["warm up"]) if aembed else asyncio.to_thread(emb.embed, ["warm up"]))
        for router in self.routers.values():
            await router.warm_up()

    def approval_queues(self) -> list[Any]:
        """The pending-approval queues of enforced routes (for ``/admin/approvals``)."""
        qs = {id(e.approvals): e.approvals for e in self.enforcers.values() if e.approvals}
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


def _require_scope(key: KeyRecord | None, alias: str) -> None:
    """AuthenticationError for a revoked or expired ``key``; PermissionDenied unless it may
    use ``alias`` (the proxy's checks, for library callers passing ``key=`` too)."""
    if key is None:
        return
    if not key.usable(time.time()):
        what = "been revoked" if key.revoked else "expired"
        raise AuthenticationError(f"API key {key.key_id} has {what}")
    if not key.allows(alias):
        raise PermissionDenied(f"API key {key.key_id} may not use model '{alias}'")


def _in_scope(router: Router, decision: RouteDecision, key: KeyRecord | None) -> RouteDecision:
    """``decision``, or the nearest target within ``key``'s scope when it is outside (the
    cheap alias first, then the default, then any other target)."""
    if key is None or key.allows(decision.target_alias):
        return decision
    for alt in (router.cheap, router.default, *sorted(router.targets())):
        if alt is not None and key.allows(alt):
            return RouteDecision(alt, f"{decision.reason}>scope", decision.score)
    raise PermissionDenied(  # _targets already refused this; kept for safety
        f"API key {key.key_id} may not use model '{decision.target_alias}'"
    )


def _within(chains: Mapping[str, Sequence[str]], scope: frozenset[str]) -> dict[str, list[str]]:
    """Fallback chains keeping only the aliases in ``scope``."""
    return {a: [t for t in targets if t in scope] for a, targets in chains.items()}


async def _replay_stream(chunks: list[Json]) -> AsyncIterator[Json]:
    for c in chunks:
        yield c
