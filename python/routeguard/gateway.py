"""The Gateway: the one object users hold, and the path every request takes.

``chat_result`` is the pipeline, one method per stage, in this order:

1. ``_accept``: the request's shape, its alias, the caller's key scope (authenticated by the
   caller: the proxy's ``Gate``) and the route's input limit -> a :class:`Call`;
2. ``_admit``: RPM/TPM and a budget hold bounded from byte counts, before anything costly
   -> an :class:`Admission`;
3. ``_lookup``: the semantic cache (a hit skips to 7);
4. ``_route``: the routed route's choice, kept in the key's scope and near-budget aware;
5. ``_call`` / ``_call_stream``: the upstream call through ``Fallback.run`` (deployment
   choice, retries, cooldowns, fallbacks; a stream can fall back until its first chunk);
6. ``_settle``: charge the hold, count tokens, store in the cache (a stream's
   ``routeguard.relay.Relay`` does this when it ends);
7. ``_enforce``: the route's tool-call policy on the answer.

Recording (metrics, request log) is the proxy's, around this call. The proxy in
``routeguard.server`` is a thin ASGI adapter over ``chat_result``.

After it, every served request is remembered by id in a bounded index
(:class:`~routeguard.observe.feedback.RecentRequests`) so that :meth:`Gateway.feedback` can
check who may rate it and what served it; a route with ``shadow`` settings gets a sampled
share of its cheap answers checked against the strong alias in the background
(:mod:`routeguard.routing.shadow`), once the caller has its answer.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import msgspec

from routeguard import config as config_mod
from routeguard.budget.bound import image_tokens, measure, measure_embeddings
from routeguard.budget.directory import Directory
from routeguard.budget.keys import KeyRecord, KeyStore
from routeguard.budget.layer import BudgetLayer
from routeguard.budget.ledger import Reservation
from routeguard.cache.layer import Billing, CacheLayer, Ticket, replay
from routeguard.cache.semantic import CacheHit
from routeguard.chunks import response_as_chat, to_chunks
from routeguard.config import Config, Deployment
from routeguard.config.wildcards import best_match, is_priced
from routeguard.embed.base import Embedder, embed_off_loop
from routeguard.enforce.proxy import ResponseEnforcer, build_enforcers
from routeguard.errors import (
    AllAttemptsFailed,
    AuthenticationError,
    BudgetExceeded,
    ContextWindowExceeded,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    ProviderError,
    RequestNotFound,
    RequestTooLarge,
    RouteguardError,
    UpstreamBadRequest,
)
from routeguard.fallback import Fallback
from routeguard.messages import estimate_tokens
from routeguard.observe import spans
from routeguard.observe.feedback import (
    FeedbackStore,
    JsonlFeedback,
    MemoryFeedback,
    RecentRequests,
    Served,
    SqliteFeedback,
    Verdict,
    entry_for,
    feedback_path,
    parse_feedback,
)
from routeguard.providers import get_provider
from routeguard.providers.base import (
    Json,
    NativeRequest,
    Provider,
    ResponsesProvider,
    serves_responses,
    unhandled_params,
)
from routeguard.relay import (
    Closing,
    EventRelay,
    Relay,
    aclose,
    billable_usage,
    reported,
    responses_usage,
    usage_of,
)
from routeguard.result import ChatResult
from routeguard.routing.balance import Balancer
from routeguard.routing.router import RouteDecision, Router
from routeguard.routing.shadow import Shadows, make_job, sampled
from routeguard.routing.shared import SharedRouterState
from routeguard.schema import validate_chat, validate_embeddings

log = logging.getLogger("routeguard")
_enc = msgspec.json.Encoder()

# Names served by wildcard patterns kept at once (each holds a balancer and its deployments).
MAX_WILDCARD_NAMES = 1024
# How long a budget hold outlives its request's deadline: time to settle once the answer is in.
HOLD_MARGIN_S = 5.0


def _fits(request: Json, prompt_tokens: int | None = None) -> Callable[[Deployment], bool]:
    """Whether a deployment's context window holds the request's prompt (``prompt_tokens``,
    estimated when None)."""
    if prompt_tokens is None:
        prompt_tokens = estimate_tokens(request["messages"])

    def fits(dep: Deployment) -> bool:
        return dep.context_window is None or prompt_tokens <= dep.context_window

    return fits


def new_request_id() -> str:
    """A fresh request id: ``req_`` and 128 random bits in hex."""
    return "req_" + os.urandom(16).hex()


@dataclass(slots=True)
class Call:
    """One chat request on its way through the stages: what was asked, by whom, where it
    may go, and the policy its answer meets."""

    request: Json
    alias: str  # the alias asked for (a routed route's own name)
    router: Router | None
    key: KeyRecord | None
    tenant: str
    use_cache: bool
    accounts: Sequence[str | None]
    metadata: Mapping[str, Any] | None
    targets: list[str]  # what may serve it within the key's scope
    enforcer: ResponseEnforcer | None
    stream: bool
    started: float
    native: NativeRequest | None = None  # the request in the API it was made in (Responses)
    region: str | None = None  # the customer's allowed_model_region: deployments there only


@dataclass(slots=True)
class Admission:
    """What admission decided: the charged chain, its hold, and a route forced to its
    cheap alias because the strong one was not affordable."""

    chain: tuple[str, ...] = ()
    hold: Reservation | None = None
    forced: RouteDecision | None = None


class Gateway:
    """Routes OpenAI-shaped requests to configured deployments with retries and fallback."""

    def __init__(
        self, config: Config, *, embedder: Embedder | None = None, previous: Gateway | None = None
    ) -> None:
        """``previous``: the gateway this one replaces on a config reload; its key store,
        budget ledger and alerts, embedder, feedback index, and its cache and routers where
        their settings did not change, carry over (:mod:`routeguard.reload`)."""
        self.config = config
        secret = config.server.key_hash_secret
        if previous is not None:
            self.keys: KeyStore = previous.keys
        elif config.server.key_store == "redis" and config.server.redis_url:
            from routeguard.budget.redis_keys import RedisKeyStore

            self.keys = RedisKeyStore(
                config.server.redis_url, secret=secret.get() if secret else None
            )
        else:
            self.keys = KeyStore(
                config.server.database or ":memory:", secret=secret.get() if secret else None
            )
        # Always on: virtual keys may carry their own budgets even with none configured.
        if previous is not None:
            old = previous.budget
            self.budget: BudgetLayer = BudgetLayer(config, old.backend, alerter=old.alerter)
        else:
            self.budget = BudgetLayer(config)
        # LiteLLM's teams, users, customers and orgs, kept in the key store.
        self.directory = self.budget.directory = Directory(self.keys)
        same_embedding = previous is not None and previous.config.embedding == config.embedding
        if embedder is None and previous is not None and same_embedding:
            embedder = previous.embedder
        if embedder is None:
            from routeguard.embed import default_embedder

            embedder = default_embedder(config.embedding.precision)
        self.embedder: Embedder = embedder
        caching = config.cache.enabled or any(c.enabled for c in config.route_cache.values())
        if previous is not None and previous.cache is not None and _same_cache(previous, config):
            self.cache: CacheLayer | None = previous.cache
        else:
            self.cache = CacheLayer(config, embedder) if caching else None
        # One embedder per request: routers embed with the cache's, so its vector is reused.
        router_embedder = self.cache.cache.embedder if self.cache is not None else embedder
        self.enforcers = build_enforcers(config.enforce) if config.enforce else {}
        kept: dict[str, Router] = previous.routers if previous is not None else {}
        self.routers: dict[str, Router] = {
            alias: kept[alias]
            if previous is not None and alias in kept and previous.config.routing[alias] == spec
            else Router.from_settings(alias, spec, embedder=router_embedder)
            for alias, spec in config.routing.items()
        }
        # Cooldowns and per-minute usage shared on Redis (router_settings.redis_url), or None.
        self.shared = _shared_state(config, previous)
        self.balancers = _Balancers(self._register)
        for alias, deps in config.deployments.items():
            self.balancers[alias] = self._balancer(deps)
        # Names served by a wildcard pattern, least recently used first (bounded: any name
        # may match "*"); those named in fallbacks are kept for good.
        self._wild: OrderedDict[str, bool] = OrderedDict()  # name -> whether it is priced
        self._pinned: set[str] = set()
        self.fallback = Fallback(
            config.router,
            self.balancers,
            config.fallbacks,
            config.context_window_fallbacks,
            content_policy_fallbacks=config.content_policy_fallbacks,
            shared=self.shared,
        )
        self._scoped: dict[frozenset[str], Fallback] = {}  # a key scope -> its walker
        # Key id -> (its model list, its walker): a long list is not made a set per request.
        self._key_walkers: dict[str, tuple[list[str], Fallback]] = {}
        # Alias -> (its balancer, one deployment per distinct price): see _priced.
        self._prices: dict[str, tuple[Balancer, list[Deployment]]] = {}
        # (walker id, *targets) -> (the walker, what _reachable found for them).
        self._reach: dict[tuple[Any, ...], tuple[Fallback, list[Deployment]]] = {}
        self._unreported: set[str] = set()  # deployments seen answering without usage
        self.warmed_up = False  # warm_up() has loaded the models (the proxy's readiness)
        self._providers: dict[str, Provider] = {}
        templates = [d for w in config.wildcards for d in w.templates]
        for d in [*(d for deps in config.deployments.values() for d in deps), *templates]:
            if d.provider not in self._providers:
                self._providers[d.provider] = get_provider(d.provider)
        chains = (config.fallbacks, config.context_window_fallbacks,
                  config.content_policy_fallbacks)  # fmt: skip
        named = {a for c in chains for k, v in c.items() for a in (k, *v)}
        for name in sorted(named | set(config.router.default_fallbacks)):
            if name not in self.balancers and self._register(name) is not None:
                self._pinned.add(name)
        for w in config.warnings:
            log.warning("config: %s", w)
        # Request id -> what served it, for feedback.
        self.recent: RecentRequests = previous.recent if previous is not None else RecentRequests()
        # Built on first use (feedback_store).
        self._feedback: FeedbackStore | None = previous._feedback if previous is not None else None
        if self.cache is not None:
            self.cache.judge_call = self._judge_call
        # Where rows of calls made after the answer (a cache judge's) go: the proxy sets it
        # to its spend log.
        self.spend_sink: Callable[[dict[str, Any]], None] | None = None
        shadowed = any(r.shadow is not None for r in config.routing.values())
        self.shadows = Shadows(self._shadow_call, self._shadow_verdict) if shadowed else None

    @classmethod
    def from_config(
        cls, source: str | Path | Mapping[str, Any], *, embedder: Embedder | None = None
    ) -> Gateway:
        """Build a Gateway from a config file path or an already parsed mapping."""
        return cls(config_mod.load(source), embedder=embedder)

    def models(self) -> list[str]:
        """The aliases clients may request (models and routed routes), then the wildcard
        patterns (``*``, ``openai/*``...) serving any name they match."""
        return (
            self.config.aliases
            + [a for a in self.routers if a not in self.balancers]
            + [w.pattern for w in self.config.wildcards]
        )

    def serves(self, name: str) -> bool:
        """Whether a request for ``name`` has something to serve it: an alias, a routed
        route, or a wildcard pattern matching it (the name is then registered)."""
        if name in self.routers or name in self.balancers:
            if name in self._wild:
                self._wild.move_to_end(name)
            return True
        return self._register(name) is not None

    def _register(self, name: str) -> Balancer | None:
        """The balancer of ``name`` built from the most specific wildcard matching it (None
        when none does); the least recently used such name is forgotten past the bound."""
        if "*" in name:  # a pattern is never a model name: "*" is not a literal alias
            return None
        w = best_match(self.config.wildcards, name)
        if w is None:
            return None
        deps = w.concrete(name)
        balancer = self._balancer(deps)
        dict.__setitem__(self.balancers, name, balancer)
        self._wild[name] = is_priced(deps)
        while len(self._wild) > MAX_WILDCARD_NAMES:
            old = next(iter(self._wild))
            if old in self._pinned:
                self._wild.move_to_end(old)
                if all(n in self._pinned for n in self._wild):
                    break
                continue
            del self._wild[old]
            self.balancers.pop(old, None)
        if log.isEnabledFor(logging.INFO):
            log.info("wildcard %r serves %r as %s", w.pattern, name, deps[0].model)
        return balancer

    def _balancer(self, deps: list[Deployment]) -> Balancer:
        """A balancer over ``deps`` whose cooldowns and usage are read from Redis when the
        routing state is shared."""
        balancer = Balancer(deps, self.config.router.strategy, usage=self.shared)
        if self.shared is not None:
            self.shared.watch((d.id for d in deps), usage=balancer.counting)
        return balancer

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
        request_id: str | None = None,
        defer_shadow: bool = False,
        defer_settle: bool = False,
        native: NativeRequest | None = None,
    ) -> ChatResult:
        """Like ``chat`` but returns the ChatResult with the serving details. ``tenant``
        isolates cache entries; ``use_cache=False`` skips the cache for this request;
        ``accounts`` names the budget accounts to charge (their ancestors are charged too);
        ``metadata`` (key, team, user, headers) feeds the routing rules; ``key`` (the
        caller's virtual key, authenticated by the caller) limits the models that may serve
        the request to its scope (PermissionDenied) and adds its own budget and limits.
        ``request_id`` names the request for :meth:`feedback` (one is made when None; it is
        ``result.request_id``); a sampled shadow check starts before this returns unless
        ``defer_shadow`` (the proxy starts ``result.shadow`` once the answer is sent).
        ``defer_settle``: with an in-process budget, an answer's charge waits for the
        event loop's next turn or :meth:`finish`, whichever comes first (the proxy calls it
        once the answer is written: off the caller's latency; a request that waits on
        anything, an approval or a slow client, is charged meanwhile). A shared budget
        (Redis) is charged before this returns, as without it.
        ``native``: the request as made in the Responses API (``request`` is its chat
        translation): a deployment whose provider serves that API gets it passed through,
        and ``result.wire`` is then "responses" (the answer or events in that API's shape).

        The stages, in order; each is one method below."""
        call = self._accept(request, tenant, use_cache, accounts, metadata, key)
        call.native = native
        if native is not None and native.untranslatable is not None:
            call.use_cache = False  # its chat translation is not the whole question
        request_id = request_id or new_request_id()
        admission = await self._admit(call)
        owed: ChatResult | None = None  # an answer whose charge is deferred
        try:
            ticket, hit = await self._lookup(call)
            if ticket is not None:  # a judge model comparing its answer is charged as it was
                ticket.billing = Billing(admission.chain, request_id, _owner(call.key))
            if hit is not None:
                await self._release(admission)  # a hit costs nothing (its rate is counted)
                result = await self._enforce(call, self._from_cache(call, hit))
            else:
                alias, reason = await self._route(call, admission, ticket)
                if call.stream:  # the relay settles, stores and records as the client reads
                    result = await self._call_stream(call, alias, ticket, admission)
                else:
                    result = await self._call(call, alias, ticket)
                    if defer_settle and admission.hold is not None and self.budget.local:
                        owed = result
                        result.owed = self._defer_charge(admission.hold, result, call.request)
                    await self._settle(call, admission, result, ticket)
                result.route = reason
                result = await self._enforce(call, result)
            await self._remember(call, result, request_id)
        except BaseException:
            if owed is not None:  # the upstream answered: what it cost is charged, not freed
                try:
                    self.finish(owed)
                except Exception:  # not in place of the error being raised: logged
                    log.exception("request %s: its answer's charge failed", request_id)
            await self._release(admission)
            raise
        if result.shadow is not None and not defer_shadow:
            self.start_shadow(result)
        return result

    # ----------------------------------------------------------------- the stages

    def _accept(
        self,
        request: Json,
        tenant: str,
        use_cache: bool,
        accounts: Sequence[str | None],
        metadata: Mapping[str, Any] | None,
        key: KeyRecord | None,
    ) -> Call:
        """Validate: the request's shape, its alias, the key's scope and the route's input
        limit; the targets the key may be served by."""
        started = time.perf_counter()
        validate_chat(request)
        alias = request["model"]
        router = self.routers.get(alias)
        _require_usable(key)
        if (router is None and not self.serves(alias)) or (
            key is not None and not key.allows(alias)
        ):
            # The same answer whether the model is missing or outside the key's scope, listing
            # only what the key may use: a key cannot probe for other model names.
            usable = [m for m in self.models() if key is None or key.allows(m)]
            raise ModelNotFound(
                f"model '{alias}' is not configured; available: {', '.join(usable)}",
                param="model",
            )
        if alias in self.config.input_limits:
            self._check_input_size(alias, measure(request).bytes)
        return Call(
            request=request,
            alias=alias,
            router=router,
            key=key,
            tenant=tenant,
            use_cache=use_cache,
            accounts=accounts,
            metadata=metadata,
            targets=self._targets(alias, router, key),
            enforcer=self.enforcers.get(alias),
            stream=bool(request.get("stream")),
            started=started,
        )

    async def _admit(self, call: Call) -> Admission:
        """Rate limits and a budget hold of the worst case over every target, before
        anything costly. A budget-aware route that cannot afford that is held for its cheap
        alias alone and sent there."""
        end_user = call.request.get("user")
        chain = self.budget.chain_for(
            call.accounts, call.key, end_user if isinstance(end_user, str) else None
        )
        call.region = self.budget.customer_region(end_user if isinstance(end_user, str) else None)
        if call.region is not None:  # a shared answer, or a check of one, could cross regions
            call.use_cache = False
        if not chain:
            return Admission()
        if self._wild.get(call.alias) is False:
            raise InvalidRequest(
                f"model '{call.alias}' (served by a wildcard deployment) has no known price, "
                "so its budget cannot be enforced: set input_cost_per_token and "
                "output_cost_per_token on the wildcard deployment",
                param="model",
            )
        ttl = self._hold_ttl(call.stream)
        try:
            reachable = self._reachable(call.targets, call.key)
            if self.budget.local:  # in process: no coroutine to make
                held = self.budget.admit_now(chain, call.request, reachable, ttl_s=ttl)
            else:
                held = await self.budget.admit(chain, call.request, reachable, ttl_s=ttl)
            return Admission(chain, held)
        except BudgetExceeded as exc:
            router, key = call.router, call.key
            cheap = router.cheap if router is not None and router.budget_aware is not None else None
            if (
                cheap is None
                or call.targets == [cheap]
                or (key is not None and not key.allows(cheap))
            ):
                raise
            reachable = self._reachable([cheap], key)
            held = await self.budget.reserve(chain, call.request, reachable, ttl_s=ttl)
            return Admission(chain, held, RouteDecision(cheap, f"budget:{exc.account}"))

    async def _lookup(self, call: Call) -> tuple[Ticket | None, CacheHit | None]:
        """The cache: the request's ticket (its vector, reused by the router) and a hit,
        for cacheable requests on routes that are not pinned."""
        pinned = call.router is not None and call.router.mode == "pinned"
        if self.cache is None or not call.use_cache or pinned:
            return None, None
        if not self.cache.begun:  # no explicit start(): start on the first request's loop
            await self.cache.start()
        key_id = call.key.key_id if call.key else None
        ticket = self.cache.ticket(call.request, call.alias, call.tenant, key_id)
        if ticket is None:
            return None, None
        with spans.stage("routeguard.cache.lookup") as stage:  # tracing.stages only
            hit = await self.cache.lookup(ticket)
            if stage:
                stage.note(_lookup_attributes(ticket, hit))
        return ticket, hit

    async def _route(
        self, call: Call, admission: Admission, ticket: Ticket | None
    ) -> tuple[str, str | None]:
        """The alias to call and why (None for a plain alias): the admission's forced
        choice, else the router's, downgraded near a budget and kept in the key's scope."""
        if admission.forced is not None:
            return admission.forced.target_alias, admission.forced.reason
        router = call.router
        if router is None:
            return call.alias, None
        vector = ticket.vector if ticket is not None else None
        with spans.stage("routeguard.route") as stage:  # tracing.stages only
            decision = await router.aroute(call.request, vector, call.metadata)
            if router.budget_aware is not None and admission.chain:
                own = admission.hold.amount if admission.hold is not None else 0
                tight = await self.budget.pressured(admission.chain, router.budget_aware, own)
                if tight is not None:
                    decision = router.downgrade(decision, tight)
            decision = _in_scope(router, decision, call.key)
            if stage:
                stage.note({"routeguard.route.target": decision.target_alias,
                            "routeguard.route.reason": decision.reason})  # fmt: skip
        return decision.target_alias, decision.reason

    async def _call(self, call: Call, alias: str, ticket: Ticket | None) -> ChatResult:
        """The upstream call through fallback (retries, cooldowns, context-window moves)."""
        request, native = call.request, call.native

        async def attempt(dep: Deployment, timeout: float) -> Json:
            provider = self._providers[dep.provider]
            if _passes_through(provider, native, dep):
                assert native is not None
                return await provider.responses(native.body, dep, timeout)
            _translatable(native, dep)
            return await provider.chat(request, dep, timeout)

        tokens = estimate_tokens(request["messages"])
        fallback = self._fallback_for(call.key)
        allowed = fallback.region_filter(alias, call.region, _customer(call.request))
        try:
            out = await fallback.run(
                alias, attempt, fits=_fits(request, tokens), tokens=tokens, allowed=allowed
            )
        except (AllAttemptsFailed, ContextWindowExceeded) as exc:
            raise self._scope_error(exc, alias, call.key) from exc
        passed = _passes_through(self._providers[out.deployment.provider], native, out.deployment)
        return ChatResult(
            alias=out.alias,
            deployment=out.deployment,
            attempts=len(out.attempts),
            upstream_s=out.upstream_s,
            started=call.started,
            response=out.value,
            usage=(responses_usage if passed else usage_of)(out.value.get("usage")),
            cache="off" if ticket is None else ticket.state,
            cache_refused=ticket is not None and ticket.refused,
            dropped=() if passed else self._dropped(request, out.deployment),
            wire="responses" if passed else "chat",
            charge=out.charge,
        )

    async def _settle(
        self, call: Call, admission: Admission, result: ChatResult, ticket: Ticket | None
    ) -> None:
        """Charge what the answer cost (unless its charge already runs: see :meth:`finish`),
        count its tokens, and cache it (before enforcement, which is applied per caller)."""
        if result.owed is None:
            usage = self._bill(call.request, result)
            if admission.hold is not None:
                await self.budget.settle(admission.hold, result.deployment, usage)
        tokens = result.usage.get("total_tokens", 0)
        self.balancers[result.alias].record_tokens(result.deployment, tokens, result.charge)
        stored = _chat_view(result)
        if ticket is not None and self.cache is not None and stored is not None:
            self.cache.store(ticket, stored)

    async def _enforce(self, call: Call, result: ChatResult) -> ChatResult:
        """The route's tool-call policy on the response (or, as it streams, the chunks)."""
        enforcer = call.enforcer
        if enforcer is None:
            return result
        if result.wire == "responses":  # a passed-through Responses answer: its output items
            from routeguard.enforce import responses as items

            if result.response is not None:
                result.response = await items.enforce_response(
                    enforcer, result.response, call.metadata
                )
            if result.stream is not None:
                inner = result.stream
                result.stream = Closing(items.enforce_events(enforcer, inner, call.metadata), inner)
            return result
        if result.response is not None:
            result.response = await enforcer.aapply(result.response, call.metadata)
        if result.stream is not None:
            inner = result.stream
            result.stream = Closing(enforcer.astream(inner, call.metadata), inner)
        return result

    def _defer_charge(
        self, hold: Reservation, result: ChatResult, request: Json
    ) -> Callable[[], None]:
        """Charge ``hold`` for ``result`` (in-process budget) at the event loop's next turn,
        that is once the request has written its answer or waits on anything (an approval,
        a slow client): never after the hold's TTL. The returned call makes the charge at
        once instead; either way it is made once."""
        assert self.budget is not None
        settle, made = self.budget.settle_now, False

        def charge() -> None:
            nonlocal made
            if not made:
                made = True
                handle.cancel()
                settle(hold, result.deployment, self._bill(request, result))

        handle = asyncio.get_running_loop().call_soon(charge)
        return charge

    def _bill(self, request: Json, result: ChatResult) -> dict[str, int]:
        """The usage ``result`` is charged (:meth:`_billed`), kept as ``result.billed`` when
        it is an estimate: what reports cost the answer at, budget or not."""
        usage = self._billed(request, result.deployment, result.usage, result.response)
        if usage is not result.usage:
            result.billed = usage
        return usage

    def _billed(
        self, request: Json, dep: Deployment, usage: dict[str, int], answer: Json | None
    ) -> dict[str, int]:
        """The usage an answer of ``dep`` is charged and reported at: the provider's, or for
        one without usable counts an estimate (:func:`~routeguard.relay.billable_usage`; the
        answer's JSON at ~4 bytes a token), logged once per deployment."""
        if reported(usage):
            return usage
        if dep.id not in self._unreported:
            if len(self._unreported) < 10_000:
                self._unreported.add(dep.id)
            log.warning(
                "deployment %s answered without usable token counts (usage: %s): its cost and "
                "budget charges are estimated from the request and the answer",
                dep.id, {k: usage[k] for k in ("prompt_tokens", "completion_tokens") if k in usage},
            )  # fmt: skip
        answer = answer or {}
        sent = (len(_enc.encode(answer.get("choices") or answer.get("output") or [])) + 3) // 4
        return billable_usage(usage, request, dep, self.config.budget.default_max_tokens, sent)

    def finish(self, result: ChatResult) -> None:
        """Make the charge of ``result`` now if it was deferred (``chat_result(...,
        defer_settle=True)``) and not made yet; a no-op otherwise."""
        charge, result.owed = result.owed, None
        if charge is not None:
            charge()

    async def _release(self, admission: Admission) -> None:
        """Give back a hold nothing will settle (a cache hit, or a request that failed
        before a stream took the hold over)."""
        if admission.hold is not None and admission.hold.is_open:
            await self.budget.release(admission.hold)

    # ----------------------------------------------------------------- feedback, shadows

    async def _remember(self, call: Call, result: ChatResult, request_id: str) -> None:
        """Index the served request for feedback (a hit in the shared cache too, before it
        is answered), and sample it for a shadow check."""
        result.request_id = request_id
        key_id = call.key.key_id if call.key is not None else None
        served = Served(
            key_id, call.alias, result.alias, result.route, result.cache, result.cache_key
        )
        self.recent.add(request_id, served)
        if result.cache == "hit" and self.cache is not None:  # feedback may reach another instance
            await self.cache.share_hit(request_id, dataclasses.asdict(served))
        router = call.router
        if self.shadows is None or router is None or result.alias != router.cheap:
            return
        shadow = self.config.routing[call.alias].shadow
        if shadow is None or result.cache == "hit" or not sampled(request_id, shadow.share):
            return
        assert router.strong is not None
        key = call.key
        if key is not None and not (key.allows(router.strong) and key.allows(shadow.judge)):
            return  # the prompt may go only where the caller's key may send it
        answer = _chat_view(result)  # a passed-through Responses answer, in chat form
        if result.wire != "chat" and answer is None:
            return  # no chat form to judge (reasoning items, built-in tools...)
        result.shadow = make_job(
            request_id, call.alias, call.request, answer, router.strong,
            shadow.judge, shadow.max_concurrent,
        )  # fmt: skip

    def start_shadow(self, result: ChatResult) -> bool:
        """Start ``result``'s sampled shadow check in the background (on the running loop);
        False when there is none or its route has ``max_concurrent`` checks in flight."""
        job, result.shadow = result.shadow, None
        if job is None or self.shadows is None:
            return False
        return self.shadows.start(job)

    async def _side_call(self, alias: str, request: Json) -> tuple[Json, Deployment, Json]:
        """One call of ``alias`` itself (never its fallbacks: a caller's key was checked for
        that alias, not for what it falls back to), its tokens counted: the response, the
        deployment that gave it and its usage."""

        async def attempt(dep: Deployment, timeout: float) -> Json:
            return await self._providers[dep.provider].chat(request, dep, timeout)

        only = copy.copy(self.fallback)
        only.fallbacks, only.context_window_fallbacks = {}, {}
        only.content_policy_fallbacks, only.default_fallbacks = {}, ()
        tokens = estimate_tokens(request["messages"])
        out = await only.run(alias, attempt, fits=_fits(request, tokens), tokens=tokens)
        usage = usage_of(out.value.get("usage"))
        self.balancers[out.alias].record_tokens(
            out.deployment, usage.get("total_tokens", 0), out.charge
        )
        return out.value, out.deployment, usage

    async def _shadow_call(self, alias: str, request: Json) -> tuple[Json, float]:
        """One shadow call (the strong answer, the judge's verdict) through fallback, charged
        to no budget account: the response and its cost in dollars."""
        value, dep, usage = await self._side_call(alias, request)
        return value, dep.cost(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))

    async def _judge_call(self, alias: str, request: Json, ticket: Ticket) -> Json:
        """A cache judge model's answer (``cache.judge: <alias>``), charged once to
        ``cache.judge_account`` or else to the accounts the compared request was charged
        to (BudgetExceeded, and no call, when they cannot afford it), and written to the
        spend log as that request's ``judge`` row."""
        billing = ticket.billing or Billing()
        account = ticket.settings.judge_account
        chain = self.budget.chain_for((account,)) if account is not None else billing.chain
        hold = None
        if chain:
            hold = await self.budget.reserve(chain, request, self._reachable([alias], None))
        started = time.perf_counter()
        try:
            value, dep, usage = await self._side_call(alias, request)
        except BaseException:
            if hold is not None:
                await self.budget.release(hold)
            raise
        usage = self._billed(request, dep, usage, value)
        if hold is not None:
            await self.budget.settle(hold, dep, usage)
        sink = self.spend_sink
        if sink is not None:
            prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
            sink({
                "ts": time.time(), "request_id": f"{billing.request_id}:judge",
                **billing.owner, "route": ticket.alias, "model": alias, "deployment": dep.id,
                "provider": dep.provider, "prompt_tokens": prompt,
                "completion_tokens": completion, "cost_usd": dep.cost(prompt, completion),
                "status": 200, "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "cache": "judge",
            })  # fmt: skip
        return value

    def _shadow_verdict(self, request_id: str, judge: str, verdict: str, cost: float) -> None:
        """Record a judge's verdict ("A": the cheap answer better, "B": the strong one,
        "TIE") as feedback on ``request_id``."""
        served = self.recent.get(request_id)
        if served is None:  # forgotten while the check ran (a very busy gateway)
            return
        entry = entry_for(Verdict(request_id, strong_needed=verdict == "B"), served, "shadow")
        entry.update(
            judge={"A": "cheap", "B": "strong"}.get(verdict, "tie"),
            judge_model=judge,
            shadow_cost_usd=cost,
        )
        self.feedback_store.record(entry)

    @property
    def feedback_store(self) -> FeedbackStore:
        """Where feedback goes: next to the request log (``<request_log>.feedback.jsonl``),
        else the ``feedback`` table of ``server.database``, else memory. The proxy sets it
        to the file next to the log it writes."""
        if self._feedback is None:
            obs = self.config.observability
            db = self.config.server.database
            if obs.request_log:
                self._feedback = JsonlFeedback(
                    feedback_path(obs.request_log),
                    max_bytes=obs.request_log_max_bytes,
                    backups=obs.request_log_backups,
                )
            elif db and db != ":memory:":
                self._feedback = SqliteFeedback(db)
            else:
                self._feedback = MemoryFeedback()
        return self._feedback

    @feedback_store.setter
    def feedback_store(self, store: FeedbackStore) -> None:
        if self._feedback is not None and self._feedback is not store:
            self._feedback.close()
        self._feedback = store

    def feedback(
        self,
        request_id: str,
        *,
        rating: str | None = None,
        score: float | None = None,
        strong_needed: bool | None = None,
        comment: str | None = None,
        key: KeyRecord | None = None,
    ) -> dict[str, Any]:
        """Record an outcome for a served request (exactly one of ``rating`` "up"/"down",
        ``score`` in [0, 1], ``strong_needed``); the stored entry. InvalidRequest on a bad
        value, RequestNotFound for an id not served (or forgotten: the index keeps the last
        50,000), PermissionDenied when ``key`` is not the key that made the request."""
        body = {"request_id": request_id, "rating": rating, "score": score,
                "strong_needed": strong_needed, "comment": comment}  # fmt: skip
        return self.record_feedback(parse_feedback(body), key)

    async def recall(self, request_id: str) -> None:
        """Learn what served ``request_id`` from the shared cache backend when this process
        does not know it (a hit another instance served): :meth:`record_feedback` then
        treats it as its own."""
        if self.cache is None or self.recent.get(request_id) is not None:
            return
        record = await self.cache.recall(request_id)
        if record is None:
            return
        values: dict[str, Any] = {f.name: record.get(f.name) for f in dataclasses.fields(Served)}
        try:
            served = Served(**values)
        except TypeError:  # written by an incompatible version: unknown here
            return
        if isinstance(served.route, str) and served.cache == "hit":
            self.recent.add(request_id, served)

    def record_feedback(self, verdict: Verdict, key: KeyRecord | None) -> dict[str, Any]:
        """:meth:`feedback` of an already parsed body (what the proxy calls)."""
        served = self.recent.get(verdict.request_id)
        if served is None:
            raise RequestNotFound(
                f"no served request '{verdict.request_id}' is known here (ids are kept for the "
                f"last {self.recent.size} requests of this process)",
                param="request_id",
            )
        if key is not None and served.key_id != key.key_id:
            raise PermissionDenied(
                f"API key {key.key_id} may give feedback only on its own requests; "
                f"'{verdict.request_id}' was made with another key"
            )
        entry = entry_for(verdict, served, "client")
        self.feedback_store.record(entry)
        wrong = verdict.wrong
        if served.cache == "hit" and self.cache is not None and wrong is not None:
            self.cache.feedback(served.route, served.cache_key, wrong)  # evidence on the hit
        return entry

    # ----------------------------------------------------------------- helpers

    def _dropped(self, request: Json, dep: Deployment) -> tuple[str, ...]:
        """The request fields ``dep``'s provider dropped (only with ``drop_params``)."""
        if not dep.drop_params:
            return ()
        return tuple(unhandled_params(request, self._providers[dep.provider].params))

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
            raise PermissionDenied(  # the targets outside the scope are not named
                f"API key {key.key_id} may use '{alias}' but none of the {len(targets)} "
                "models it routes to: add one to the key's models"
            )
        return allowed

    def _fallback_for(self, key: KeyRecord | None) -> Fallback:
        """The fallback walker for ``key``: fallbacks and context-window fallbacks outside
        its scope are dropped (cooldowns and balancers stay shared)."""
        models = key.spec.models if key is not None else None
        if models is None or key is None:
            return self.fallback
        seen = self._key_walkers.get(key.key_id)
        if seen is not None and seen[0] is models:  # the key's record as last seen
            return seen[1]
        scope = frozenset(models)
        fb = self._scoped.get(scope)
        if fb is None:
            fb = copy.copy(self.fallback)
            fb.fallbacks = _within(self.fallback.fallbacks, scope)
            fb.context_window_fallbacks = _within(self.fallback.context_window_fallbacks, scope)
            fb.content_policy_fallbacks = _within(self.fallback.content_policy_fallbacks, scope)
            fb.default_fallbacks = [a for a in self.fallback.default_fallbacks if a in scope]
            if len(self._scoped) >= 1024:
                self._scoped.clear()
            self._scoped[scope] = fb
        if len(self._key_walkers) >= 100_000:
            self._key_walkers.clear()
        self._key_walkers[key.key_id] = (models, fb)
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
            isinstance(a.error, ContextWindowExceeded)
            or (a.skipped is not None and a.retry_after is None)  # not at rpm/tpm: a 429
            for a in exc.attempts
        )
        note = (  # the models outside the scope are counted, not named
            f"nothing within API key {key.key_id}'s models could serve '{alias}': "
            f"{len(skipped)} fallback model(s) outside the key's models would be next"
        )
        if only_context:
            return PermissionDenied(f"{note} ({exc.message})")
        exc.message = f"{exc.message}; {note}"
        return exc

    def _from_cache(self, call: Call, hit: CacheHit) -> ChatResult:
        """The cached answer as this request's result (a stream of chunks if it asked so)."""
        request, alias, started = call.request, call.alias, call.started
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
            cache_tier="exact" if hit.exact else "semantic",
            cache_key=hit.key,
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
            for chains in (fallback.context_window_fallbacks, fallback.content_policy_fallbacks):
                aliases += [c for c in chains.get(a, ()) if c not in aliases]
        return aliases

    def _reachable(self, targets: Sequence[str], key: KeyRecord | None) -> list[Deployment]:
        """The deployments a request served by ``targets`` may end up on within ``key``'s
        scope, one per distinct price of each alias (for the worst-case cost: an alias of
        a hundred deployments at one price is priced once, not a hundred times). Kept per
        targets and walker unless a wildcard name is among them (those come and go)."""
        fallback = self._fallback_for(key)
        memo_key = (id(fallback), *targets)
        memo = self._reach.get(memo_key)
        if memo is not None and memo[0] is fallback:
            return memo[1]
        seen: list[str] = []
        for t in targets:
            seen += [a for a in self._aliases(t, fallback) if a not in seen]
        reachable = [d for a in seen if self.serves(a) for d in self._priced(a)]
        if not any(a in self._wild for a in seen):
            if len(self._reach) >= 10_000:
                self._reach.clear()
            self._reach[memo_key] = (fallback, reachable)
        return reachable

    def _priced(self, alias: str) -> list[Deployment]:
        """One deployment of ``alias`` per distinct price: $/Mtok in and out and what an
        image costs there, all a worst case depends on (made once per balancer)."""
        balancer = self.balancers[alias]
        seen = self._prices.get(alias)
        if seen is None or seen[0] is not balancer:
            prices: dict[tuple[float, float, int], Deployment] = {}
            for d in balancer.deployments:
                key = (
                    d.input_cost_per_mtok,
                    d.output_cost_per_mtok,
                    image_tokens(d.provider, d.model),
                )
                prices.setdefault(key, d)
            if len(self._prices) > 4 * MAX_WILDCARD_NAMES:  # forgotten wildcard names
                self._prices.clear()
            seen = self._prices[alias] = (balancer, list(prices.values()))
        return seen[1]

    async def _call_stream(
        self, call: Call, alias: str, ticket: Ticket | None, admission: Admission
    ) -> ChatResult:
        """The upstream stream through fallback until its first chunk, then a Relay that
        serves the rest and settles, stores and counts once the stream ends."""
        request, started, native = call.request, call.started, call.native

        async def attempt(dep: Deployment, timeout: float) -> tuple[Json, AsyncIterator[Json]]:
            provider = self._providers[dep.provider]
            if _passes_through(provider, native, dep):
                assert native is not None
                it = provider.responses_stream(native.body, dep, timeout).__aiter__()
            else:
                _translatable(native, dep)
                it = provider.stream(request, dep, timeout).__aiter__()
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                raise ProviderError("upstream closed the stream before the first chunk") from None
            except BaseException:
                await aclose(it)
                raise
            return first, it

        fallback = self._fallback_for(call.key)
        allowed = fallback.region_filter(alias, call.region, _customer(call.request))
        tokens = estimate_tokens(request["messages"])
        try:
            out = await fallback.run(
                alias, attempt, fits=_fits(request, tokens), first_byte=True, tokens=tokens,
                allowed=allowed,
            )  # fmt: skip
        except (AllAttemptsFailed, ContextWindowExceeded) as exc:
            raise self._scope_error(exc, alias, call.key) from exc
        first, it = out.value
        opts = request.get("stream_options")
        want_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        passed = _passes_through(self._providers[out.deployment.provider], native, out.deployment)
        result = ChatResult(
            alias=out.alias,
            deployment=out.deployment,
            attempts=len(out.attempts),
            upstream_s=out.upstream_s,
            started=started,
            cache="off" if ticket is None else ticket.state,
            cache_refused=ticket is not None and ticket.refused,
            dropped=() if passed else self._dropped(request, out.deployment),
            wire="responses" if passed else "chat",
            charge=out.charge,
        )
        limit = self.config.router.max_stream_duration
        ends_at = asyncio.get_running_loop().time() + limit - (time.perf_counter() - started)
        result.stream = (EventRelay if passed else Relay)(
            first,
            it,
            result=result,
            request=request,
            want_usage=want_usage,
            ends_at=ends_at,
            hold=admission.hold,
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
        result = await self.embeddings_result(request, accounts=accounts, key=key)
        assert result.response is not None
        return result.response

    async def embeddings_result(
        self,
        request: Json,
        *,
        accounts: Sequence[str | None] = (),
        key: KeyRecord | None = None,
    ) -> ChatResult:
        """:meth:`embeddings` with how they were served (deployment, attempts, usage, cost),
        as the proxy records them; the response is the result's ``response``."""
        started = time.perf_counter()
        validate_embeddings(request)
        alias = request["model"]
        if not self.serves(alias) or (alias in self.routers and alias not in self.balancers):
            raise ModelNotFound(f"model '{alias}' is not configured", param="model")
        _require_scope(key, alias)
        size = measure_embeddings(request)
        self._check_input_size(alias, size.bytes)
        hold = None
        end_user = request.get("user") if isinstance(request.get("user"), str) else None
        chain = self.budget.chain_for(accounts, key, end_user)
        fallback = self._fallback_for(key)
        region = self.budget.customer_region(end_user)
        allowed = fallback.region_filter(alias, region, _customer(request))
        if chain:
            hold = await self.budget.admit_size(
                chain, size, 0, self._reachable([alias], key), ttl_s=self._hold_ttl(False)
            )

        async def attempt(dep: Deployment, timeout: float) -> Json:
            return await self._providers[dep.provider].embed(request, dep, timeout)

        try:
            out = await fallback.run(alias, attempt, tokens=size.typical(), allowed=allowed)
        except BaseException as exc:
            if hold is not None and hold.is_open:
                await self.budget.release(hold)
            if isinstance(exc, AllAttemptsFailed | ContextWindowExceeded):
                raise self._scope_error(exc, alias, key) from exc
            raise
        usage = usage_of(out.value.get("usage"))
        prompt = usage.get("prompt_tokens")
        if type(prompt) is not int or prompt <= 0:  # charge (and report) the typical count
            dep = out.deployment
            usage["prompt_tokens"] = usage["total_tokens"] = size.typical(dep.provider, dep.model)
            out.value["usage"] = {"prompt_tokens": usage["prompt_tokens"],
                                  "total_tokens": usage["total_tokens"]}  # fmt: skip
        if hold is not None:
            await self.budget.settle(hold, out.deployment, usage)
        self.balancers[out.alias].record_tokens(
            out.deployment, usage.get("prompt_tokens", 0), out.charge
        )
        return ChatResult(
            alias=out.alias,
            deployment=out.deployment,
            attempts=len(out.attempts),
            upstream_s=out.upstream_s,
            started=started,
            response=out.value,
            usage=usage,
        )

    def first_deployment(
        self, alias: str, key: KeyRecord | None, end_user: str | None = None
    ) -> tuple[Deployment, Provider] | None:
        """The deployment (and its provider) a chat request for ``alias`` would try first:
        within ``key``'s scope and the customer's region, healthy and with capacity, along
        the alias's fallbacks; None for a routed route (its target is the router's choice)
        or when none is available now. Token counting asks it where to pass through."""
        if alias in self.routers and alias not in self.balancers:
            return None
        _require_scope(key, alias)
        fallback = self._fallback_for(key)
        allowed = fallback.region_filter(
            alias, self.budget.customer_region(end_user), f"customer '{end_user}'"
        )
        for name in fallback.plan(alias):
            if (key is not None and not key.allows(name)) or not self.serves(name):
                continue
            dep = self.balancers[name].pick(
                lambda d: (allowed is None or allowed(d)) and fallback.cooldowns.available(d)
            )
            if dep is not None:
                return dep, self._providers[dep.provider]
        return None

    async def start_cache(self) -> None:
        """Start the shared cache backend on the running loop (a no-op in memory mode; done
        by the first cacheable request otherwise; the proxy does it at startup), and the
        sync of the Redis-shared routing state (else started by the first request)."""
        if self.cache is not None:
            await self.cache.start()
        if self.shared is not None:
            self.shared.ensure_running()

    async def warm_up(self) -> None:
        """Load the embedder and router models now (the proxy does it before it reports
        ready), so the first request that needs them costs what later ones do."""
        # The request schema's first check builds msgspec's type info (~1 ms), once.
        validate_chat({"model": "warm-up", "messages": [{"role": "user", "content": "hi"}]})
        if self.cache is not None:
            await embed_off_loop(self.cache.cache.embedder, ["warm up"])
        for router in self.routers.values():
            await router.warm_up()
        self.warmed_up = True

    def approval_queues(self) -> list[Any]:
        """The pending-approval queues of enforced routes (for ``/admin/approvals``)."""
        qs = {id(e.approvals): e.approvals for e in self.enforcers.values() if e.approvals}
        return list(qs.values())

    async def aclose(self) -> None:
        """Release HTTP connections held for this event loop."""
        from routeguard.providers.http import close_session

        if self.shadows is not None:
            await self.shadows.drain(timeout=self.config.router.deadline)
        await close_session()
        if self.cache is not None:
            await self.cache.aclose()
        await self.budget.close()
        if self.shared is not None:
            await self.shared.aclose()
        if self.keys.shared:
            self.keys.close()  # its tailer thread and connections
        if self._feedback is not None:
            self._feedback.close()
            self._feedback = None


def _shared_state(config: Config, previous: Gateway | None) -> SharedRouterState | None:
    """The Redis-shared routing state of ``config`` (``previous``'s when its settings are
    the same, so a reload keeps what it has read), or None without a Redis URL."""
    r = config.router
    if r.redis_url is None:
        return None
    old = previous.shared if previous is not None else None
    if old is not None:
        p = previous.config.router if previous is not None else r
        same = (p.redis_url, p.redis_prefix, p.redis_sync_interval, p.redis_timeout)
        if same == (r.redis_url, r.redis_prefix, r.redis_sync_interval, r.redis_timeout):
            return old
    state = SharedRouterState(
        r.redis_url, prefix=r.redis_prefix, interval=r.redis_sync_interval, timeout=r.redis_timeout
    )
    log.info("deployment cooldowns and usage are shared on Redis at %s", state.where)
    return state


class _Balancers(dict[str, Balancer]):
    """Alias -> Balancer; a name missing from it is looked up among the wildcard patterns
    (the gateway's ``_register``), so a wildcard name forgotten past the bound while its
    request was under way is rebuilt rather than a KeyError."""

    def __init__(self, register: Callable[[str], Balancer | None]) -> None:
        super().__init__()
        self._register_name = register

    def __missing__(self, name: str) -> Balancer:
        balancer = self._register_name(name)
        if balancer is None:
            raise KeyError(name)
        return balancer


def _lookup_attributes(ticket: Ticket, hit: CacheHit | None) -> dict[str, Any]:
    """The cache-lookup stage's span attributes."""
    if hit is not None:
        return {"routeguard.cache.status": "hit", "routeguard.cache.score": float(hit.score),
                "routeguard.cache.tier": "exact" if hit.exact else "semantic"}  # fmt: skip
    return {"routeguard.cache.status": ticket.state,
            "routeguard.cache.verifier_refused": ticket.refused}  # fmt: skip


def _same_cache(previous: Gateway, config: Config) -> bool:
    """Whether ``config`` asks for the cache ``previous`` runs (so a reload keeps its entries)."""
    old = previous.config
    return (old.cache, old.route_cache, old.embedding) == (
        config.cache,
        config.route_cache,
        config.embedding,
    )


def _require_usable(key: KeyRecord | None) -> None:
    """AuthenticationError for a revoked or expired ``key`` (the proxy's check, for library
    callers passing ``key=`` too)."""
    if key is not None and not key.usable(time.time()):
        what = "been revoked" if key.revoked else "expired"
        raise AuthenticationError(f"API key {key.key_id} has {what}")


def _require_scope(key: KeyRecord | None, alias: str) -> None:
    """:func:`_require_usable`, then ModelNotFound unless ``key`` may use ``alias``: the
    answer a missing model gets, so a key cannot tell the two apart."""
    _require_usable(key)
    if key is not None and not key.allows(alias):
        raise ModelNotFound(f"model '{alias}' is not configured", param="model")


def _passes_through(
    provider: Provider, native: NativeRequest | None, dep: Deployment
) -> TypeGuard[ResponsesProvider]:
    """Whether ``dep`` serves ``native``'s API itself (the request passes through): its
    provider has the Responses API and the deployment does not turn it off."""
    return (
        native is not None
        and native.api == "responses"
        and dep.responses_api
        and serves_responses(provider)
    )


def _chat_view(result: ChatResult) -> Json | None:
    """The chat answer the cache may keep for ``result`` (a passed-through Responses answer
    only when it is plain text or function calls)."""
    if result.response is None or result.wire == "chat":
        return result.response
    return response_as_chat(result.response)


def _translatable(native: NativeRequest | None, dep: Deployment) -> None:
    """A 400 when the chat translation of ``native`` lost something ``dep`` (chat only)
    would then silently ignore."""
    if native is not None and native.untranslatable is not None:
        err = UpstreamBadRequest(
            f"deployment '{dep.id}' ({dep.provider}) serves chat only and cannot honour this "
            f"Responses request: {native.untranslatable}; send it to an OpenAI or Azure "
            "deployment, or leave that out"
        )
        err.param = native.param
        raise err


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


def _customer(request: Json) -> str:
    """The customer a request names, for messages."""
    return f"customer '{request.get('user')}'"


def _owner(key: KeyRecord | None) -> dict[str, Any]:
    """The spend-log identity of a caller's key (none for the master key or no key)."""
    if key is None:
        return {}
    spec = key.spec
    return {"key_id": key.key_id, "user": spec.user, "team": spec.team, "org": spec.org}
