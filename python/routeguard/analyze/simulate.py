"""``routeguard simulate``: replay a request log through the real Gateway against the simulated
upstream, with the config's layers and without them, and compare.

Data flow: the config file (our format or LiteLLM's) -> every deployment re-pointed at an
in-process :class:`~routeguard.mock.MockServer` (same wire format, key
``simulated``; the proxy's own ``server`` keys dropped) -> two Gateways over that config:

- **layered**: everything the config sets (routes, routing, cache);
- **baseline**: the same model list with no cache and no routes; each request goes to the
  model it asked for (a route alias goes to its ``strong`` / pinned ``target``, else to the
  priciest alias it can reach).

Each log record is replayed in order, one at a time, through both (``chat_result``). A
record goes to its route when the layered gateway serves that alias, else to the model it
asked for; records neither gateway serves are counted as unserved. Per request we time the
layers by wrapping, from outside the gateway, the embedder (``embedding``), the cache
layer's ``lookup``/``store`` (``cache``, embedding excluded) and each router's ``aroute``
(``routing``, embedding excluded); ``upstream`` is the gateway's own ``upstream_s`` and
``total`` the wall time of ``chat_result``. Costs are the gateway's (the simulator's usage
priced with the config's ``$/1M tokens``; a cache hit costs nothing). A *strong call* is an
upstream call served by a route's ``strong`` alias (by the priciest alias when no route
names one).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard import config as config_mod
from routeguard.analyze.logs import LogReadResult, LogRecord, read_log
from routeguard.analyze.progress import Progress
from routeguard.embed.base import Embedder
from routeguard.errors import RouteguardError
from routeguard.gateway import Gateway

F32 = npt.NDArray[np.float32]
LAYERS = ("embedding", "cache", "routing", "upstream", "gateway", "total")


class _Clock:
    """Seconds spent per layer during the current request."""

    def __init__(self) -> None:
        self.now: dict[str, float] = {}
        self.ran: set[str] = set()  # the wrapped layers that ran during this request

    def reset(self) -> None:
        self.now = dict.fromkeys(LAYERS, 0.0)
        self.ran = set()

    def add(self, layer: str, seconds: float) -> None:
        self.now[layer] = self.now.get(layer, 0.0) + seconds

    def mark(self, layer: str, seconds: float) -> None:
        """Add time to a wrapped layer and note that it ran."""
        self.add(layer, seconds)
        self.ran.add(layer)


class _TimedEmbedder:
    """An embedder that reports its time to a clock (no ``aembed``: callers then use
    ``embed``, on a worker thread in the cache layer, inline in the router)."""

    def __init__(self, inner: Embedder, clock: _Clock) -> None:
        self.inner = inner
        self.clock = clock
        self.dim = inner.dim

    def embed(self, texts: Sequence[str]) -> F32:
        t0 = time.perf_counter()
        try:
            return np.asarray(self.inner.embed(texts), dtype=np.float32)
        finally:
            self.clock.mark("embedding", time.perf_counter() - t0)


def _timed(
    fn: Callable[..., Any], layer: str, clock: _Clock, *, is_async: bool
) -> Callable[..., Any]:
    """``fn`` reporting its time, less the embedding inside it, as ``layer``."""
    if is_async:

        async def awrapped(*args: Any, **kwargs: Any) -> Any:
            e0, t0 = clock.now.get("embedding", 0.0), time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                inner = clock.now.get("embedding", 0.0) - e0
                clock.mark(layer, time.perf_counter() - t0 - inner)

        return awrapped

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        e0, t0 = clock.now.get("embedding", 0.0), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock.mark(layer, time.perf_counter() - t0 - (clock.now.get("embedding", 0.0) - e0))

    return wrapped


@dataclass(slots=True)
class RunStats:
    """One replay's figures."""

    name: str
    requests: int = 0
    errors: int = 0
    cost: float = 0.0
    cache_hits: int = 0
    routed: int = 0  # requests a routed route decided (cache hits excluded)
    strong_calls: int = 0
    served_by: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LAYERS})
    per_route: dict[str, dict[str, float]] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        """Cache hits over requests served."""
        return self.cache_hits / self.requests if self.requests else 0.0

    @property
    def strong_share(self) -> float:
        """Strong-model calls over requests served."""
        return self.strong_calls / self.requests if self.requests else 0.0

    def latency(self) -> dict[str, dict[str, float]]:
        """Per layer, over the requests that went through it: p50, p95 and mean in
        milliseconds, and ``n`` (a cache hit skips routing and upstream, an exact hit
        skips embedding, a pinned route skips all three)."""
        out = {}
        for layer, xs in self.samples.items():
            a = np.asarray(xs or [0.0]) * 1000
            out[layer] = {
                "p50": float(np.percentile(a, 50)),
                "p95": float(np.percentile(a, 95)),
                "mean": float(a.mean()),
                "n": float(len(xs)),
            }
        return out

    def observe(self, route: str, res: Any, seconds: dict[str, float], ran: set[str]) -> None:
        """Count one served request (``res`` a ChatResult) and its layer times."""
        self.requests += 1
        self.cost += res.cost
        self.served_by[res.alias] = self.served_by.get(res.alias, 0) + 1
        row = self.per_route.setdefault(
            route, {"requests": 0, "cache_hits": 0, "strong_calls": 0, "cost": 0.0}
        )
        row["requests"] += 1
        row["cost"] += res.cost
        for layer in LAYERS:
            if layer in ran:
                self.samples[layer].append(seconds[layer])

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable figures."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_examples": self.error_examples,
            "cost": self.cost,
            "cost_per_request": self.cost / self.requests if self.requests else 0.0,
            "cache_hits": self.cache_hits,
            "cache_hit_rate": self.hit_rate,
            "routed_decisions": self.routed,
            "strong_calls": self.strong_calls,
            "strong_share": self.strong_share,
            "served_by": self.served_by,
            "per_route": self.per_route,
            "latency_ms": self.latency(),
        }


@dataclass(slots=True)
class Simulation:
    """Layered vs baseline replay of one log."""

    source: str
    config: str
    records: int
    skipped: int
    unserved: int
    layered: RunStats
    baseline: RunStats
    strong_models: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable results (what ``--json`` prints)."""
        base, lay = self.baseline.cost, self.layered.cost
        return {
            "source": self.source,
            "config": self.config,
            "records": self.records,
            "skipped_lines": self.skipped,
            "unserved": self.unserved,
            "strong_models": self.strong_models,
            "cost_savings": 1.0 - lay / base if base > 0 else 0.0,
            "layered": self.layered.to_dict(),
            "baseline": self.baseline.to_dict(),
        }

    def summary(self) -> str:
        """A small table for the terminal."""
        lay, base = self.layered, self.baseline
        lines = [
            f"{self.source}: {self.records} requests replayed through {self.config} "
            f"against the simulated upstream"
            + (f" ({self.skipped} bad lines skipped)" if self.skipped else "")
            + (f"; {self.unserved} not served by the config" if self.unserved else ""),
            f"{'':24}{'layered':>14}{'baseline':>14}",
            f"{'cost ($)':24}{lay.cost:>14.6f}{base.cost:>14.6f}",
            f"{'cost per 1k req ($)':24}{1000 * lay.cost / max(lay.requests, 1):>14.4f}"
            f"{1000 * base.cost / max(base.requests, 1):>14.4f}",
            f"{'cache hit rate':24}{lay.hit_rate:>14.1%}{base.hit_rate:>14.1%}",
            f"{'strong-call share':24}{lay.strong_share:>14.1%}{base.strong_share:>14.1%}",
            f"{'errors':24}{lay.errors:>14}{base.errors:>14}",
        ]
        ll, bl = lay.latency(), base.latency()
        lines.append(f"{'latency ms (p50 / p95, n)':24}{'layered':>22}{'baseline':>22}")
        for layer in LAYERS:
            cells = [
                f"{x[layer]['p50']:.2f} / {x[layer]['p95']:.2f}, {int(x[layer]['n'])}"
                for x in (ll, bl)
            ]
            lines.append(f"{'  ' + layer:24}{cells[0]:>22}{cells[1]:>22}")
        for route, row in sorted(lay.per_route.items()):
            n = row["requests"] or 1
            lines.append(
                f"route {route}: {int(row['requests'])} requests, "
                f"cache hits {row['cache_hits'] / n:.1%},"
                f" strong calls {row['strong_calls'] / n:.1%}, ${row['cost']:.6f}"
                f" (baseline ${base.per_route.get(route, {}).get('cost', 0.0):.6f})"
            )
        saved = self.to_dict()["cost_savings"]
        lines.append(f"cost saved vs baseline: {saved:.1%}")
        return "\n".join(lines)


def simulated_config(data: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """A copy of a raw config whose deployments all point at the simulated upstream."""
    out = copy.deepcopy(dict(data))
    for entry in out.get("model_list") or []:
        if not isinstance(entry, dict):
            continue
        params = entry.get("litellm_params")
        if isinstance(params, dict):  # LiteLLM format: the provider is the model's prefix
            prefix = str(params.get("model", "")).split("/", 1)[0]
            kind = prefix if prefix in ("anthropic", "gemini") else "openai"
            target = params
        else:
            kind = str(entry.get("type", "openai"))
            target = entry
        target["api_base"] = base_url + ("/v1" if kind == "openai" else "")
        target["api_key"] = "simulated"
    out.pop("server", None)
    out.pop("general_settings", None)
    return out


def baseline_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """The same models with no cache, no routes and no budgets."""
    out = {k: v for k, v in data.items() if k not in ("cache", "routes", "budgets")}
    ls = out.get("litellm_settings")
    if isinstance(ls, dict):
        out["litellm_settings"] = {k: v for k, v in ls.items() if k != "cache"}
    return out


def _target(gw: Gateway, r: LogRecord) -> str | None:
    """The alias a record is sent to (module docstring), or None if not served."""
    served = set(gw.models())
    for alias in (r.route, r.model):
        if alias in served:
            return alias
    return None


def _baseline_alias(layered: Gateway, baseline: Gateway, r: LogRecord, alias: str) -> str | None:
    """The model the baseline sends a record to: the one it asked for when served, else its
    route's strong (or pinned) alias, else the priciest alias the route can reach."""
    for a in (r.model, alias):
        if a in baseline.balancers:
            return a
    router = layered.routers.get(alias)
    if router is None:
        return None
    for b in (router.strong, router.target if router.mode == "pinned" else None):
        if b is not None and b in baseline.balancers:
            return b
    reachable = [a for a in router.targets() if a in baseline.balancers]
    return max(reachable, key=lambda a: _price(baseline, a)) if reachable else None


def _price(gw: Gateway, alias: str) -> float:
    return max(
        d.input_cost_per_mtok + d.output_cost_per_mtok for d in gw.balancers[alias].deployments
    )


async def _replay(
    gw: Gateway,
    clock: _Clock,
    items: list[tuple[LogRecord, str]],
    stats: RunStats,
    strong: set[str],
    bar: Progress,
) -> None:
    for r, alias in items:
        req = copy.deepcopy(r.request)
        req["model"] = alias
        req.pop("stream", None)
        req.pop("stream_options", None)
        clock.reset()
        t0 = time.perf_counter()
        try:
            res = await gw.chat_result(req, tenant=r.tenant)
        except RouteguardError as exc:
            stats.errors += 1
            if len(stats.error_examples) < 5:
                stats.error_examples.append(f"line {r.line}: {exc.message}")
            bar.advance()
            continue
        total = time.perf_counter() - t0
        ran = {"total", "gateway"} | {k for k in clock.ran}
        if res.cache == "hit":
            stats.cache_hits += 1
        else:
            ran.add("upstream")
            if res.route is not None and res.route != "pinned":
                stats.routed += 1
            if res.alias in strong:
                stats.strong_calls += 1
        clock.add("upstream", res.upstream_s)
        clock.add("total", total)
        spent = sum(clock.now[k] for k in ("embedding", "cache", "routing", "upstream"))
        clock.add("gateway", max(0.0, total - spent))
        stats.observe(r.route, res, clock.now, ran)
        row = stats.per_route[r.route]
        row["cache_hits"] += res.cache == "hit"
        row["strong_calls"] += res.cache != "hit" and res.alias in strong
        bar.advance()


def _strong_models(gw: Gateway) -> set[str]:
    """The routes' ``strong`` aliases; when no route names one, the priciest alias."""
    named = {r.strong for r in gw.routers.values() if r.mode == "routed" and r.strong}
    if named:
        return {s for s in named if s is not None}
    return {max(gw.balancers, key=lambda a: _price(gw, a))} if gw.balancers else set()


def _instrument(gw: Gateway, clock: _Clock) -> None:
    """Wrap the cache layer and the routers so their time lands on ``clock``."""
    if gw.cache is not None:
        cache = gw.cache
        setattr(cache, "lookup", _timed(cache.lookup, "cache", clock, is_async=True))  # noqa: B010
        setattr(cache, "store", _timed(cache.store, "cache", clock, is_async=False))  # noqa: B010
    for router in gw.routers.values():
        setattr(router, "aroute", _timed(router.aroute, "routing", clock, is_async=True))  # noqa: B010


async def simulate_async(
    config_path: str | Path | Mapping[str, Any],
    source: str | Path | LogReadResult,
    *,
    embedder: Embedder | None = None,
    ttft: float = 0.0,
    progress: bool | None = None,
) -> Simulation:
    """Replay ``source`` through the config's layers and through the baseline (see the
    module docstring); ``ttft`` is the simulated upstream's delay before answering."""
    from routeguard.mock import MockServer

    if isinstance(config_path, Mapping):
        raw, cname = dict(config_path), "<config>"
    else:
        raw, cname = config_mod.read_file(config_path), str(config_path)
    if isinstance(source, LogReadResult):
        log, sname = source, "<records>"
    else:
        log, sname = read_log(source), str(source)
    if not log.records:
        raise RouteguardError(f"{sname}: no usable requests")
    if embedder is None:
        from routeguard.embed import default_embedder

        embedder = default_embedder()
    embedder.embed(["warm-up"])  # load the model now, not inside the first timed request
    clock = _Clock()
    timed = _TimedEmbedder(embedder, clock)
    with MockServer(ttft=ttft) as mock:
        data = simulated_config(raw, mock.url)
        layered = Gateway(config_mod.load(data), embedder=timed)
        baseline = Gateway(config_mod.load(baseline_config(data)), embedder=timed)
        strong = _strong_models(layered)
        _instrument(layered, clock)
        lay_items: list[tuple[LogRecord, str]] = []
        base_items: list[tuple[LogRecord, str]] = []
        unserved = 0
        for r in log.records:
            alias = _target(layered, r)
            b_alias = None if alias is None else _baseline_alias(layered, baseline, r, alias)
            if alias is None or b_alias is None:
                unserved += 1
                continue
            lay_items.append((r, alias))
            base_items.append((r, b_alias))
        lay_stats, base_stats = RunStats("layered"), RunStats("baseline")
        bar = Progress("replaying", 2 * len(lay_items), enabled=progress)
        try:
            await _replay(layered, clock, lay_items, lay_stats, strong, bar)
            await _replay(baseline, clock, base_items, base_stats, strong, bar)
        finally:
            bar.close()
            await layered.aclose()
            await baseline.aclose()
    return Simulation(
        source=sname,
        config=cname,
        records=len(log.records),
        skipped=log.skipped,
        unserved=unserved,
        layered=lay_stats,
        baseline=base_stats,
        strong_models=sorted(strong),
    )


def simulate(
    config_path: str | Path | Mapping[str, Any],
    source: str | Path | LogReadResult,
    **kwargs: Any,
) -> Simulation:
    """:func:`simulate_async` on a fresh event loop."""
    return asyncio.run(simulate_async(config_path, source, **kwargs))
