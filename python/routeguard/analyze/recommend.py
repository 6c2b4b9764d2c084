"""The decision framework: per route, routed + cached, routed only, or pinned + enforced.

Inputs are a route's figures (:class:`~routeguard.analyze.repetition.Repetition`,
:class:`~routeguard.analyze.complexity.Complexity`) and what its requests look like (tools,
system prompts, the log's ``sensitive`` marks). The rules, first match wins:

1. **pinned + enforced** when the route is an agent or safety-critical: at least
   ``pinned_share`` of its requests carry tools / tool calls, or are marked sensitive, or have a
   system prompt with safety-critical wording (payments, medical, legal, credentials,
   destructive actions...); or when caching would not pay (hit rate under ``min_hit_rate``)
   and the prompts are hard (median router score at least ``high_score``, harder than about
   80% of the shipped router's training prompts), so routing would mostly pick the strong
   model anyway: one well-tuned model, no cache, enforcement on.
2. **cache only** or **pinned** when the router's scores do not separate the route's
   traffic: the APGR estimated from its calibrated probabilities
   (:func:`~routeguard.routing.metrics.estimated_apgr`, no labels needed) is under
   ``min_apgr`` (0.5 = random routing, which saves cost only by giving up quality in
   proportion). Routing would then pay for itself no better than a coin would: the route keeps
   the model it asks for, with the cache when it would hit at least ``min_hit_rate``.
3. **routed + cached** when, at the lowest threshold whose false-hit risk is at most
   ``max_risk``, the estimated hit rate is at least ``min_hit_rate``.
4. **routed only** otherwise.

Each recommendation carries its reasons and a YAML snippet in routeguard's config format
(``routes.<route>``), ready to paste.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from routeguard.analyze.complexity import Complexity
from routeguard.analyze.logs import LogRecord
from routeguard.analyze.repetition import Repetition, ThresholdRow

ROUTED_CACHED = "routed + cached"
ROUTED = "routed only"
PINNED = "pinned + enforced"
CACHE_ONLY = "cache only"
PINNED_NO_ROUTING = "pinned"

_SAFETY = re.compile(
    r"(?i)\b(payments?|refunds?|wire transfers?|bank(ing)?|credit card|transactions?|"
    r"medical|diagnos\w*|prescri\w*|dosage|legal advice|compliance|hipaa|gdpr|pci|"
    r"passwords?|credentials?|secrets?|api keys?|confidential|do not (reveal|disclose)|"
    r"delete|drop table|production database|irreversible|safety[- ]critical)\b"
)


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of the rules above."""

    min_hit_rate: float = 0.10
    max_risk: float = 0.05
    quality: float = 0.90
    pinned_share: float = 0.20
    high_score: float = 0.18  # ~ the 80th percentile of the shipped router's training prompts
    # Below this estimated APGR routing is not recommended. 0.5 is random; the margin covers the
    # estimator's noise on a few hundred requests and asks for a ranking that actually helps.
    min_apgr: float = 0.55


@dataclass(slots=True)
class Recommendation:
    """What to configure for one route, and why."""

    route: str
    verdict: str
    reasons: list[str]
    config: dict[str, Any]
    threshold: float | None = None
    hit_rate: float = 0.0
    strong_share: float | None = None
    est_cost_per_request: float = 0.0
    baseline_cost_per_request: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)

    def yaml(self) -> str:
        """The ``routes.<route>`` snippet, with the verdict and reasons as comments."""
        body = yaml.safe_dump({self.route: self.config}, sort_keys=False, width=100)
        head = f"# {self.route}: {self.verdict} - " + "; ".join(self.reasons)
        return "\n".join([head, *body.rstrip().splitlines()])


def signals(records: Sequence[LogRecord]) -> dict[str, float]:
    """Shares of requests using tools, marked sensitive, with safety-critical wording."""
    n = len(records) or 1
    return {
        "tools": sum(r.uses_tools for r in records) / n,
        "sensitive": sum(r.sensitive for r in records) / n,
        "safety_system_prompt": sum(bool(_SAFETY.search(r.system)) for r in records) / n,
    }


def pick_threshold(rep: Repetition, max_risk: float) -> float:
    """The lowest grid threshold whose false-hit risk is at most ``max_risk`` (the highest
    threshold when none is)."""
    for row in sorted(rep.rows, key=lambda r: r.threshold):
        if row.false_hit_risk <= max_risk:
            return row.threshold
    return max(r.threshold for r in rep.rows)


def recommend(
    route: str,
    records: Sequence[LogRecord],
    rep: Repetition,
    cx: Complexity,
    policy: Policy | None = None,
) -> Recommendation:
    """Apply the rules (module docstring) to one route."""
    policy = policy or Policy()
    sig = signals(records)
    threshold = pick_threshold(rep, policy.max_risk)
    row = rep.row(threshold)
    target = cx.target(policy.quality)
    pin_to = cx.baseline_model  # the model the route asks for (the strong one if unpriced)
    pinned_why = []
    if sig["tools"] >= policy.pinned_share:
        pinned_why.append(f"{sig['tools']:.0%} of requests use tools (an agent route)")
    if sig["sensitive"] >= policy.pinned_share:
        pinned_why.append(f"{sig['sensitive']:.0%} of requests are marked sensitive")
    if sig["safety_system_prompt"] >= policy.pinned_share:
        pinned_why.append(
            f"{sig['safety_system_prompt']:.0%} have a system prompt with safety-critical wording"
        )
    if row.hit_rate < policy.min_hit_rate and cx.scores_median >= policy.high_score:
        pinned_why.append(
            f"little repetition (hit rate {row.hit_rate:.0%}) and high complexity (median "
            f"router score {cx.scores_median:.2f} >= {policy.high_score:.2f}; "
            f"{target.strong_share:.0%} strong calls for {policy.quality:.0%} quality)"
        )
    rec = Recommendation(
        route=route,
        verdict=ROUTED,
        reasons=[],
        config={},
        baseline_cost_per_request=cx.baseline_cost_per_request,
        signals=sig,
    )
    if pinned_why:
        rec.verdict, rec.reasons = PINNED, pinned_why
        rec.config = {"mode": "pinned", "target": pin_to}
        rec.est_cost_per_request = cx.baseline_cost_per_request
        return rec
    if cx.est_apgr < policy.min_apgr:
        return _no_routing(rec, cx, row, threshold, pin_to, policy)
    routing = {
        "mode": "routed",
        "cheap": cx.cheap,
        "strong": cx.strong,
        "strong_share": round(target.strong_share, 2),
    }
    rec.strong_share = target.strong_share
    rec.reasons.append(
        f"{target.strong_share:.0%} strong calls keep ~{policy.quality:.0%} of the estimated "
        f"quality gain at {target.savings:.0%} lower cost than {cx.baseline_model}"
    )
    if cx.cheap == cx.strong:
        rec.reasons.append("cheap and strong are the same model: pass --cheap/--strong")
    rec.threshold = threshold
    if row.hit_rate >= policy.min_hit_rate:
        rec.verdict = ROUTED_CACHED
        rec.hit_rate = row.hit_rate
        rec.reasons.append(
            f"estimated hit rate {row.hit_rate:.0%} at threshold {threshold:.2f} "
            f"(exact repeats {rep.exact_hit_rate:.0%}, false-hit risk {row.false_hit_risk:.1%})"
        )
        routing["cache"] = {"enabled": True, "threshold": threshold}
    else:
        rec.reasons.append(
            f"little repetition: estimated hit rate {row.hit_rate:.0%} at threshold "
            f"{threshold:.2f} (below {policy.min_hit_rate:.0%}), caching would not pay"
        )
    rec.config = routing
    rec.est_cost_per_request = target.cost_per_request * (1.0 - rec.hit_rate)
    return rec


def _no_routing(
    rec: Recommendation,
    cx: Complexity,
    row: ThresholdRow,
    threshold: float,
    pin_to: str,
    policy: Policy,
) -> Recommendation:
    """Cache only (or pinned) with the reason: the scores do not separate this traffic."""
    kind = "calibrated P(cheap answer as good)" if cx.calibrated else "1 - score (uncalibrated)"
    rec.reasons.append(
        f"router scores do not separate this traffic: estimated APGR {cx.est_apgr:.3f} "
        f"(0.5 = random routing; below {policy.min_apgr:.2f}), {kind} "
        f"{cx.p_cheap_ok_p10:.2f}-{cx.p_cheap_ok_p90:.2f} for 80% of requests: routing would "
        f"cut cost only by giving up quality about as a coin would, so keep {pin_to}"
    )
    if row.hit_rate >= policy.min_hit_rate:
        rec.verdict = CACHE_ONLY
        rec.hit_rate = row.hit_rate
        rec.threshold = threshold
        rec.reasons.append(
            f"estimated hit rate {row.hit_rate:.0%} at threshold {threshold:.2f} "
            f"(false-hit risk {row.false_hit_risk:.1%}): cache it"
        )
        rec.config = {
            "mode": "routed",
            "default": pin_to,
            "cache": {"enabled": True, "threshold": threshold},
        }
    else:
        rec.verdict = PINNED_NO_ROUTING
        rec.reasons.append(
            f"little repetition (hit rate {row.hit_rate:.0%}, below "
            f"{policy.min_hit_rate:.0%}): no cache"
        )
        rec.config = {"mode": "pinned", "target": pin_to}
    rec.est_cost_per_request = cx.baseline_cost_per_request * (1.0 - rec.hit_rate)
    return rec


def config_snippet(recs: Sequence[Recommendation]) -> str:
    """Every route's snippet under one ``routes:`` key."""
    lines = ["routes:"]
    for r in recs:
        lines += ["  " + line for line in r.yaml().splitlines()]
    return "\n".join(lines) + "\n"
