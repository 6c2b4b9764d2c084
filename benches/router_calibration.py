"""Reliability of the learned router's calibrated P(cheap answer as good), per held-out family.

Run: ``.venv/bin/python benches/router_calibration.py [--cache DIR] [--retrained]
[--write-default]`` (the embeddings of ``router_families.py``, cached under
``$TMPDIR/routeguard-router-families``).

The outcome predicted: ``ok = 1 - worse``, whether the cheap answer was as good as the strong
one's: MMLU, the pair's 0/1 (Mixtral right or GPT-4 wrong); AlpacaEval, the share of its 11
judged models whose answer tied or beat GPT-4-Turbo's; llmrouter, the share of its 8 other
models scoring at least the best one's. Predicted against observed in ten equal-width bins,
and the ECE (count-weighted mean |predicted - observed| over bins).

1. **shipped** (what ships): the packaged model's scores (it trained on MMLU's random 80%), on
   the rows it never saw (MMLU's 20% hash holdout, AlpacaEval, llmrouter minus near-copies of
   its MMLU training prompts). For each family, the calibration is fitted on the other
   families' rows only (leave-one-family-out: how it reads on a family it never saw), by
   isotonic regression and by Platt scaling; ``pooled`` fits on every family with 5 hash
   folds (each row predicted by a fit without its fold: the in-distribution figure). Each set
   gets the same total weight in a fit.
2. **retrained** (``--retrained``, ``router_families.py``'s splits): ``lr-lexical`` trained
   without the family, its calibration from 5-fold out-of-fold scores of its own training
   rows (what ``routeguard router train`` does), scored on the family.

Beside each: the estimated APGR (:func:`~routeguard.routing.metrics.estimated_apgr`, from the
probabilities alone) and the APGR measured with the labels, to check the estimator ``analyze``
uses. ``--write-default`` fits the chosen method on every unseen row and stores it in the
shipped model (its weights, scores and APGR unchanged).

Result: see ``docs/routing.md`` (the table is printed in that page's format).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from routeguard.routing import metrics
from routeguard.routing.datasets import LLMROUTER_FAMILIES
from routeguard.routing.learned import default_model, default_model_path, train
from routeguard.routing.outcomes import holdout_mask
from routeguard.routing.probability import (
    ISOTONIC,
    PLATT,
    Reliability,
    ScoreCalibration,
    fit_calibration,
    reliability,
)
from router_families import (
    CACHE,
    Corpus,
    _key,
    balanced_weights,
    cpu_name,
    load,
    splits,
    training_rows,
)

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
FOLDS = 5


@dataclass
class Row:
    """One family's reliability under one calibration."""

    family: str
    method: str
    rel: Reliability
    est_apgr: float
    apgr: float
    p10: float
    p90: float


def unseen_by_shipped(c: Corpus) -> Mask:
    """Rows the shipped model did not train on: MMLU's 20% holdout, AlpacaEval, llmrouter
    without near-copies of MMLU training prompts."""
    mmlu = c.source == "mmlu"
    held = holdout_mask(c.data.prompts, 0.2)
    trained = {_key(c.data.prompts[i]) for i in np.flatnonzero(mmlu & ~held)}
    copies = np.array([_key(p) in trained for p in c.data.prompts])
    out: Mask = (mmlu & held) | (~mmlu & ~copies)
    return out


def families(c: Corpus, rows: Mask) -> dict[str, Mask]:
    """Family name -> its rows among ``rows``."""
    groups = np.array(c.data.groups)
    out = {"AlpacaEval": rows & (c.source == "alpacaeval")}
    for fam in LLMROUTER_FAMILIES:
        out[f"llmrouter {fam}"] = rows & (groups == f"llmrouter/{fam}")
    out["MMLU random 20%"] = rows & (c.source == "mmlu")
    return out


def row(family: str, method: str, p: F64, scores: F64, c: Corpus, test: Mask) -> Row:
    """Reliability and APGR figures of probabilities ``p`` on the ``test`` rows."""
    te = c.data.subset(test)
    return Row(
        family,
        method,
        reliability(p, te.ok_target),
        metrics.estimated_apgr(scores, p),
        metrics.apgr(scores, te.cheap, te.strong),
        float(np.quantile(p, 0.1)),
        float(np.quantile(p, 0.9)),
    )


def shipped_rows(c: Corpus, scores: F64) -> list[Row]:
    """Leave-one-family-out and pooled reliability of calibrations of the shipped scores."""
    pool = unseen_by_shipped(c)
    fams = families(c, pool)
    ok = c.data.ok_target
    out = []
    for method in (ISOTONIC, PLATT):
        for fam, test in fams.items():
            fit_rows = pool & ~test
            w = balanced_weights(c.source[fit_rows])
            cal = fit_calibration(scores[fit_rows], ok[fit_rows], w, method)
            out.append(row(fam, f"{method} LOFO", cal(scores[test]), scores[test], c, test))
        # pooled: every family, each row predicted by a fit without its hash fold
        fold = np.array([int(h * FOLDS) for h in _hashes(c.data.prompts)])
        p = np.zeros(len(ok))
        for k in range(FOLDS):
            tr = pool & (fold != k)
            cal = fit_calibration(scores[tr], ok[tr], balanced_weights(c.source[tr]), method)
            te = pool & (fold == k)
            p[te] = cal(scores[te])
        for fam, test in fams.items():
            out.append(row(fam, f"{method} pooled", p[test], scores[test], c, test))
        out.append(row("all unseen rows", f"{method} pooled", p[pool], scores[pool], c, pool))
    return out


def _hashes(prompts: list[str]) -> F64:
    from routeguard.routing.outcomes import unit_hash

    return np.array([unit_hash(p, "fold") for p in prompts])


def retrained_rows(c: Corpus) -> list[Row]:
    """``lr-lexical`` trained without each family, calibrated on its out-of-fold scores."""
    out = []
    for fam, test in splits(c).items():
        tr_rows = training_rows(c, test)
        model = train(c.data.subset(tr_rows), c.vectors[tr_rows], calibration_folds=FOLDS)
        assert model.calibration is not None
        te = c.data.subset(test)
        s = model.score(te.prompts, c.vectors[test])
        out.append(row(fam, "retrained LOFO", model.calibration(s), s, c, test))
        print(f"  retrained without {fam}", file=sys.stderr, flush=True)
    return out


def report(rows: list[Row]) -> str:
    """Markdown: one line per family and method, then the bins."""
    head = (
        "| family | calibration | n | ECE | observed | mean p | p 10-90% | est. APGR | APGR |\n"
        "|---|---|---:|---:|---:|---:|---|---:|---:|"
    )
    lines = [head]
    for r in rows:
        obs = np.nansum(r.rel.observed * r.rel.count) / r.rel.n
        pred = np.nansum(r.rel.predicted * r.rel.count) / r.rel.n
        lines.append(
            f"| {r.family} | {r.method} | {r.rel.n} | {r.rel.ece:.3f} | {obs:.3f} | "
            f"{pred:.3f} | {r.p10:.2f}-{r.p90:.2f} | {r.est_apgr:.3f} | {r.apgr:.3f} |"
        )
    return "\n".join(lines)


def bins(rows: list[Row]) -> str:
    """Markdown: per family, each non-empty bin's count, predicted and observed."""
    edges = rows[0].rel.edges
    names = [f"{edges[i]:.1f}-{edges[i + 1]:.1f}" for i in range(len(edges) - 1)]
    lines = [
        "| family | calibration | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        cells = [
            f"{r.rel.predicted[i]:.2f}/{r.rel.observed[i]:.2f} ({r.rel.count[i]})"
            if r.rel.count[i]
            else ""
            for i in range(len(names))
        ]
        lines.append(f"| {r.family} | {r.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choose(rows: list[Row]) -> str:
    """The method with the lower mean leave-one-family-out ECE."""
    mean = {
        m: float(np.mean([r.rel.ece for r in rows if r.method == f"{m} LOFO"]))
        for m in (ISOTONIC, PLATT)
    }
    print(f"mean LOFO ECE: {mean}")
    return min(mean, key=lambda m: mean[m])


def write_default(c: Corpus, scores: F64, method: str, rows: list[Row]) -> ScoreCalibration:
    """Fit ``method`` on every row the shipped model never saw and store it in the model."""
    pool = unseen_by_shipped(c)
    cal = fit_calibration(
        scores[pool], c.data.ok_target[pool], balanced_weights(c.source[pool]), method
    )
    model = default_model()
    model.calibration = cal
    model.meta["calibration"] = {
        "fitted_on": "scores of rows the model never trained on: RouteLLM MMLU 20% holdout, "
        "AlpacaEval, llmrouter (each set the same total weight); outcome = cheap answer as good",
        "n": int(pool.sum()),
        "lofo_ece": {r.family: round(r.rel.ece, 4) for r in rows if r.method == f"{method} LOFO"},
    }
    path = default_model_path()
    model.save(path)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.1f} KB, {cal.x.size} knots, {method})")
    return cal


def main(argv: list[str] | None = None) -> int:
    """Print the reliability tables (and optionally store the calibration in the model)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=CACHE, help="embedding cache directory")
    ap.add_argument("--retrained", action="store_true", help="also the retrained LOFO rows")
    ap.add_argument("--write-default", action="store_true", help="calibrate the shipped model")
    args = ap.parse_args(argv)
    c = load(args.cache)
    shipped = default_model()
    scores = shipped.score(c.data.prompts, c.vectors)
    rows = shipped_rows(c, scores)
    method = choose(rows)
    if args.retrained:
        rows += retrained_rows(c)
    print(f"CPU: {cpu_name()}; rows: {len(c.source)}; chosen: {method}\n")
    print(report(rows) + "\n")
    print(bins(rows))
    if args.write_default:
        write_default(c, scores, method, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
