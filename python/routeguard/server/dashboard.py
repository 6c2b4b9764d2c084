"""The live dashboard at ``/ui``: a static page that polls one JSON summary.

``GET /ui`` (and ``/ui/app.js``, ``/ui/app.css``) are files shipped in this package
(``server/ui/``), served as they are: no build step, no CDN, nothing fetched from elsewhere
(the Content-Security-Policy allows this origin only). They hold no data, so they need no
key. The page asks for the master key or an admin virtual key (``admin: true``), keeps it in
the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` to the data endpoints:

- ``GET /ui/api/summary?window=SECONDS``: :meth:`Dashboard.summary`, documented field by
  field in docs/observability.md;
- ``POST /ui/api/approvals/{id}/approve`` (or ``/deny``): decides a pending tool call, as
  ``/admin/approvals`` does (:func:`routeguard.server.approvals.approvals_api`: every
  worker's calls when the proxy has a SQLite file to share them in).

Where each figure comes from: the SQLite spend log (:class:`~routeguard.observe.spend.
SpendRecords`) for everything over the chosen window (requests, errors, spend by key, team,
org and model, cache hits and savings, route mix, end-to-end latency); the Prometheus
families (:class:`~routeguard.server.metrics.Metrics`, summed over workers) for what the log
does not hold, counted since the proxy started (gateway overhead, time to first token,
fallbacks, open circuits, enforcement decisions); the budget store for budgets; the
approval queues (shared by the workers, :mod:`routeguard.server.approvals`) for pending
approvals.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from routeguard.budget.accounts import micros_to_usd
from routeguard.errors import InvalidRequest

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from routeguard.gateway import Gateway
    from routeguard.observe.spend import SpendRecords
    from routeguard.server.approvals import SharedApprovals
    from routeguard.server.metrics import Metrics

UI_PREFIX = "/ui"
API_PREFIX = "/ui/api/"
DEFAULT_WINDOW_S = 3600
MIN_WINDOW_S, MAX_WINDOW_S = 60, 30 * 86_400
BUCKETS = 60  # points on the requests-over-time chart
TOP = 50  # rows per spend table and of budgets
MAX_ACCOUNTS = 200  # budget accounts read per refresh
_CACHE_AFTER_S = 0.25  # a spend-log reading slower than this is reused (see Dashboard._logged)
_SPEND_GROUPS = {"key": "key_id", "team": "team", "org": "org", "model": "model"}

_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
# Nothing but this origin: no inline script, no third party, not framed by another site.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def is_ui_path(path: str) -> bool:
    """Whether ``path`` belongs to the dashboard."""
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def static_file(path: str) -> tuple[bytes, str] | None:
    """The bytes and content type of the dashboard file at ``path`` (None: no such file)."""
    entry = _FILES.get(path.removeprefix(UI_PREFIX).rstrip("/"))
    if entry is None:
        return None
    name, content_type = entry
    return _read(name), content_type


def _read(name: str) -> bytes:
    """A file of ``routeguard/server/ui`` (package data, read once per name)."""
    data = _cache.get(name)
    if data is None:
        data = _cache[name] = resources.files("routeguard.server").joinpath("ui", name).read_bytes()
    return data


_cache: dict[str, bytes] = {}


def parse_window(raw: str | None) -> int:
    """The ``window`` query parameter: whole seconds in the allowed range."""
    if raw is None:
        return DEFAULT_WINDOW_S
    if not raw.isdigit() or not MIN_WINDOW_S <= int(raw) <= MAX_WINDOW_S:
        raise InvalidRequest(
            f"window: expected whole seconds from {MIN_WINDOW_S} to {MAX_WINDOW_S}, got {raw!r}",
            param="window",
        )
    return int(raw)


@dataclass(frozen=True, slots=True)
class Scope:
    """Whether the figures cover every worker (see :meth:`Dashboard.summary`)."""

    spend_log: str  # "shared": one database for all workers; "worker": this process only
    metrics: str  # "all workers", "worker", or "off" (observability.metrics: false)


class Dashboard:
    """Builds the dashboard's summary from the proxy's spend log, metrics and stores."""

    def __init__(
        self,
        gateway: Gateway,
        spend: SpendRecords,
        metrics: Metrics | None,
        *,
        approvals: SharedApprovals | None = None,
        shared_spend: bool,
        metrics_shared: bool,
    ) -> None:
        self.gateway = gateway
        self.spend = spend
        self.metrics = metrics
        self.approvals = approvals
        self.scope = Scope(
            "shared" if shared_spend else "worker",
            "off" if metrics is None else ("all workers" if metrics_shared else "worker"),
        )
        self._logged_cache: dict[tuple[float, float], tuple[float, dict[str, Any]]] = {}
        self._logged_tasks: dict[tuple[float, float], asyncio.Future[dict[str, Any]]] = {}
        self._prices = {d.id: d for deps in gateway.config.deployments.values() for d in deps}

    def follow(self, gateway: Gateway) -> None:
        """Read budgets, keys, routes and prices from ``gateway`` from now on (a reload)."""
        self.gateway = gateway
        self._prices = {d.id: d for deps in gateway.config.deployments.values() for d in deps}

    async def summary(self, window_s: int, now: float | None = None) -> dict[str, Any]:
        """Every figure the page shows, for the last ``window_s`` seconds (aligned to
        :data:`BUCKETS` buckets) and, for metric-based figures, since the proxy started."""
        now = time.time() if now is None else now
        bucket = window_s / BUCKETS
        end = (math.floor(now / bucket) + 1) * bucket
        start = end - BUCKETS * bucket
        logged = await self._logged(start, end, bucket)
        if self.metrics is not None:
            self.metrics.flush()  # the requests just served count too
        families = await asyncio.to_thread(self._families)
        if self.approvals is not None:
            pending = await asyncio.to_thread(self.approvals.list)
        else:
            pending = [r.public() for q in self.gateway.approval_queues() for r in q.list()]
        budgets = await self._budgets(now)
        timeline = logged["timeline"]
        requests = sum(b["requests"] for b in timeline)
        errors = sum(b["errors"] for b in timeline)
        cache = logged["cache"]
        lookups = sum(r["lookups"] for r in cache)
        hits = sum(r["hits"] for r in cache)
        return {
            "object": "dashboard.summary",
            "generated_at": now,
            "window": {"start": start, "end": end, "seconds": window_s, "bucket_seconds": bucket},
            "scope": {
                "spend_log": self.scope.spend_log,
                "metrics": self.scope.metrics,
                "worker_pid": os.getpid(),
                "approvals": "worker" if self.approvals is None else "shared",
            },
            "totals": {
                "requests": requests,
                "errors": errors,
                "error_rate": errors / requests if requests else 0.0,
                "spend_usd": round(sum(b["cost_usd"] for b in timeline), 9),
                "saved_usd": round(sum(r["saved_usd"] for r in cache), 9),
                "cache_hit_rate": hits / lookups if lookups else None,
                "prompt_tokens": logged["tokens"][0],
                "completion_tokens": logged["tokens"][1],
            },
            "timeline": timeline,
            "spend": logged["spend"],
            "budgets": budgets,
            "cache": cache,
            "routes": logged["routes"],
            "latency": logged["latency"] + _metric_latency(families),
            "fallbacks": _by_label(families, "routeguard_fallbacks", "route"),
            "circuits": _circuits(families, sorted(self._prices), now),
            "enforcement": _enforcement(families),
            "approvals": pending,
        }

    # ------------------------------------------------------------------ the spend log

    async def _logged(self, start: float, end: float, bucket: float) -> dict[str, Any]:
        """The spend-log figures of ``[start, end)``. Several dashboards share one reading
        in flight, and a reading that took long is reused for three times as long, so that
        a wide window over a busy log never keeps the database busy more than a quarter of
        the time (a quick one is redone on every refresh)."""
        key = (start, end)
        cached = self._logged_cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        task = self._logged_tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self._read, start, end, bucket))
            self._logged_tasks[key] = task
            task.add_done_callback(lambda _: self._logged_tasks.pop(key, None))
        began = time.monotonic()
        logged: dict[str, Any] = await asyncio.shield(task)
        took = time.monotonic() - began
        if took > _CACHE_AFTER_S:
            self._logged_cache = {key: (time.monotonic() + 3 * took, logged)}
        return logged

    def _families(self) -> list[Metric]:
        """The recorded metric families, summed over workers (blocking: run in a thread)."""
        return self.metrics.families() if self.metrics is not None else []

    def _read(self, start: float, end: float, bucket: float) -> dict[str, Any]:
        """Everything read from the spend log (blocking: run in a thread)."""
        records = self.spend
        records.flush(1.0)  # the requests just served count too
        spend = {
            name: records.sums(group_by=col, start=start, end=end, limit=TOP)
            for name, col in _SPEND_GROUPS.items()
        }
        names = self._key_names()
        for row in spend["key"]:
            row["name"] = names.get(row["group"])
        mix = records.breakdown(("route", "model", "deployment", "cache"), start=start, end=end)
        quantiles = records.latency_quantiles((0.5, 0.95), start=start, end=end)
        latency = []
        for layer, kind in (("end to end", "all"), ("cache hits", "hit"),
                            ("upstream calls", "upstream")):  # fmt: skip
            count, (p50, p95) = quantiles[kind]
            latency.append({"layer": layer, "source": "spend log", "count": count,
                            "p50_ms": p50, "p95_ms": p95})  # fmt: skip
        tokens = (
            sum(r["prompt_tokens"] for r in mix),
            sum(r["completion_tokens"] for r in mix),
        )
        return {
            "timeline": records.timeline(start, end, bucket),
            "spend": spend,
            "cache": self._cache_rows(mix),
            "routes": self._route_rows(mix),
            "latency": latency,
            "tokens": tokens,
        }

    def _key_names(self) -> dict[str, str | None]:
        """Key id -> the key's name, for the spend-by-key table (empty if unreadable)."""
        try:
            return {r.key_id: r.spec.name for r in self.gateway.keys.list()}
        except Exception:  # a key store that does not answer only costs the names
            return {}

    def _cache_rows(self, mix: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Per route: cache lookups, hits, hit rate and the dollars the hits saved (their
        usage at the prices of the deployment that first answered)."""
        rows: dict[str, dict[str, Any]] = {}
        for r in mix:
            if r["cache"] not in ("hit", "miss"):
                continue
            row = rows.setdefault(
                r["route"] or "", {"route": r["route"], "lookups": 0, "hits": 0, "saved_usd": 0.0}
            )
            row["lookups"] += r["requests"]
            if r["cache"] == "hit":
                row["hits"] += r["requests"]
                dep = self._prices.get(r["deployment"] or "")
                if dep is not None:
                    row["saved_usd"] += dep.cost(r["prompt_tokens"], r["completion_tokens"])
        out = sorted(rows.values(), key=lambda x: -x["lookups"])
        for row in out:
            row["hit_rate"] = row["hits"] / row["lookups"]
            row["saved_usd"] = round(row["saved_usd"], 9)
        return out

    def _route_rows(self, mix: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Per asked route: requests per served model, and for a learned cheap/strong route
        the share of upstream calls that went to the strong model against its target."""
        routes: dict[str, dict[str, Any]] = {}
        for r in mix:
            if r["model"] is None:  # refused before a model was chosen
                continue
            route = routes.setdefault(r["route"] or "", {"route": r["route"], "requests": 0,
                                                         "models": {}, "calls": {}})  # fmt: skip
            route["requests"] += r["requests"]
            route["models"][r["model"]] = route["models"].get(r["model"], 0) + r["requests"]
            if r["cache"] != "hit":
                route["calls"][r["model"]] = route["calls"].get(r["model"], 0) + r["requests"]
        out = []
        for name, route in sorted(routes.items(), key=lambda kv: -kv[1]["requests"]):
            settings = self.gateway.config.routing.get(name)
            strong = settings.strong if settings is not None else None
            calls = route.pop("calls")
            share = None
            if strong is not None and settings is not None and settings.cheap is not None:
                made = calls.get(strong, 0) + calls.get(settings.cheap, 0)
                share = calls.get(strong, 0) / made if made else None
            route["models"] = [
                {"model": m, "requests": n, "share": n / route["requests"]}
                for m, n in sorted(route["models"].items(), key=lambda kv: -kv[1])
            ]
            route.update(
                strong=strong,
                strong_share=share,
                strong_target=settings.strong_share if settings is not None else None,
            )
            out.append(route)
        return out

    # ------------------------------------------------------------------ budgets

    async def _budgets(self, now: float) -> list[dict[str, Any]]:
        """Every budget account with a limit or spend: spent, held and limits in dollars,
        and when its period resets (None: rolling or total); fullest first."""
        layer = self.gateway.budget
        backend = layer.backend
        # The config file's accounts, then keys' own ones, up to MAX_ACCOUNTS: each costs a
        # store read per refresh.
        configured = layer.configured_accounts
        accounts = sorted(backend.accounts, key=lambda a: (a.name not in configured, a.name))
        accounts = accounts[:MAX_ACCOUNTS]
        if not accounts:
            return []
        try:
            async with asyncio.timeout(2.0):
                usage = await asyncio.gather(*(layer.usage(a.name) for a in accounts))
        except Exception as exc:  # the store is down: say so rather than fail the page
            return [{"error": f"budget store unavailable ({type(exc).__name__})"}]
        rows: list[dict[str, Any]] = []
        for acc, (s, h) in zip(accounts, usage, strict=True):
            limit = None if acc.limit is None else float(micros_to_usd(acc.limit))
            used = float(micros_to_usd(s))
            resets = acc.period.resets_at(now)
            rows.append({
                "name": acc.name,
                "parent": acc.parent,
                "period": acc.period.kind,
                "spent_usd": used,
                "reserved_usd": float(micros_to_usd(h)),
                "limit_usd": limit,
                "soft_limit_usd": None if acc.soft_limit is None
                else float(micros_to_usd(acc.soft_limit)),
                "used": used / limit if limit else None,
                "resets_at": None if resets is None else resets.timestamp(),
            })  # fmt: skip
        rows.sort(key=lambda r: (-(r["used"] or 0.0), -r["spent_usd"], r["name"]))
        return rows[:TOP]


# ---------------------------------------------------------------------- metric families


def _samples(families: Iterable[Metric], name: str) -> list[Any]:
    """Every sample of the family ``name`` (its counters' ``_total`` samples included)."""
    return [s for f in families if f.name == name for s in f.samples]


def _by_label(families: Iterable[Metric], name: str, label: str) -> dict[str, Any]:
    """A counter's total and its split by one label, since the proxy started."""
    split: dict[str, float] = {}
    for s in _samples(families, name):
        if s.name.endswith("_total"):
            key = s.labels.get(label, "")
            split[key] = split.get(key, 0.0) + s.value
    rows = [{label: k, "count": v} for k, v in sorted(split.items(), key=lambda kv: -kv[1]) if v]
    return {"total": sum(split.values()), "by_" + label: rows}


def _circuits(families: Iterable[Metric], deployments: list[str], now: float) -> list[Any]:
    """Each deployment's circuit: open (any worker) and until when (None: probing)."""
    until: dict[str, float] = {}
    for s in _samples(families, "routeguard_deployment_circuit_open_until"):
        dep = s.labels.get("deployment", "")
        until[dep] = max(until.get(dep, 0.0), s.value)
    out = []
    for dep in deployments:
        t = until.get(dep, 0.0)
        is_open = math.isinf(t) or t > now
        out.append({"deployment": dep, "open": is_open,
                    "until": t if is_open and not math.isinf(t) else None})  # fmt: skip
    return out


def _enforcement(families: Iterable[Metric]) -> dict[str, Any]:
    """Tool-call decisions by effect, rule and outcome, and how many were denied."""
    rows = [
        {"effect": s.labels.get("effect"), "rule": s.labels.get("rule"),
         "outcome": s.labels.get("outcome"), "count": s.value}
        for s in _samples(families, "routeguard_enforcement_decisions")
        if s.name.endswith("_total") and s.value
    ]  # fmt: skip
    rows.sort(key=lambda r: -r["count"])
    denied = sum(r["count"] for r in rows if r["outcome"] == "denied")
    return {"decisions": rows, "denied": denied, "allowed": sum(r["count"] for r in rows) - denied}


_HISTOGRAMS = (
    ("gateway overhead", "routeguard_overhead_seconds"),
    ("upstream-served request", "gen_ai_client_operation_duration_seconds"),
    ("time to first token", "gen_ai_server_time_to_first_token_seconds"),
)


def _metric_latency(families: Iterable[Metric]) -> list[dict[str, Any]]:
    """p50/p95 of the latency histograms (all label sets together), in milliseconds."""
    families = list(families)
    out = []
    for layer, name in _HISTOGRAMS:
        buckets: dict[float, float] = {}
        for s in _samples(families, name):
            if s.name == name + "_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
        if not buckets:
            continue
        edges = sorted(buckets.items())
        count = int(edges[-1][1])
        out.append({
            "layer": layer, "source": "metrics", "count": count,
            "p50_ms": _quantile(edges, 0.5), "p95_ms": _quantile(edges, 0.95),
        })  # fmt: skip
    return out


def _quantile(edges: list[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile in ms of cumulative buckets ``(le, count)``, interpolated within
    its bucket as Prometheus' ``histogram_quantile`` does (None when empty)."""
    total = edges[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in edges:
        if count >= rank:
            if math.isinf(le):  # beyond the last finite bucket: its upper bound
                return lower_le * 1000
            inside = count - lower_count
            frac = (rank - lower_count) / inside if inside else 1.0
            return (lower_le + (le - lower_le) * frac) * 1000
        lower_le, lower_count = le, count
    return lower_le * 1000
