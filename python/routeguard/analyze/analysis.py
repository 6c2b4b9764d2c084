"""``routeguard analyze``: a request log -> per-route repetition, complexity, savings, advice.

Data flow: :func:`~routeguard.analyze.logs.read_log` -> records grouped by route -> every
distinct prompt text embedded once, in batches (the embedder's batch API) -> the learned
router scores the routing texts (reusing those vectors when the embedder is the router's) ->
per route :func:`~routeguard.analyze.repetition.analyse_repetition`,
:func:`~routeguard.analyze.complexity.analyse_complexity` and
:func:`~routeguard.analyze.recommend.recommend` -> an :class:`Analysis`, which renders as
JSON (:meth:`Analysis.to_dict`), a text summary (:meth:`Analysis.summary`) and an HTML
report (:mod:`routeguard.analyze.html`).

Prices ($/1M tokens) come from the config's ``model_list`` when one is given, else from the
built-in defaults (:mod:`routeguard.defaults`). Per route, the strong model is the route's
``strong`` in the config, else the model the requests ask for (when priced), else the
priciest known model; the cheap one is the route's ``cheap``, else the cheapest known model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.analyze.bounding import BoundEstimate, estimate_bound
from routeguard.analyze.complexity import Complexity, Price, analyse_complexity, score_cutoffs
from routeguard.analyze.logs import LogReadResult, LogRecord, read_log
from routeguard.analyze.progress import Progress
from routeguard.analyze.recommend import Policy, Recommendation, config_snippet, recommend
from routeguard.analyze.repetition import THRESHOLDS, Repetition, analyse_repetition
from routeguard.config import Config
from routeguard.embed.base import Embedder
from routeguard.errors import RouteguardError
from routeguard.routing.router import prompt_text

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Scorer = Callable[[list[str], F32 | None], F64]
"""``scorer(texts, vectors)``: router scores (higher = more in need of the strong model);
``vectors`` are the texts' embeddings, or None when the embedder is not the router's."""
Probability = Callable[[F64], F64]
"""``probability(scores)``: the calibrated P(the cheap answer is as good) of each score."""

EMBED_BATCH = 64


@dataclass(slots=True)
class RouteReport:
    """Everything found about one route."""

    route: str
    requests: int
    models: dict[str, int]
    repetition: Repetition
    complexity: Complexity
    recommendation: Recommendation
    bound: BoundEstimate | None = None  # the route under cache.max_error_rate


@dataclass(slots=True)
class Analysis:
    """The result of analysing one log."""

    source: str
    requests: int
    skipped: int
    problems: list[str]
    routes: list[RouteReport]
    thresholds: list[float] = field(default_factory=lambda: list(THRESHOLDS))
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    unpriced: list[str] = field(default_factory=list)  # requested models with no known price

    def config_yaml(self) -> str:
        """The recommended ``routes:`` block for every route."""
        return config_snippet([r.recommendation for r in self.routes])

    def totals(self) -> dict[str, float]:
        """Whole-log figures: baseline and recommended cost per request, est. hit rate."""
        n = sum(r.requests for r in self.routes) or 1
        base = sum(r.requests * r.recommendation.baseline_cost_per_request for r in self.routes)
        rec = sum(r.requests * r.recommendation.est_cost_per_request for r in self.routes)
        hits = sum(r.requests * r.recommendation.hit_rate for r in self.routes)
        return {
            "baseline_cost_per_request": base / n,
            "recommended_cost_per_request": rec / n,
            "savings": 1.0 - rec / base if base > 0 else 0.0,
            "cache_hit_rate": hits / n,
        }

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable results (what ``--json`` prints)."""
        return {
            "source": self.source,
            "requests": self.requests,
            "skipped_lines": self.skipped,
            "problems": self.problems,
            "unpriced_models": self.unpriced,
            "prices_per_mtok": {k: {"input": a, "output": b} for k, (a, b) in self.prices.items()},
            "totals": self.totals(),
            "routes": [
                {
                    "route": r.route,
                    "requests": r.requests,
                    "models": r.models,
                    "repetition": dataclasses.asdict(r.repetition),
                    "complexity": dataclasses.asdict(r.complexity),
                    "recommendation": dataclasses.asdict(r.recommendation),
                    "error_bound": None if r.bound is None else dataclasses.asdict(r.bound),
                    "config_yaml": r.recommendation.yaml(),
                }
                for r in self.routes
            ],
            "config_yaml": self.config_yaml(),
        }

    def summary(self) -> str:
        """A few lines per route for the terminal."""
        t = self.totals()
        out = [
            f"{self.source}: {self.requests} requests, {len(self.routes)} routes"
            + (f", {self.skipped} bad lines skipped" if self.skipped else ""),
        ]
        if self.unpriced:
            out.append(
                f"note: no price for {', '.join(self.unpriced)}: priced as each route's strong "
                "model (pass --config with their prices)"
            )
        for r in self.routes:
            rep, cx, rec = r.repetition, r.complexity, r.recommendation
            row = rep.row(rec.threshold or 0.9)
            share = cx.target(0.9).strong_share if cx.targets else 0.0
            out.append(
                f"- {r.route} ({r.requests} req): exact repeats {rep.exact_hit_rate:.1%}, "
                f"hit rate {row.hit_rate:.1%} @ {row.threshold:.2f} "
                f"(false-hit risk {row.false_hit_risk:.1%}), near-dup share "
                f"{rep.near_duplicate_share:.1%}; est. routing APGR {cx.est_apgr:.3f}, "
                f"strong share for 90% quality {share:.0%} "
                f"({cx.cheap} / {cx.strong}); ${cx.baseline_cost_per_request * 1000:.4f}"
                f" -> ${rec.est_cost_per_request * 1000:.4f} per 1k req"
            )
            out.append(f"    => {rec.verdict}: " + "; ".join(rec.reasons))
            b = r.bound
            if b is not None and b.requests:
                edge = "none" if b.threshold is None else f"{b.threshold:.2f}"
                out.append(
                    f"    max_error_rate {b.max_error_rate:g}: hit rate {b.hit_rate:.1%} "
                    f"({b.semantic_hits} semantic), wrong {b.wrong_rate:.1%} "
                    f"(<= {b.wrong_high:.1%} at 95%), shadow calls {b.shadow_per_request:.1%}"
                    f" of requests, threshold {edge}"
                )
            elif b is not None:
                out.append(f"    max_error_rate {b.max_error_rate:g}: {b.note}")
        out.append(
            f"total: ${t['baseline_cost_per_request'] * 1000:.4f} -> "
            f"${t['recommended_cost_per_request'] * 1000:.4f} per 1k requests "
            f"({t['savings']:.0%} saved, est. cache hit rate {t['cache_hit_rate']:.1%})"
        )
        out.append("recommended config:")
        out.append(self.config_yaml().rstrip())
        return "\n".join(out)


def price_table(config: Config | None = None) -> dict[str, Price]:
    """Model name -> price: the config's aliases and upstream model names, else defaults."""
    out: dict[str, Price] = {}
    if config is None:
        from routeguard.defaults import MODELS

        for alias, (_kind, model, _env, p_in, p_out, _window) in MODELS.items():
            out[alias] = out.setdefault(model, Price(p_in, p_out))
        return out
    for alias, deps in config.deployments.items():
        for d in deps:
            price = Price(d.input_cost_per_mtok, d.output_cost_per_mtok)
            out.setdefault(d.model, price)
            out.setdefault(alias, price)
    return out


def _default_aliases() -> list[str]:
    from routeguard.defaults import MODELS

    return list(MODELS)


def _blended(p: Price) -> float:
    return p.input + p.output


def pick_models(
    route: str,
    records: Sequence[LogRecord],
    prices: dict[str, Price],
    config: Config | None,
    cheap: str | None,
    strong: str | None,
) -> tuple[str, str]:
    """The ``(cheap, strong)`` models to price routing with (see the module docstring)."""
    if not prices:
        raise RouteguardError("no model prices known: pass --config with a model_list")
    spec = config.routing.get(route) if config is not None else None
    aliases = (
        config.aliases if config is not None else [a for a in _default_aliases() if a in prices]
    )
    ranked = sorted(aliases or prices, key=lambda m: (_blended(prices[m]), m))
    models = [r.model for r in records]
    usual = max(sorted(set(models)), key=models.count) if models else ""
    strong = (
        strong
        or (spec.strong if spec is not None else None)
        or (usual if usual in prices else ranked[-1])
    )
    cheap = cheap or (spec.cheap if spec is not None else None) or ranked[0]
    for name in (cheap, strong):
        if name not in prices:
            raise RouteguardError(
                f"no price for model '{name}': known models are {', '.join(sorted(prices))}"
            )
    return str(cheap), str(strong)


def default_scorer() -> Scorer:
    """The shipped learned router as a :data:`Scorer`."""
    from routeguard.routing import default_router

    router = default_router()

    def score(texts: list[str], vectors: F32 | None) -> F64:
        usable = vectors is not None and vectors.shape[1] == router.dim
        return router.score(texts, vectors if usable else None)

    return score


def default_probability() -> Probability | None:
    """The shipped router's score -> probability calibration (None if it has none)."""
    from routeguard.routing import default_router

    cal = default_router().calibration
    if cal is None:
        return None

    def probability(scores: F64) -> F64:
        return cal(scores)

    return probability


def embed_texts(texts: Sequence[str], embedder: Embedder, *, progress: bool | None = None) -> F32:
    """``(len(texts), dim)`` unit rows, embedded in batches with a progress line."""
    bar = Progress("embedding prompts", len(texts), enabled=progress)
    parts = []
    for i in range(0, len(texts), EMBED_BATCH):
        parts.append(np.asarray(embedder.embed(list(texts[i : i + EMBED_BATCH])), np.float32))
        bar.update(min(i + EMBED_BATCH, len(texts)))
    bar.close()
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(parts)


def analyze(
    source: str | Path | LogReadResult,
    *,
    embedder: Embedder | None = None,
    scorer: Scorer | None = None,
    config: Config | None = None,
    cheap: str | None = None,
    strong: str | None = None,
    policy: Policy | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
    progress: bool | None = None,
    probability: Probability | None = None,
    max_error_rate: float | None = 0.02,
) -> Analysis:
    """Analyse a request log (a path, or records already read); see the module docstring.
    ``probability`` maps scores to calibrated probabilities (default: the shipped router's
    calibration when ``scorer`` is the default too; without one, scores are read as gains);
    ``max_error_rate`` (None: skipped) replays each route under that wrong-hit bound."""
    if isinstance(source, LogReadResult):
        log, name = source, "<records>"
    else:
        path = Path(source)
        size = path.stat().st_size if path.is_file() else 0
        bar = Progress("reading log", size, enabled=progress)
        log, name = read_log(path, on_line=bar.update), str(path)
        bar.close()
    if not log.records:
        detail = f" ({log.skipped} bad lines; first: {log.problems[0]})" if log.problems else ""
        raise RouteguardError(f"{name}: no usable requests{detail}")
    if embedder is None:
        from routeguard.embed import default_embedder

        embedder = default_embedder()
    if scorer is None:
        scorer = default_scorer()
        if probability is None:
            probability = default_probability()
    prices = price_table(config)

    routes: dict[str, list[LogRecord]] = {}
    for r in log.records:
        routes.setdefault(r.route, []).append(r)
    routing_text = [prompt_text(r.request) for r in log.records]
    distinct = list(dict.fromkeys([*(r.prompt for r in log.records if r.prompt), *routing_text]))
    vectors = embed_texts(distinct, embedder, progress=progress)
    row_of = {t: i for i, t in enumerate(distinct)}
    text_rows = np.array([row_of[t] for t in routing_text], dtype=np.int64)
    # Score each distinct routing text once.
    scored_rows = sorted(set(text_rows.tolist()))
    scores_by_row = dict(
        zip(
            scored_rows,
            np.asarray(scorer([distinct[i] for i in scored_rows], vectors[scored_rows])).tolist(),
            strict=True,
        )
    )
    score_of = {id(r): scores_by_row[int(text_rows[i])] for i, r in enumerate(log.records)}

    cutoffs = score_cutoffs(np.array(list(score_of.values()), dtype=np.float64))
    reports = []
    bar = Progress("analysing routes", len(routes), enabled=progress)
    for route, recs in sorted(routes.items(), key=lambda kv: -len(kv[1])):
        rep = analyse_repetition(recs, row_of, vectors, thresholds=thresholds)
        c, s = pick_models(route, recs, prices, config, cheap, strong)
        scores = np.array([score_of[id(r)] for r in recs], dtype=np.float64)
        p_ok = probability(scores) if probability is not None else None
        cx = analyse_complexity(
            recs, scores, cheap=c, strong=s, prices=prices, cutoffs=cutoffs, p_cheap_ok=p_ok
        )
        models: dict[str, int] = {}
        for r in recs:
            models[r.model] = models.get(r.model, 0) + 1
        bound = None
        if max_error_rate is not None:
            bound = estimate_bound(recs, row_of, vectors, embedder, max_error_rate=max_error_rate)
        reports.append(
            RouteReport(
                route,
                len(recs),
                models,
                rep,
                cx,
                recommend(route, recs, rep, cx, policy or Policy()),
                bound,
            )
        )
        bar.advance()
    bar.close()
    return Analysis(
        source=name,
        requests=len(log.records),
        skipped=log.skipped,
        problems=log.problems,
        routes=reports,
        thresholds=list(thresholds),
        prices={k: (p.input, p.output) for k, p in prices.items()},
        unpriced=sorted({r.model for r in log.records} - set(prices)),
    )
