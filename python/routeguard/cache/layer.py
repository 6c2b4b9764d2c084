"""The cache as a layer of the gateway: which requests are cacheable, under which key, and
the lookup/store calls around the upstream call.

Per request: ``lookup`` decides cacheability (a single answer, a last message from the user
with text only, caching on for the alias, not opted out), builds the key parts (namespace =
tenant + alias + every answer-changing parameter; context = the messages before the last;
prompt = the last user message; ``cache.scope`` adds the caller's key, or key and ``user``,
to the namespace), tries the exact tier, then embeds the prompt once (off the
event loop) and searches. On a miss it returns a ``Ticket`` holding the vector, so
``store`` after a successful upstream call costs no second embedding.

Under ``cache.max_error_rate`` the route's :class:`~routeguard.cache.bound.ErrorBound`
decides instead of the fixed threshold: the best candidate the verifier accepts is served,
sent upstream as a shadow check (the ticket's state is ``shadow``), or missed; for the last
two the ticket keeps the candidate, and ``store`` has a judge (:mod:`routeguard.cache.judge`)
compare it with the fresh answer in the background, which becomes the bound's evidence
(shared through Redis by :class:`~routeguard.cache.evidence.RedisEvidence` with that
backend). ``feedback`` takes a client's verdict on a hit; ``stats`` reports every route.

Backends (``cache.backend`` in the config): ``memory`` keeps entries in this process;
``redis`` shares them with every instance on the same Redis and prefix through a
:class:`~routeguard.cache.redis_store.RedisStore`, which :meth:`CacheLayer.start` starts on
the gateway's event loop (loading the shared entries, then tailing the stream) and
:meth:`CacheLayer.aclose` stops. While Redis cannot be reached (at start, or later: the
store reports itself unhealthy until it has resynced) requests bypass the cache, each
counted in ``metrics.errors``; they are still served, never failed, and a failed start
is retried in the background.

Admin operations (``DELETE /admin/cache``, ``POST /admin/cache/correct``: the server's
``cache_admin``) call :meth:`CacheLayer.delete` and :meth:`CacheLayer.correct`, which change
this instance and, with Redis, return once the change is in the stream the others apply.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from routeguard.backoff import backoff_delay
from routeguard.cache.bound import Decision, ErrorBound
from routeguard.cache.judge import EmbeddingJudge, ExactJudge, Judge, ModelJudge, judge_wrong
from routeguard.cache.judge_limit import JudgeCapped, JudgeLimiter
from routeguard.cache.keys import NORMALISED, request_namespace, scope_parts
from routeguard.cache.metrics import CacheMetrics
from routeguard.cache.semantic import CacheHit, SemanticCache
from routeguard.cache.verify import HitVerifier
from routeguard.config import CacheSettings, Config
from routeguard.embed.base import Embedder, embed_off_loop
from routeguard.errors import BudgetExceeded, CacheUnavailable
from routeguard.messages import content_text

if TYPE_CHECKING:
    from routeguard.cache.evidence import RedisEvidence
    from routeguard.cache.judge_window import RedisJudgeWindow
    from routeguard.cache.served import RedisServed

Json = dict[str, Any]
log = logging.getLogger("routeguard.cache")
START_TIMEOUT = 3.0  # seconds a start waits for Redis before the cache is bypassed
ADMIN_FLUSH_TIMEOUT = 10.0  # seconds an admin delete/correct waits for Redis to take it


@dataclass(frozen=True, slots=True)
class Billing:
    """Who pays the judge model's calls made for a request's comparison (``cache.judge``
    naming a model alias): the budget accounts the request was charged to, and the ids its
    spend-log row carries."""

    chain: tuple[str, ...] = ()
    request_id: str = ""
    owner: Mapping[str, Any] = field(default_factory=dict)  # key_id, user, team, org


@dataclass(slots=True)
class Ticket:
    """A cacheable request that missed: what ``store`` needs to put the answer (and, under
    a wrong-hit bound, the candidate its fresh answer is compared with)."""

    prompt: str
    namespace: str
    context: list[Json]
    settings: CacheSettings
    vector: npt.NDArray[np.float32] | None = None
    alias: str = ""
    request: Json | None = None
    candidate: CacheHit | None = None  # compared with the fresh answer once it is in
    decision: Decision | None = None
    billing: Billing | None = None  # who pays a judge model (set by the gateway)
    refused: bool = False  # the verifier refused a candidate (and the lookup missed)

    @property
    def state(self) -> str:
        """The request's cache result: ``shadow`` (a would-be hit sent upstream to check
        the cache) or ``miss``."""
        return "shadow" if self.decision is not None and self.decision.shadow else "miss"


class CacheLayer:
    """Lookup and store for the gateway, over one SemanticCache shared by all routes."""

    def __init__(self, config: Config, embedder: Embedder | None = None) -> None:
        self.config = config
        c = config.cache
        store = None
        if c.backend == "redis":
            from routeguard.cache.redis_store import RedisStore

            assert c.redis_url is not None  # config.load insists on one
            store = RedisStore(c.redis_url, prefix=c.redis_prefix)
        self.cache = SemanticCache(
            embedder,
            threshold=c.threshold,
            ttl=c.ttl,
            max_entries=c.max_entries,
            verifier=HitVerifier() if c.verify else None,
            store=store,
        )
        self.bounds: dict[str, ErrorBound] = {}  # alias -> its wrong-hit bound (max_error_rate)
        self.evidence: RedisEvidence | None = None
        self.served: RedisServed | None = None  # hits served here, for feedback elsewhere
        if c.backend == "redis":
            from routeguard.cache.served import RedisServed

            assert c.redis_url is not None
            self.served = RedisServed(c.redis_url, prefix=c.redis_prefix)
        self.judge_window: RedisJudgeWindow | None = None  # the judge caps of every instance
        if c.backend == "redis" and self._bounded(config):
            from routeguard.cache.evidence import RedisEvidence
            from routeguard.cache.judge_window import RedisJudgeWindow

            assert c.redis_url is not None
            self.evidence = RedisEvidence(c.redis_url, self.bounds, prefix=c.redis_prefix)
            self.judge_window = RedisJudgeWindow(c.redis_url, prefix=c.redis_prefix)
        # ModelJudge's calls (set by the gateway: a chat call through its providers, charged
        # as the ticket's billing says).
        self.judge_call: Callable[[str, Json, Ticket], Awaitable[Json]] | None = None
        self.checks: dict[tuple[str, str, str], int] = {}  # (alias, kind, outcome) -> count
        self.limiters: dict[str, JudgeLimiter] = {}  # alias -> the cap on its judge's calls
        for alias in sorted(set(config.deployments) | set(config.routing)):
            settings = config.cache_for(alias)
            if settings.enabled and settings.max_error_rate is not None:
                self.bound_for(alias, settings)
        self._comparing: set[asyncio.Task[bool | None]] = set()
        self.begun = False  # start() has run (the store may still be retrying to connect)
        self._retry: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()  # concurrent first requests wait for one start

    @property
    def metrics(self) -> CacheMetrics:
        """The cache's counters (hits, misses, errors, latency...)."""
        return self.cache.metrics

    @property
    def ready(self) -> bool:
        """Whether lookups and stores go through: always in memory mode; with Redis, once
        the store is started and while it can reach Redis."""
        store = self.cache.store
        return store is None or store.healthy

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start mirroring the shared store on the running loop (no-op in memory mode or
        when already begun). If Redis does not answer within ``timeout`` s, the cache is
        bypassed and the start retried in the background until it succeeds."""
        if self.begun:
            return
        async with self._starting:
            if not self.begun:  # another request may have started it while we waited
                await self._start(timeout)
                self.begun = True

    async def _start(self, timeout: float) -> None:
        if self.evidence is not None:
            await self.evidence.start()
        if self.cache.store is None:
            return
        try:
            await asyncio.wait_for(self.cache.start(), timeout)
        except Exception as exc:  # Redis down, refused, slow: serve without the cache
            self.metrics.errors += 1
            log.warning("cache: cannot reach Redis (%s); bypassing the cache", _why(exc))
            self._retry = asyncio.create_task(self._keep_starting(timeout), name="rg-cache-start")

    async def _keep_starting(self, timeout: float) -> None:
        rng = random.Random()
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(backoff_delay(failures, 0.1, 5.0, None, rng))
            try:
                await asyncio.wait_for(self.cache.start(), timeout)
            except Exception:  # still down: try again later
                continue
            log.info("cache: Redis reachable again; cache back in use")
            return

    async def aclose(self) -> None:
        """Stop retrying a start, flush queued writes and stop mirroring."""
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
            self._retry = None
        if self._comparing:
            await asyncio.gather(*self._comparing, return_exceptions=True)
        if self.evidence is not None:
            await self.evidence.aclose()
        if self.served is not None:
            await self.served.aclose()
        if self.judge_window is not None:
            await self.judge_window.aclose()
        await self.cache.aclose()
        self.begun = False

    async def delete(
        self,
        *,
        namespace: str | None = None,
        tenant: str | None = None,
        route: str | None = None,
        prompt: str | None = None,
    ) -> int:
        """Remove the entries every given filter selects (all of them with none) on every
        instance; returns how many were removed on this one. With Redis, returns once the
        deletion is in the stream the other instances apply."""
        await self._admin_ready()
        if prompt is not None:  # that prompt's entries only (the digest index): no scan
            removed = self.cache.invalidate(namespace, tenant=tenant, route=route, prompt=prompt)
        else:  # a scan of every entry: on a worker thread, never holding the event loop
            removed = await asyncio.to_thread(
                self.cache.invalidate, namespace, tenant=tenant, route=route
            )
        await self._admin_flush()
        return removed

    async def correct(
        self,
        prompt: str,
        content: str,
        *,
        namespace: str | None = None,
        tenant: str | None = None,
        route: str | None = None,
    ) -> int:
        """Make ``content`` the cached answer of ``prompt`` in every entry the filters select,
        on every instance; returns how many entries were replaced on this one (0: none)."""
        await self._admin_ready()
        # Entries this instance's own LRU evicted are still served by the others: load them.
        await self.cache.pull(namespace, tenant=tenant, route=route, prompt=prompt)
        replaced = self.cache.correct(
            prompt,
            lambda old: corrected(old, content),
            namespace,
            tenant=tenant,
            route=route,
        )
        if replaced:
            await self._admin_flush()
        return replaced

    async def _admin_ready(self) -> None:
        if not self.begun:
            await self.start()
        if not self.ready:
            raise CacheUnavailable(
                "the cache's Redis cannot be reached: nothing was changed (retry once it is)"
            )

    async def _admin_flush(self) -> None:
        try:
            await asyncio.wait_for(self.cache.flush(), ADMIN_FLUSH_TIMEOUT)
        except TimeoutError:
            raise CacheUnavailable(
                "applied on this instance, but Redis did not take the change within "
                f"{ADMIN_FLUSH_TIMEOUT:g} s; it stays queued and reaches the other instances "
                "when Redis answers"
            ) from None

    def ticket(
        self, request: Json, alias: str, tenant: str, key: str | None = None
    ) -> Ticket | None:
        """The key parts if this request may be served from / stored in the cache; ``key``
        (the caller's virtual key id) and the request's ``user`` narrow the partition when
        the alias's ``cache.scope`` is ``key`` or ``user``."""
        settings = self.config.cache_for(alias)
        if not settings.enabled or request.get("n", 1) not in (1, None):
            return None
        messages = request["messages"]
        last = messages[-1]
        if last.get("role") != "user":
            return None
        prompt = content_text(last.get("content"), text_only=True)
        if prompt is None:
            return None
        if not self.ready:
            self.metrics.errors += 1
            return None
        scope = scope_parts(settings.scope, key, request.get("user"))
        ns = request_namespace(tenant, alias, request, scope)
        return Ticket(prompt, ns, list(messages[:-1]), settings, alias=alias, request=request)

    async def lookup(self, ticket: Ticket) -> CacheHit | None:
        """Exact tier, then (embedding once, on the embedder's worker) the semantic tier."""
        c = self.cache
        if len(ticket.prompt) > NORMALISED:  # hashing megabytes: off the loop too
            hit = await asyncio.to_thread(
                c.get_exact, ticket.prompt, ticket.namespace, ticket.context
            )
        else:
            hit = c.get_exact(ticket.prompt, ticket.namespace, ticket.context)
        if hit is not None:
            return hit
        ticket.vector = (await embed_off_loop(c.embedder, [ticket.prompt]))[0]
        # The search below runs without an await: the counter's change is this lookup's.
        refusals = c.metrics.rejected
        if ticket.settings.max_error_rate is not None:
            bound = self.bound_for(ticket.alias, ticket.settings)
            self.limiters[ticket.alias].note_lookup()
            served, cand, decision = c.probe(
                ticket.prompt, ticket.namespace, ticket.context, ticket.vector, bound.decide
            )
            if decision is None:
                bound.no_candidate()
            elif decision.compare:
                ticket.candidate, ticket.decision = cand, decision
        else:
            served = c.get(
                ticket.prompt,
                ticket.namespace,
                ticket.context,
                threshold=ticket.settings.threshold,
                vector=ticket.vector,
            )
        ticket.refused = c.metrics.rejected != refusals
        return served

    def store(self, ticket: Ticket, response: Json) -> None:
        """Keep a successful upstream answer for later requests (never raises: a store
        that fails is counted in ``metrics.errors`` and the answer is simply not kept)."""
        if not response.get("choices"):
            return
        if not self.ready:
            self.metrics.errors += 1
            return
        try:
            self.cache.put(
                ticket.prompt,
                response,
                ticket.namespace,
                ticket.context,
                ttl=ticket.settings.ttl,
                vector=ticket.vector,
            )
        except Exception as exc:
            self.metrics.errors += 1
            log.warning("cache: could not store a response (%s)", _why(exc))
        if ticket.candidate is not None and ticket.decision is not None:
            self._compare_later(ticket, response)

    # ------------------------------------------------------------------ the wrong-hit bound

    @staticmethod
    def _bounded(config: Config) -> bool:
        """Whether any route has ``cache.max_error_rate``."""
        return config.cache.max_error_rate is not None or any(
            c.max_error_rate is not None for c in config.route_cache.values()
        )

    def bound_for(self, alias: str, settings: CacheSettings) -> ErrorBound:
        """The wrong-hit bound of ``alias`` (made on first use)."""
        bound = self.bounds.get(alias)
        if bound is None:
            assert settings.max_error_rate is not None
            bound = self.bounds[alias] = ErrorBound(
                settings.max_error_rate,
                verify_sample=settings.verify_sample,
                confidence=settings.error_confidence,
            )
            self.limiters[alias] = JudgeLimiter(
                settings.judge_max_per_minute,
                settings.judge_max_share,
                shared=self.judge_window,
                route=alias,
            )
        return bound

    def judge(self, ticket: Ticket) -> Judge:
        """The judge ``ticket.settings.judge`` names (a model's calls billed for ``ticket``)."""
        settings = ticket.settings
        if settings.judge == "exact":
            return ExactJudge()
        call = self.judge_call
        if settings.judge == "embedding" or call is None:
            return EmbeddingJudge(self.cache.embedder, settings.judge_threshold)

        self.bound_for(ticket.alias, settings)
        limiter = self.limiters[ticket.alias]

        async def billed(alias: str, request: Json) -> Json:
            slot = await limiter.take()
            if slot is None:
                raise JudgeCapped(f"route '{ticket.alias}' reached its judge-call cap")
            try:
                return await call(alias, request, ticket)
            except BudgetExceeded:  # refused before any call was made: the slot is free again
                await limiter.give_back(slot)
                raise

        return ModelJudge(settings.judge, billed)

    def _compare_later(self, ticket: Ticket, response: Json) -> None:
        """Judge the candidate against the fresh answer in the background (the caller has
        its answer already; nothing waits on the verdict)."""
        try:
            task = asyncio.get_running_loop().create_task(self.compare(ticket, response))
        except RuntimeError:  # no loop (a library caller storing by hand): nothing to judge on
            return
        self._comparing.add(task)
        task.add_done_callback(self._comparing.discard)

    async def compare(self, ticket: Ticket, response: Json) -> bool | None:
        """Judge the ticket's candidate against ``response`` and record it as evidence;
        returns the verdict (True: serving the candidate would have been wrong)."""
        cand, decision = ticket.candidate, ticket.decision
        if cand is None or decision is None:
            return None
        kind = "shadow" if decision.shadow else "miss"
        try:
            wrong = await judge_wrong(
                self.judge(ticket), ticket.prompt, ticket.request or {},
                cand.response, response,
            )  # fmt: skip
        except JudgeCapped:  # the route's judge-call cap: no call, no evidence
            self._count(ticket.alias, kind, "capped")
            return None
        except BudgetExceeded as exc:  # its payer cannot afford the judge: no evidence
            self._count(ticket.alias, kind, "unpaid")
            log.info("cache: no judge call for a comparison (%s)", _why(exc))
            return None
        except Exception as exc:  # a judge model down: no evidence, never a failed request
            self._count(ticket.alias, kind, "error")
            log.warning("cache: judging a cached answer failed (%s)", _why(exc))
            return None
        if wrong is None:
            self._count(ticket.alias, kind, "undecided")
            return None
        self._count(ticket.alias, kind, "wrong" if wrong else "right")
        self.bound_for(ticket.alias, ticket.settings).record(cand.score, wrong, decision)
        return wrong

    def _count(self, alias: str, kind: str, outcome: str) -> None:
        key = (alias, kind, outcome)
        self.checks[key] = self.checks.get(key, 0) + 1

    async def share_hit(self, request_id: str, record: Mapping[str, Any]) -> None:
        """Make a hit this instance served known to the others (Redis backend; else no-op),
        so that feedback on it counts wherever it arrives: awaited before the hit is
        answered, for at most ``RedisServed.wait`` s, and never raises."""
        if self.served is not None:
            await self.served.durable(request_id, record)

    async def recall(self, request_id: str) -> dict[str, Any] | None:
        """What another instance shared of the hit it served as ``request_id`` (None when
        none did, or in memory mode)."""
        if self.served is None:
            return None
        return await self.served.recall(request_id)

    def feedback(self, alias: str, key: str | None, wrong: bool) -> None:
        """A client's verdict on a hit it was served: counted in the route's bound, and a
        hit marked wrong drops its entry (on every instance, with a shared store)."""
        settings = self.config.cache_for(alias)
        if settings.max_error_rate is not None:
            self.bound_for(alias, settings).feedback(wrong)
        if wrong and key is not None and self.ready:
            try:
                self.cache.invalidate(key=key)
            except Exception as exc:
                self.metrics.errors += 1
                log.warning("cache: could not drop an entry marked wrong (%s)", _why(exc))

    def stats(self) -> dict[str, Any]:
        """Per route: the bound's estimate and counters (``GET /admin/cache/stats``)."""
        routes: dict[str, Any] = {}
        for alias, bound in sorted(self.bounds.items()):
            row: dict[str, Any] = bound.stats()
            limiter = self.limiters[alias]
            row["judge_calls"] = limiter.calls  # this instance's judge-model calls (extra calls)
            row["judge_capped"] = limiter.capped
            row["judge_unshared"] = limiter.unshared  # granted here alone: Redis did not answer
            row["checks_here"] = {
                f"{kind}:{outcome}": n
                for (a, kind, outcome), n in sorted(self.checks.items())
                if a == alias
            }
            routes[alias] = row
        out = {"object": "cache.stats", "routes": routes, "cache": self.metrics.snapshot()}
        if self.served is not None:  # hits shared for feedback on another instance
            out["served_records"] = self.served.stats()
        return out


def corrected(response: Any, content: str) -> Json:
    """A cached completion whose answer is now ``content`` (a single plain-text choice; id,
    model and usage kept as the original answer had them)."""
    base: Json = dict(response) if isinstance(response, dict) else {"object": "chat.completion"}
    base["choices"] = [
        {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    return base


def replay(hit: CacheHit) -> Json:
    """A cached response as a fresh completion (new id and timestamp, same content)."""
    resp: Json = dict(hit.response)
    resp["id"] = f"chatcmpl-cache-{uuid.uuid4().hex[:24]}"
    resp["created"] = int(time.time())
    return resp


def _why(exc: BaseException) -> str:
    """An exception as a short reason (the type alone when it has no message)."""
    return str(exc) or type(exc).__name__
