"""Experiment: shrink ``p_cheap_ok`` toward the training base rate on unfamiliar prompts (#15).

Run: ``.venv/bin/python benches/router_calibration_ood.py [--cache DIR]`` (the embeddings of
``router_families.py``; under a minute on 2 cores once cached).

Why: on a family the calibration never saw, ``p_cheap_ok`` is off by 0.10-0.65 (ECE up to
0.65, ``router_calibration.py``'s LOFO rows): the isotonic map learnt the score -> rate
relation of the families it was fitted on. A prompt far from every fitted prompt deserves less
trust in that relation, so pull its probability toward the fitted rows' base rate:

    p' = (1 - a(d)) p + a(d) base,   a(d) = sigmoid(alpha + beta (d - d_mid)),
    d(x) = 1 - max_j cos(x, c_j)

with ``c_j`` the ``K`` spherical k-means centroids of the fitted rows' embeddings (``K`` x 384
float32: 49 KB at 32; one mat-vec per decision) and ``d_mid`` the median ``d`` of the
fitted rows. For a fixed ``d`` the map is monotone in ``p``; across prompts it is not, so the
ranking by ``p'`` can differ from the score's: APGR is measured for both.

Fitted on held-out folds only: for each outer held-out family F (the LOFO rows of
``router_calibration.py``, shipped scores), the rows not in F are split by family again;
each inner family G is predicted by an isotonic map, centroids and base rate fitted on the
other inner families, and (alpha, beta) are chosen on a grid (alpha = -inf, i.e. no shrink, and
beta = 0, a constant shrink, included) minimising the balanced-weight Brier score of those
inner predictions. Then the map, centroids and base rate are refitted on every row not in F
and F is predicted. F is never used to choose anything.

Result: ``docs/routing.md`` ("Shrinking toward the base rate off-distribution").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from routeguard.routing import metrics
from routeguard.routing.learned import default_model
from routeguard.routing.probability import (
    ISOTONIC,
    ScoreCalibration,
    fit_calibration,
    reliability,
)
from router_calibration import families, unseen_by_shipped
from router_families import CACHE, Corpus, balanced_weights, cpu_name, load

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
K = 32
ALPHAS = (-np.inf, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
BETAS = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)
MAX_KMEANS_ROWS = 4000


def centroids(v: F64, k: int = K, iters: int = 20, seed: int = 0) -> F64:
    """``k`` unit centroids of the unit rows ``v`` by spherical k-means (seeded)."""
    rng = np.random.default_rng(seed)
    if len(v) > MAX_KMEANS_ROWS:
        v = v[rng.choice(len(v), MAX_KMEANS_ROWS, replace=False)]
    c = v[rng.choice(len(v), k, replace=False)].copy()
    for _ in range(iters):
        assign = np.argmax(v @ c.T, axis=1)
        for j in range(k):
            members = v[assign == j]
            if len(members):
                m = members.sum(axis=0)
                c[j] = m / max(float(np.linalg.norm(m)), 1e-12)
    return c


def distance(v: F64, c: F64) -> F64:
    """1 - the largest cosine of each row to the centroids (rows and centroids unit)."""
    out: F64 = 1.0 - np.max(v @ c.T, axis=1)
    return out


def weight(d: F64, alpha: float, beta: float, d_mid: float) -> F64:
    """The shrink weight ``sigmoid(alpha + beta (d - d_mid))`` (0 when alpha is -inf)."""
    if alpha == -np.inf:
        return np.zeros_like(d)
    out: F64 = 1.0 / (1.0 + np.exp(-(alpha + beta * (d - d_mid))))
    return out


def shrink(p: F64, d: F64, base: float, alpha: float, beta: float, d_mid: float) -> F64:
    """``p`` pulled toward ``base`` by :func:`weight`."""
    a = weight(d, alpha, beta, d_mid)
    out: F64 = (1.0 - a) * p + a * base
    return out


def fitted(c: Corpus, scores: F64, rows: Mask) -> tuple[ScoreCalibration, F64, float, float]:
    """Isotonic map, centroids, balanced base rate and median distance of ``rows``."""
    ok = c.data.ok_target
    w = balanced_weights(c.source[rows])
    cal = fit_calibration(scores[rows], ok[rows], w, ISOTONIC)
    cents = centroids(c.vectors[rows])
    base = float(np.sum(w * ok[rows]) / w.sum())
    d_mid = float(np.median(distance(c.vectors[rows], cents)))
    return cal, cents, base, d_mid


def choose(c: Corpus, scores: F64, fams: dict[str, Mask], outer: str) -> tuple[float, float]:
    """(alpha, beta) minimising the inner-LOFO Brier score on the families other than
    ``outer``."""
    ok = c.data.ok_target
    inner = {f: m for f, m in fams.items() if f != outer}
    fit_rows = np.any(np.stack(list(inner.values())), axis=0)
    parts = []
    for test in inner.values():
        cal, cents, base, d_mid = fitted(c, scores, fit_rows & ~test)
        d = distance(c.vectors[test], cents)
        parts.append((cal(scores[test]), d, base, d_mid, test))
    w_of = np.zeros(len(ok))
    w_of[fit_rows] = balanced_weights(c.source[fit_rows])
    best = (np.inf, -np.inf, 0.0)
    for alpha in ALPHAS:
        for beta in BETAS if alpha != -np.inf else (0.0,):
            err = 0.0
            for p, d, base, d_mid, test in parts:
                q = shrink(p, d, base, alpha, beta, d_mid)
                err += float(np.sum(w_of[test] * (q - ok[test]) ** 2))
            if err < best[0]:
                best = (err, alpha, beta)
    return best[1], best[2]


def main(argv: list[str] | None = None) -> int:
    """Print, per held-out family, ECE and APGR with and without the shrink."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=CACHE, help="embedding cache directory")
    args = ap.parse_args(argv)
    c = load(args.cache)
    model = default_model()
    scores = model.score(c.data.prompts, c.vectors)
    pool = unseen_by_shipped(c)
    fams = families(c, pool)
    ok = c.data.ok_target
    print(f"CPU: {cpu_name()}; date {time.strftime('%Y-%m-%d')}; K = {K}\n")
    print(
        "| held-out family | n | alpha, beta | ECE isotonic | ECE shrunk | APGR score | "
        "APGR by p | APGR by p' | mean a(d) | base rate fitted / observed |\n"
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
    )
    eces: dict[str, list[float]] = {"iso": [], "shrunk": []}
    for fam, test in fams.items():
        alpha, beta = choose(c, scores, fams, fam)
        cal, cents, base, d_mid = fitted(c, scores, pool & ~test)
        p = cal(scores[test])
        d = distance(c.vectors[test], cents)
        q = shrink(p, d, base, alpha, beta, d_mid)
        y = ok[test]
        te = c.data.subset(test)
        e0, e1 = reliability(p, y).ece, reliability(q, y).ece
        eces["iso"].append(e0)
        eces["shrunk"].append(e1)
        a_mean = float(np.mean(weight(d, alpha, beta, d_mid)))
        print(
            f"| {fam} | {int(test.sum())} | {alpha:g}, {beta:g} | {e0:.3f} | {e1:.3f} | "
            f"{metrics.apgr(scores[test], te.cheap, te.strong):.3f} | "
            f"{metrics.apgr(1.0 - p, te.cheap, te.strong):.3f} | "
            f"{metrics.apgr(1.0 - q, te.cheap, te.strong):.3f} | {a_mean:.2f} | "
            f"{base:.2f} / {float(y.mean()):.2f} |"
        )
    print(
        f"\nmean LOFO ECE: isotonic {np.mean(eces['iso']):.3f}, "
        f"shrunk {np.mean(eces['shrunk']):.3f}"
    )
    one = c.vectors[0].astype(np.float32)
    c32 = centroids(c.vectors[pool]).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(20000):
        1.0 - float(np.max(c32 @ one))
    per = (time.perf_counter() - t0) / 20000 * 1e6
    print(f"distance of one prompt ({K} centroids): {per:.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
