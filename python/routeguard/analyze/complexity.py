"""How hard a route's prompts are, and what cheap/strong routing would save on them.

Data flow: each request's routing text (the last user message, as the router sees it) ->
the learned router's score (P(the cheap answer is worse) - P(it is better), in [-1, 1]) ->

- a histogram of the scores;
- a savings curve: sending the highest-scoring share ``s`` of requests to the strong model
  and the rest to the cheap one. The score is the router's estimate of the quality gained
  by calling the strong model, so the quality recovered at ``s`` is estimated as the sum of
  the positive scores sent to the strong model over the sum of all positive scores (the
  router's own PGR estimate: an estimate from a model trained on MMLU outcomes, to be
  checked with ``routeguard router train`` on your own labels);
- per quality target (0.8, 0.9, 0.95 of that gain), the strong share reaching it and the
  cost per request there against the baseline (every request to the model it asked for).
  The target is met over the whole log (:func:`score_cutoffs`: the highest scores go to the
  strong model first, whatever their route), so an easy route is not made to spend as
  much as a hard one; each route's share is then its share of scores above the cutoff.

Whether routing can pay off at all: with the router's calibrated P(the cheap answer is as
good) per request (``p_cheap_ok``; without a calibration, ``1 - max(score, 0)``, the score read
as the expected gain), :func:`~routeguard.routing.metrics.estimated_apgr` gives the APGR the
router would reach on this traffic without outcome labels (0.5 = random routing), and the
probabilities' 10th and 90th percentiles show how far they spread.

Costs come from token counts (the log's usage when present, else about four characters a
token for the prompt and the route's median logged completion, or ``DEFAULT_COMPLETION``)
priced with the config's ``$/1M tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from routeguard.analyze.logs import LogRecord
from routeguard.messages import estimate_tokens
from routeguard.routing.metrics import estimated_apgr

F64 = npt.NDArray[np.float64]

QUALITY_TARGETS: tuple[float, ...] = (0.8, 0.9, 0.95)
DEFAULT_COMPLETION = 256  # completion tokens assumed when the log carries no usage at all
BINS = 20


@dataclass(frozen=True, slots=True)
class Price:
    """A model's list price in dollars per 1M tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: F64, completion_tokens: F64) -> F64:
        """Dollar cost of each call."""
        out: F64 = (prompt_tokens * self.input + completion_tokens * self.output) / 1e6
        return out


@dataclass(slots=True)
class TargetRow:
    """Routing at one quality target."""

    quality: float
    strong_share: float
    cost_per_request: float
    savings: float  # 1 - cost / baseline cost


@dataclass(slots=True)
class Complexity:
    """Complexity and routing-savings figures of one route."""

    cheap: str
    strong: str
    scores_mean: float
    scores_median: float
    histogram: list[int]  # BINS counts over [-1, 1]
    baseline_model: str
    baseline_cost_per_request: float
    cheap_cost_per_request: float
    strong_cost_per_request: float
    curve: list[tuple[float, float, float]] = field(default_factory=list)  # share, quality, cost
    targets: list[TargetRow] = field(default_factory=list)
    tokens_from_log: float = 0.0  # share of requests whose usage the log gave
    est_apgr: float = 0.5  # APGR expected from the probabilities alone (0.5 = random)
    p_cheap_ok_mean: float = 0.0
    p_cheap_ok_p10: float = 0.0
    p_cheap_ok_p90: float = 0.0
    calibrated: bool = False  # the probabilities are calibrated (else read off the scores)

    def target(self, quality: float) -> TargetRow:
        """The row of ``quality`` (nearest target)."""
        return min(self.targets, key=lambda r: abs(r.quality - quality))


def token_counts(records: Sequence[LogRecord]) -> tuple[F64, F64, float]:
    """Prompt and completion tokens per request, and the share taken from logged usage."""
    logged = [r.completion_tokens for r in records if r.completion_tokens is not None]
    fallback = float(np.median(logged)) if logged else float(DEFAULT_COMPLETION)
    prompt = np.array(
        [
            r.prompt_tokens
            if r.prompt_tokens is not None
            else estimate_tokens(r.request.get("messages"))
            for r in records
        ],
        dtype=np.float64,
    )
    completion = np.array(
        [r.completion_tokens if r.completion_tokens is not None else fallback for r in records],
        dtype=np.float64,
    )
    known = sum(1 for r in records if r.prompt_tokens is not None)
    return prompt, completion, known / len(records) if records else 0.0


def score_cutoffs(scores: F64, targets: Sequence[float] = QUALITY_TARGETS) -> dict[float, float]:
    """Per quality target, the lowest score sent to the strong model when the target is met
    over the whole log: the highest scores go first, wherever their route."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    gain = np.clip(s, 0.0, None)
    total = float(gain.sum())
    out = {}
    for target in targets:
        if total <= 0 or s.size == 0:
            out[target] = float("inf")
            continue
        k = int(np.searchsorted(np.cumsum(gain) / total, target - 1e-12))
        out[target] = float(s[min(k, s.size - 1)])
    return out


def analyse_complexity(
    records: Sequence[LogRecord],
    scores: F64,
    *,
    cheap: str,
    strong: str,
    prices: dict[str, Price],
    targets: Sequence[float] = QUALITY_TARGETS,
    cutoffs: dict[float, float] | None = None,
    p_cheap_ok: F64 | None = None,
) -> Complexity:
    """Complexity figures for one route; ``scores`` are its requests' router scores.
    ``cutoffs`` (from :func:`score_cutoffs` over the whole log) set each target's strong
    calls; without them each target is met within the route alone. ``p_cheap_ok``: the
    calibrated probabilities of the scores (None: read off the scores, uncalibrated)."""
    n = len(records)
    calibrated = p_cheap_ok is not None
    p_ok = (
        np.asarray(p_cheap_ok, dtype=np.float64)
        if p_cheap_ok is not None
        else 1.0 - np.clip(scores, 0.0, 1.0)
    )
    prompt, completion, from_log = token_counts(records)
    cheap_cost = prices[cheap].cost(prompt, completion)
    strong_cost = prices[strong].cost(prompt, completion)
    base_models = [r.model if r.model in prices else strong for r in records]
    baseline = (
        np.array([prices[m].input for m in base_models], dtype=np.float64) * prompt / 1e6
        + np.array([prices[m].output for m in base_models]) * completion / 1e6
    )
    hist, _ = np.histogram(np.clip(scores, -1.0, 1.0), bins=BINS, range=(-1.0, 1.0))
    order = np.argsort(-scores, kind="stable")
    gain = np.clip(scores[order], 0.0, None)
    total_gain = float(gain.sum())
    # cumulative quality recovered and cost after sending the top k to the strong model
    recovered = np.concatenate(([0.0], np.cumsum(gain))) / total_gain if total_gain > 0 else None
    extra = np.concatenate(([0.0], np.cumsum(strong_cost[order] - cheap_cost[order])))
    cost_at_k = (cheap_cost.sum() + extra) / n if n else np.zeros(1)
    curve = []
    for k in sorted({round(s * n) for s in np.linspace(0.0, 1.0, 21)}):
        q = 1.0 if recovered is None else float(recovered[k])
        curve.append((k / n if n else 0.0, q, float(cost_at_k[k])))
    base_mean = float(baseline.mean()) if n else 0.0
    rows = []
    for target in targets:
        if cutoffs is not None and target in cutoffs:
            k = int((scores >= cutoffs[target]).sum())
        elif recovered is None:
            k = 0
        else:
            k = min(int(np.searchsorted(recovered, target - 1e-12)), n)
        cost = float(cost_at_k[k]) if n else 0.0
        rows.append(
            TargetRow(
                quality=target,
                strong_share=k / n if n else 0.0,
                cost_per_request=cost,
                savings=1.0 - cost / base_mean if base_mean > 0 else 0.0,
            )
        )
    return Complexity(
        cheap=cheap,
        strong=strong,
        scores_mean=float(scores.mean()) if n else 0.0,
        scores_median=float(np.median(scores)) if n else 0.0,
        histogram=[int(c) for c in hist],
        baseline_model=max(set(base_models), key=base_models.count) if n else strong,
        baseline_cost_per_request=base_mean,
        cheap_cost_per_request=float(cheap_cost.mean()) if n else 0.0,
        strong_cost_per_request=float(strong_cost.mean()) if n else 0.0,
        curve=curve,
        targets=rows,
        tokens_from_log=from_log,
        est_apgr=estimated_apgr(scores, p_ok) if n else 0.5,
        p_cheap_ok_mean=float(p_ok.mean()) if n else 0.0,
        p_cheap_ok_p10=float(np.quantile(p_ok, 0.1)) if n else 0.0,
        p_cheap_ok_p90=float(np.quantile(p_ok, 0.9)) if n else 0.0,
        calibrated=calibrated,
    )
