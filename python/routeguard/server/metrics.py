"""Prometheus metrics: what the proxy records per request and serves at ``/metrics``.

The proxy hands each finished chat request's :class:`~routeguard.observe.requestlog.Trace`
to :meth:`Metrics.record` (after the response has left), which queues it; the queue is
applied in one batch a moment later (or when a scrape or the dashboard reads), bumping
preallocated ``prometheus_client`` children: the OpenTelemetry GenAI families (``gen_ai_*``, for
requests an upstream served) and routeguard's own (``routeguard_*``). A scrape renders
them, plus gauges read at scrape time: budget spend and limits of the configured accounts,
and the circuit state of every deployment.

With ``serve --workers N`` the values live in ``prometheus_client``'s multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``): each worker writes its own, and a scrape
answered by any worker merges them all, so it shows the sum over workers. Circuit states
are per worker; each worker writes when its circuits stay open until (a ``livemax`` gauge)
and the scrape reports a circuit open when any live worker has it open. Labels come from
the configuration (aliases, deployments, accounts) or small fixed sets (status, reason
kind, error code), never from prompt text or user ids.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import math
import os
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from routeguard.budget.accounts import micros_to_usd
from routeguard.errors import (
    AllAttemptsFailed,
    BudgetExceeded,
    BudgetUnavailable,
    RateLimited,
    RouteguardError,
)
from routeguard.observe.requestlog import Trace

if TYPE_CHECKING:
    from routeguard.deployment import Deployment
    from routeguard.enforce.guard import Verdict
    from routeguard.gateway import Gateway

log = logging.getLogger("routeguard.observe")

# Our names and labels are all in the classic character set, so the text is valid 0.0.4,
# the version every Prometheus (2.x and 3.x) and agent reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of a scrape (Prometheus text exposition 0.0.4)."""

# Bucket boundaries recommended by the OpenTelemetry GenAI semantic conventions.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)  # fmt: skip
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0)  # fmt: skip

# gen_ai.provider.name well-known values, from our deployment types.
_PROVIDER_NAMES = {
    "openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai", "vertex_ai_anthropic": "gcp.vertex_ai",
    "azure": "azure.ai.openai", "bedrock": "aws.bedrock",
}  # fmt: skip
_GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
          "gen_ai_response_model", "error_type")  # fmt: skip
_CIRCUIT_UNTIL = "routeguard_deployment_circuit_open_until"
# The operation label of the request-level families: the API the caller used.
OPERATIONS = {
    "/v1/chat/completions": "chat", "/chat/completions": "chat",
    "/v1/completions": "completions", "/completions": "completions",
    "/v1/responses": "responses", "/responses": "responses",
    "/v1/messages": "messages", "/v1/embeddings": "embeddings", "/embeddings": "embeddings",
}  # fmt: skip
_OTHER = "other"  # the label of a model name no configuration declares
# Recorded requests wait this long (or until this many are queued, or a read) and are then
# applied together: in a batch the recording code stays in the CPU's caches, where applied
# one by one between requests it ran about four times slower (docs/observability.md). Kept
# short: a queued request keeps its whole request and response alive, and a longer wait let
# the collector move them to its older generations and made each batch one long pause.
FLUSH_S = 0.01
_MAX_PENDING = 256
_MAX_LABEL = 128  # an upstream's response model name is cut to this


def multiprocess() -> bool:
    """Whether ``prometheus_client`` keeps values in multiprocess files (it decides once,
    at import, from ``PROMETHEUS_MULTIPROC_DIR``)."""
    return values.ValueClass is not values.MutexValue


class _Sum:
    """A counter child's increments during one flush, added to it once at the end."""

    __slots__ = ("child", "queued", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.total = 0.0
        self.queued = False  # in the flush's list of what this batch touched

    def inc(self, amount: float = 1.0) -> None:
        """Count ``amount`` more."""
        self.total += amount

    def apply(self) -> None:
        """Add what was counted to the child."""
        if self.total:
            total, self.total = self.total, 0.0
            self.child.inc(total)


class _Tally:
    """A histogram child's observations during one flush: bucketed here by one bisection
    each, then added to the child bucket by bucket (``observe`` walks the bounds and takes
    two locks per value). Reaches into prometheus_client's Histogram (its bounds, bucket
    and sum values); a test holds the result equal to ``observe``'s."""

    __slots__ = ("bounds", "child", "counts", "queued", "seen", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.seen = False
        self.queued = False  # in the flush's list of what this batch touched

    def observe(self, value: float) -> None:
        """Count one observation of ``value`` (as ``Histogram.observe`` would)."""
        self.seen = True
        self.total += value
        if value <= self.bounds[-1]:  # NaN falls in no bucket (it still adds to the sum)
            self.counts[bisect_left(self.bounds, value)] += 1

    def apply(self) -> None:
        """Add what was observed to the child."""
        if not self.seen:
            return
        child, counts = self.child, self.counts
        total, self.total, self.seen = self.total, 0.0, False
        child._sum.inc(total)
        for i, n in enumerate(counts):
            if n:
                counts[i] = 0
                child._buckets[i].inc(n)


class Metrics:
    """The proxy's metric families and their per-request recording."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._multiprocess = multiprocess()
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._aliases = frozenset(gateway.models())
        self._deployments: dict[str, Deployment] = {
            d.id: d for deps in gateway.config.deployments.values() for d in deps
        }
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per upstream-served request (gen_ai.client.token.usage)",
            [*_GENAI[:4], "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=reg,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Time to serve an upstream-served chat request, to its last byte "
            "(gen_ai.client.operation.duration)",
            _GENAI,
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first byte of an upstream-served stream "
            "(gen_ai.server.time_to_first_token)",
            _GENAI[:4],
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self.requests = Counter(
            "routeguard_requests",
            "Chat requests and embeddings calls by API operation (chat, completions, "
            "responses, messages, embeddings), asked route, serving alias and status",
            ["operation", "route", "alias", "status"],
            registry=reg,
        )
        self.overhead = Histogram(
            "routeguard_overhead_seconds",
            "The gateway's own time per served request (wall time less upstream waiting)",
            ["operation", "route"],
            buckets=OVERHEAD_BUCKETS,
            registry=reg,
        )
        self.cost = Counter(
            "routeguard_cost_usd",
            "Dollars spent upstream",
            ["operation", "route", "alias"],
            registry=reg,
        )
        self.saved = Counter(
            "routeguard_cost_saved_usd",
            "Dollars not spent: a cache hit's usage at its deployment's prices (layer=cache); "
            "a routed request's usage at its route's dearest target less what it cost "
            "(layer=routing)",
            ["layer", "route"],
            registry=reg,
        )
        self.cache = Counter(
            "routeguard_cache_requests",
            "Cache lookups by result (hit, miss, shadow, off: not cacheable) and, for hits "
            "and shadow checks, tier (exact, semantic)",
            ["route", "result", "tier"],
            registry=reg,
        )
        self.verifier_refusals = Counter(
            "routeguard_cache_verifier_refusals",
            "Cache lookups that missed because the hit verifier refused a candidate the "
            "similarity alone would have served",
            ["route"],
            registry=reg,
        )
        self.decisions = Counter(
            "routeguard_route_decisions",
            "Routed routes' choices by reason kind (rule, semantic, learned, budget, ...)",
            ["route", "reason_kind", "target"],
            registry=reg,
        )
        self.fallbacks = Counter(
            "routeguard_fallbacks",
            "Requests that needed more than one upstream attempt",
            ["route"],
            registry=reg,
        )
        self.rate_limited = Counter(
            "routeguard_rate_limited",
            "Requests refused with 429 by a rate limit (ours or, after every attempt, upstream's)",
            ["route", "code"],
            registry=reg,
        )
        self.budget_refusals = Counter(
            "routeguard_budget_refusals",
            "Requests refused by a budget (exceeded, or its store unavailable)",
            ["route", "code"],
            registry=reg,
        )
        self.circuit_until = Gauge(
            _CIRCUIT_UNTIL,
            "Unix time a deployment's circuit stays open until (inf: probing; 0: closed)",
            ["deployment"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.enforcement = Counter(
            "routeguard_enforcement_decisions",
            "Tool calls checked by an enforcement policy, by the deciding effect and rule and "
            "whether the call was let through (outcome: allowed, denied)",
            ["effect", "rule", "outcome"],
            registry=reg,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        # What a flush counts, gathered per child and applied once at its end.
        self._gathered: dict[tuple[Any, ...], _Sum | _Tally] = {}
        self._touched: list[_Sum | _Tally] = []
        self._flushing = threading.Lock()
        self._pending: deque[tuple[Trace, float, str]] = deque()
        self._dearest = _dearest_targets(gateway)
        gateway.fallback.cooldowns.on_change = self._circuit_changed
        for enforcer in gateway.enforcers.values():
            enforcer.on_verdict = self._verdict

    def follow(self, gateway: Gateway) -> None:
        """Record for ``gateway`` from now on (a config reload swapped it in)."""
        self.flush()  # what the old one served, labelled by its configuration
        self.gateway = gateway
        self._aliases = frozenset(gateway.models())
        self._deployments = {d.id: d for deps in gateway.config.deployments.values() for d in deps}
        self._dearest = _dearest_targets(gateway)
        gateway.fallback.cooldowns.on_change = self._circuit_changed

    # ------------------------------------------------------------------ recording

    def _child(self, metric: Any, *labels: str) -> Any:
        """The child of ``metric`` for ``labels``, made once (``labels()`` costs ~1 µs)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _route(self, asked: object) -> str:
        """The route label: the alias asked for, if configured (bounded cardinality)."""
        if asked is None:
            return ""
        return asked if isinstance(asked, str) and asked in self._aliases else _OTHER

    def record(
        self, trace: Trace, now: float | None = None, path: str = "/v1/chat/completions"
    ) -> None:
        """Count one finished chat request or embeddings call (served, refused or failed)
        that came in on ``path`` (the trace must not change after this): queued on an event
        loop and applied within :data:`FLUSH_S` with the others; at once without a loop."""
        pending = self._pending
        pending.append((trace, time.perf_counter() if now is None else now, path))
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no event loop here (a library caller, a bench)
                self.flush()
        elif len(pending) >= _MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Apply every queued request to the metric values (call it on the event loop)."""
        pending = self._pending
        with self._flushing:
            while pending:
                try:
                    self._apply(*pending.popleft())
                except Exception:  # one bad record must not hold back the others
                    log.exception("metrics: a request could not be recorded")
            touched, self._touched = self._touched, []
            for gathered in touched:
                gathered.queued = False
                try:
                    gathered.apply()
                except Exception:  # e.g. a negative count: dropped, the others applied
                    log.exception("metrics: counts could not be applied")

    def _sum(self, metric: Any, *labels: str) -> _Sum:
        """Where a flush counts ``metric``'s (a Counter) child for ``labels``."""
        gathered = self._gathered_for(_Sum, metric, labels)
        assert isinstance(gathered, _Sum)
        return gathered

    def _tally(self, metric: Any, *labels: str) -> _Tally:
        """Where a flush observes ``metric``'s (a Histogram) child for ``labels``."""
        gathered = self._gathered_for(_Tally, metric, labels)
        assert isinstance(gathered, _Tally)
        return gathered

    def _gathered_for(
        self, kind: type[_Sum] | type[_Tally], metric: Any, labels: tuple[str, ...]
    ) -> _Sum | _Tally:
        """The ``kind`` gathering ``metric``'s child for ``labels``, made on first use."""
        key = (id(metric), *labels)
        gathered = self._gathered.get(key)
        if gathered is None:
            gathered = self._gathered[key] = kind(self._child(metric, *labels))
        if not gathered.queued:  # a flush applies what its batch touched, not every child
            gathered.queued = True
            self._touched.append(gathered)
        return gathered

    def _apply(self, trace: Trace, now: float, path: str) -> None:
        """Count one finished request (see :meth:`record`)."""
        request = trace.request
        route = self._route(request.get("model") if request is not None else None)
        err = trace.error
        result = trace.result
        status = "200" if err is None else str(err.status_code)
        alias = "" if result is None else result.deployment.pattern or result.alias
        api = OPERATIONS.get(path) or OPERATIONS.get(path.rstrip("/")) or trace.operation
        self._sum(self.requests, api, route, alias, status).inc()
        if err is not None:
            self._refusal(route, err)
        if result is None:
            if isinstance(err, AllAttemptsFailed):
                self._failed_upstream(route, err, trace.operation, now - trace.started)
            return
        dep = result.deployment
        usage = result.usage
        self._tally(self.overhead, api, route).observe(result.overhead_ms(now) / 1000)
        operation = trace.operation
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if self.gateway.cache is not None and operation == "chat":
            tier = result.cache_tier or ("semantic" if result.cache == "shadow" else "")
            self._sum(self.cache, route, result.cache, tier).inc()
            if result.cache_refused:
                self._sum(self.verifier_refusals, route).inc()
        if result.cache == "hit":
            saved = dep.cost(prompt or 0, completion or 0)
            if saved > 0:
                self._sum(self.saved, "cache", route).inc(saved)
            return
        cost = result.cost
        if result.route is not None:
            kind = result.route.split(":", 1)[0]
            self._sum(self.decisions, route, kind, result.alias).inc()
            dearest = self._dearest.get(route)
            if dearest:
                would = max(d.cost(prompt or 0, completion or 0) for d in dearest)
                if would > cost:
                    self._sum(self.saved, "routing", route).inc(would - cost)
        if result.attempts > 1:
            self._sum(self.fallbacks, route).inc()
        if cost > 0:
            self._sum(self.cost, api, route, alias).inc(cost)
        provider = _PROVIDER_NAMES.get(dep.provider, dep.provider)
        response = result.response
        model = response.get("model") if isinstance(response, Mapping) else None
        resp_model = model[:_MAX_LABEL] if isinstance(model, str) else ""
        if dep.pattern is not None:  # the caller chose the name: label by the pattern
            resp_model = dep.pattern
        error_type = "" if err is None else _error_type(err)
        genai = (operation, provider, dep.pattern or dep.model, resp_model)
        self._tally(self.duration, *genai, error_type).observe(now - trace.started)
        if prompt is not None:
            self._tally(self.token_usage, *genai, "input").observe(prompt)
        if completion is not None:
            self._tally(self.token_usage, *genai, "output").observe(completion)
        if trace.first_byte is not None and request is not None and request.get("stream"):
            self._tally(self.ttft, *genai).observe(trace.first_byte - trace.started)

    def _refusal(self, route: str, err: RouteguardError) -> None:
        """Count a refusal by a rate limit or a budget."""
        if isinstance(err, BudgetExceeded | BudgetUnavailable):
            # The class's code: a LiteLLM config answers with the status as the code.
            self._sum(self.budget_refusals, route, type(err).code or "").inc()
        elif isinstance(err, RateLimited) or (
            isinstance(err, AllAttemptsFailed) and err.status_code == 429
        ):
            self._sum(self.rate_limited, route, err.code or "").inc()

    def _failed_upstream(
        self, route: str, err: AllAttemptsFailed, operation: str, took: float
    ) -> None:
        """A request every upstream attempt failed: its duration, on the last deployment."""
        tried = [a for a in err.attempts if a.skipped is None]
        if len(tried) > 1:
            self._sum(self.fallbacks, route).inc()
        dep = self._deployments.get(tried[-1].deployment) if tried else None
        if dep is None:
            return
        provider = _PROVIDER_NAMES.get(dep.provider, dep.provider)
        model = dep.pattern or dep.model  # a wildcard's names are the caller's: bounded label
        self._tally(self.duration, operation, provider, model, "", _error_type(err)).observe(took)

    def _verdict(self, verdict: Verdict) -> None:
        """Enforcers' listener: count one tool-call decision (rule ids come from the policy
        files and the guard's fixed ``<...>`` ids, so the labels stay bounded)."""
        outcome = "allowed" if verdict.allowed else "denied"
        d = verdict.decision
        self._child(self.enforcement, d.effect, d.rule_id[:_MAX_LABEL], outcome).inc()

    def _circuit_changed(self, dep_id: str, until: float) -> None:
        """Cooldowns' listener: store until when ``dep_id``'s circuit stays open."""
        if dep_id in self._deployments:
            self._child(self.circuit_until, dep_id).set(until)

    # ------------------------------------------------------------------ scraping

    async def scrape(self) -> bytes:
        """The exposition text: every family (summed over workers), and the gauges read now."""
        self.flush()
        extra = _ScrapeTime(await self._budget_rows(), self._deployments)
        cache = self.gateway.cache
        if cache is not None:
            stats = cache.stats()
            extra.bounds = stats["routes"]
            extra.checks = dict(cache.checks)
            # zeros without the Redis backend: no records are written then
            extra.served = stats.get("served_records", {})
        if self._multiprocess:
            return await asyncio.to_thread(self._scrape_files, extra)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Rewrite(self.registry, extra))
        return generate_latest(registry)

    def _scrape_files(self, extra: _ScrapeTime) -> bytes:
        """Merge every worker's files (after forgetting the live gauges of dead workers)."""
        path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        forget_dead_workers(path)
        registry = CollectorRegistry(auto_describe=False)
        merged = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(merged, path)  # type: ignore[no-untyped-call]
        registry.register(_Rewrite(merged, extra))
        return generate_latest(registry)

    async def _budget_rows(self) -> list[tuple[str, float, float | None]]:
        """(account, spent $, limit $) of each configured budget account; none when the
        budget store does not answer (the scrape still succeeds)."""
        layer = self.gateway.budget
        names = sorted(layer.configured_accounts)
        if not names:
            return []
        backend = layer.backend
        try:
            async with asyncio.timeout(2.0):
                spent = await asyncio.gather(*(backend.spent(n) for n in names))
        except Exception as exc:  # Redis down or slow: leave the gauges out of this scrape
            log.debug("metrics: budget spend unavailable (%s)", type(exc).__name__)
            return []
        rows = []
        for name, micros in zip(names, spent, strict=True):
            limit = backend.accounts[name].limit
            rows.append(
                (
                    name,
                    float(micros_to_usd(micros)),
                    None if limit is None else float(micros_to_usd(limit)),
                )
            )
        return rows

    def families(self) -> list[Metric]:
        """Every recorded family as a scrape would show it (summed over workers; blocking
        file reads in multiprocess mode, so call it off the event loop), without the
        gauges read at scrape time."""
        if self._multiprocess:
            path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
            forget_dead_workers(path)
            merged = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(merged, path)  # type: ignore[no-untyped-call]
            return list(merged.collect())
        return list(self.registry.collect())

    def close(self) -> None:
        """Apply what is queued, and forget this worker's live gauges (its circuits) when
        it stops."""
        self.flush()
        if self._multiprocess:
            path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            if path:
                mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def forget_dead_workers(path: str) -> None:
    """Remove the live-gauge files of worker processes that no longer exist (a worker that
    crashed could not do it itself); their counters stay, so totals never go down."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid_text = name.rsplit("_", 1)[-1].removesuffix(".db")
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            mark_process_dead(int(pid_text), path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's


def _dearest_targets(gateway: Gateway) -> dict[str, tuple[Deployment, ...]]:
    """Per routed route, the deployment standing for each of its targets (an alias's first
    deployment): what a routed request would have cost there is the dearest of them at its
    usage, the reference ``routeguard_cost_saved_usd_total{layer="routing"}`` counts from."""
    out: dict[str, tuple[Deployment, ...]] = {}
    deployments = gateway.config.deployments
    for route, router in gateway.routers.items():
        deps = tuple(deployments[t][0] for t in sorted(router.targets()) if deployments.get(t))
        if len(deps) > 1:  # one target (a pinned route): nothing to choose, nothing saved
            out[route] = deps
    return out


def _error_type(err: RouteguardError) -> str:
    """The ``error_type`` label: the error's code, else its class (a small fixed set)."""
    return err.code or type(err).__name__


class _ScrapeTime:
    """What a scrape reads at its own time: budget rows and the deployment ids."""

    def __init__(
        self, budgets: list[tuple[str, float, float | None]], deployments: Mapping[str, Any]
    ) -> None:
        self.budgets = budgets
        self.deployments = sorted(deployments)
        self.bounds: dict[str, Any] = {}  # route -> its wrong-hit bound's stats
        self.checks: dict[tuple[str, str, str], int] = {}  # (route, kind, outcome) -> count
        self.served: dict[str, int] | None = None  # served-hit records (None: no cache)


class _Rewrite(Collector):
    """The recorded families as exposed: the circuit-until gauge becomes
    ``routeguard_deployment_circuit_open`` (0/1 now), and the budget gauges are added."""

    def __init__(self, source: CollectorRegistry, extra: _ScrapeTime) -> None:
        self.source = source
        self.extra = extra

    def collect(self) -> Iterable[Metric]:
        """Yield every family for this scrape."""
        until: dict[str, float] = {}
        for family in self.source.collect():
            if family.name == _CIRCUIT_UNTIL:
                for s in family.samples:
                    dep = s.labels.get("deployment", "")
                    until[dep] = max(until.get(dep, 0.0), s.value)
                continue
            yield family
        yield from self._gauges(until)

    def _gauges(self, until: Mapping[str, float]) -> Iterator[Metric]:
        now = time.time()
        circuit = GaugeMetricFamily(
            "routeguard_deployment_circuit_open",
            "1 while a deployment's circuit is open or half-open with its probe out",
            labels=["deployment"],
        )
        for dep in self.extra.deployments:
            t = until.get(dep, 0.0)
            circuit.add_metric([dep], 1.0 if math.isinf(t) or t > now else 0.0)
        yield circuit
        spend = GaugeMetricFamily(
            "routeguard_budget_spend_usd",
            "Dollars spent by a configured budget account in its current period",
            labels=["account"],
        )
        limit = GaugeMetricFamily(
            "routeguard_budget_limit_usd",
            "The hard limit of a configured budget account, in dollars",
            labels=["account"],
        )
        for name, spent, cap in self.extra.budgets:
            spend.add_metric([name], spent)
            if cap is not None:
                limit.add_metric([name], cap)
        yield spend
        yield limit
        if self.extra.bounds:
            yield from _bound_families(self.extra)
        if self.extra.served is not None:
            yield from _served_families(self.extra.served)


def _bound_families(extra: _ScrapeTime) -> Iterator[Metric]:
    """The wrong-hit bound per route (``cache.max_error_rate``): the served wrong-hit rate
    estimated from shadow checks, its interval, the threshold in force, and this instance's
    comparisons by kind (shadow: an extra upstream call; miss: free) and outcome."""
    rate = GaugeMetricFamily(
        "routeguard_cache_error_rate_estimate",
        "Estimated share of served semantic hits whose answer is wrong (shadow checks, "
        "importance-weighted; all instances)",
        labels=["route"],
    )
    high = GaugeMetricFamily(
        "routeguard_cache_error_rate_upper",
        "Upper end of the confidence interval of routeguard_cache_error_rate_estimate",
        labels=["route"],
    )
    bound = GaugeMetricFamily(
        "routeguard_cache_error_bound",
        "Certified upper bound of the wrong-hit rate at the threshold in force",
        labels=["route"],
    )
    threshold = GaugeMetricFamily(
        "routeguard_cache_threshold",
        "Similarity a semantic hit needs on the route now (the lowest over its strata; "
        "1 when none is served)",
        labels=["route"],
    )
    for route, row in sorted(extra.bounds.items()):
        rate.add_metric([route], row["error_rate"])
        high.add_metric([route], row["error_rate_high"])
        bound.add_metric([route], row["bound"])
        t = row["threshold"]
        threshold.add_metric([route], 1.0 if t is None else t)
    yield rate
    yield high
    yield bound
    yield threshold
    checks = CounterMetricFamily(
        "routeguard_cache_shadow_checks",
        "Cached answers compared with a fresh upstream answer, by kind (shadow: an extra "
        "upstream call; miss: compared for free) and outcome",
        labels=["route", "kind", "outcome"],
    )
    for (route, kind, outcome), n in sorted(extra.checks.items()):
        checks.add_metric([route, kind, outcome], float(n))
    yield checks
    judge = CounterMetricFamily(
        "routeguard_cache_judge_calls",
        "This instance's judge-model comparisons on a route: called (an extra upstream call) "
        "or capped (judge_max_per_minute / judge_max_share: no call, no evidence)",
        labels=["route", "result"],
    )
    unshared = CounterMetricFamily(
        "routeguard_cache_judge_unshared_calls",
        "Judge-model calls this instance granted on its own cap alone because Redis did not "
        "answer (part of the called ones; the fleet-wide cap did not hold for them)",
        labels=["route"],
    )
    for route, row in sorted(extra.bounds.items()):
        judge.add_metric([route, "called"], float(row["judge_calls"]))
        judge.add_metric([route, "capped"], float(row["judge_capped"]))
        unshared.add_metric([route], float(row["judge_unshared"]))
    yield judge
    yield unshared


def _served_families(served: Mapping[str, int]) -> Iterator[Metric]:
    """The served-hit records this instance wrote to Redis (so feedback on a hit counts on any
    instance): events, not a partition (a late write is also written once it lands)."""
    events = CounterMetricFamily(
        "routeguard_cache_served_record_events",
        "Served-hit records: written, failed (Redis refused), late (the hit was answered "
        "before its record landed), unwaited (answered without waiting: Redis was slow)",
        labels=["event"],
    )
    for event in ("written", "failed", "late", "unwaited"):
        events.add_metric([event], float(served.get(event, 0)))
    yield events
