"""Train and measure the learned close-call verifier (``benches/verifier_learned.py``) on QQP.

Run: ``.venv/bin/python benches/cache_verifier_train.py [--write] [--ablate]``. It reuses the
protocol and caches of ``benches/cache_quality.py`` (the same pairs, dev/test split by
connected cluster, 4 candidates per lookup): every candidate scored >= ``FLOOR`` becomes one
training row, its label 1 when serving it is a right hit under the strict protocol (a
label-1 pair's own ``text_a``). The model is fit on dev rows only (standardised features,
L2 logistic regression by Newton steps: deterministic), its operating point (cosine
threshold t, min probability p) is the one with the fewest dev false hits at the dev recall
plain cosine 0.90 gives, and the tables report the test split. ``--write`` saves the
weights and the word-rarity table to ``.bench/cache_quality/learned_verifier.npz``;
``--ablate`` refits without each feature group (dev fit, test report).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cache_quality as cq
from routeguard.bench.timing import summarize, time_each
from routeguard.cache.verify import DEFAULT_CHECKS
from verifier_learned import FEATURES, GROUPS, Rarity, pair_features

FLOOR = 0.78  # candidates below never matter: no chosen threshold goes this low
L2 = 1.0
PROBS = [round(0.05 * i, 2) for i in range(1, 20)]
MODEL = cq.OUT / "learned_verifier.npz"
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
SEED = 7
FINE = np.round(np.arange(0.85, 0.95, 0.0025), 4)


def vocab_words() -> list[str]:
    """Whole alphabetic words of the MiniLM/BERT WordPiece vocabulary, most frequent first."""
    from routeguard.embed.minilm import bundled_model_dir

    lines = (bundled_model_dir() / "vocab.txt").read_text().splitlines()
    start = lines.index("the")  # before it: special tokens, single characters
    return [w for w in lines[start:] if w.isascii() and w.isalpha()]


def features(q: cq.Qqp, rows: cq.I64, ks: cq.I64, rarity: Rarity) -> F64:
    """The feature rows of candidates ``(rows, ks)`` (cached in ``.bench/cache_quality``)."""
    key = hashlib.sha256(repr((FEATURES, rows.tobytes(), ks.tobytes())).encode()).hexdigest()
    path = cq.OUT / f"verifier-features-{key[:16]}.npy"
    if path.exists():
        return np.asarray(np.load(path), dtype=np.float64)
    t0 = time.perf_counter()
    x = np.array(
        [
            pair_features(
                q.pairs[i]["text_b"], q.entries[q.ids[i, k]], float(q.scores[i, k]), rarity
            )
            for i, k in zip(rows, ks, strict=True)
        ]
    )
    took = time.perf_counter() - t0
    cq.log(f"features of {len(rows)} rows in {took:.0f}s ({took / len(rows) * 1e6:.0f} us/row)")
    np.save(path, x)
    return x


def fit_logistic(x: F64, y: npt.NDArray[np.bool_], l2: float = L2) -> F64:
    """Weights (bias last) of an L2 logistic regression, by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(25):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def predict(x: F64, w: F64) -> F64:
    """Probabilities from ``fit_logistic`` weights."""
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x @ w[:-1] + w[-1], -30, 30))))


def served(q: cq.Qqp, t: float, ok_model: npt.NDArray[np.bool_] | None) -> cq.I64:
    """The entry each lookup gets at threshold t when the model must also accept it."""
    ok = q.scores >= t
    if ok_model is not None:
        ok = ok & ok_model
    first = np.argmax(ok, axis=1)
    rows = np.arange(len(first))
    out = np.where(ok[rows, first], q.ids[rows, first], -1)
    return np.where(q.exact >= 0, q.exact, out)


def choose(
    q: cq.Qqp, prob: F64, dev: npt.NDArray[np.bool_], target: float
) -> tuple[float, float, cq.Point]:
    """(t, p) with the fewest dev false hits whose dev recall reaches ``target``."""
    best: tuple[float, float, cq.Point] | None = None
    for p in PROBS:
        accept = prob >= p
        for t in cq.THRESHOLDS:
            pt = cq.point(q, served(q, t, accept), dev, t)
            if pt.recall >= target and (best is None or pt.false < best[2].false):
                best = (t, p, pt)
    assert best is not None
    return best


KINDS_HEAD = (
    "| config | t | p | hits | right | false | recall | precision | vs plain 0.90 "
    "| label-0 own entry | label-1 other entry | label-0 other entry | precision (closure) |\n"
    + "|---" * 13
    + "|"
)


def kinds_row(q: cq.Qqp, name: str, hit: cq.I64, mask: Bools, t: float, p: str, base: int) -> str:
    """One row: the point's counts and its false hits split by kind."""
    pt = cq.point(q, hit, mask, t)
    h = (hit >= 0) & mask
    false = h & ~(q.label & (hit == q.own))
    own = false & (hit == q.own)
    other1 = false & q.label & (hit != q.own)
    other0 = false & ~q.label & (hit != q.own)
    return (
        f"| {name} | {t:.2f} | {p} | {pt.hits} | {pt.right} | {pt.false} | {pt.recall:.3f} | "
        f"{pt.precision:.3f} | {1 - pt.false / base:.1%} fewer false | {int(own.sum())} | "
        f"{int(other1.sum())} | {int(other0.sum())} | {pt.precision_closure:.3f} |"
    )


def false_at_recall(q: cq.Qqp, accept: Bools | None, mask: Bools, recall: float) -> float:
    """False hits at ``recall`` on a fine threshold curve (linear between its points);
    infinite when the curve never reaches that recall."""
    pts = [cq.point(q, served(q, float(t), accept), mask, float(t)) for t in FINE]
    r = np.array([pt.recall for pt in pts])
    f = np.array([pt.false for pt in pts])
    if not r.min() <= recall <= r.max():
        return float("inf")
    order = np.argsort(r)
    return float(np.interp(recall, r[order], f[order]))


def rank_features(q: cq.Qqp, rows: cq.I64, ks: cq.I64) -> F64:
    """Where a candidate sits in the cache's candidate list: rank, gap to the best, margin
    over the next, is-best. (Experiment: the plain verifier signature does not carry them.)"""
    s = q.scores.astype(np.float64)
    nxt = np.minimum(ks + 1, s.shape[1] - 1)
    return np.stack(
        [ks.astype(np.float64), s[rows, 0] - s[rows, ks], s[rows, ks] - s[rows, nxt], ks == 0], 1
    )


def latency(q: cq.Qqp, rarity: Rarity, w: F64, mean: F64, std: F64, n: int = 3000) -> str:
    """p50 / p90 per-hit cost of the rules and of the learned stage, on ``n`` fresh pairs
    (the analysis cache cleared first: each query is new to the verifier, as in use)."""
    from routeguard.cache.verify import HitVerifier, analyse
    from verifier_learned import _prepared

    rng = np.random.default_rng(SEED)
    rows, ks = np.nonzero(q.scores >= 0.85)
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    pairs = [
        (
            q.pairs[rows[i]]["text_b"],
            q.entries[q.ids[rows[i], ks[i]]],
            float(q.scores[rows[i], ks[i]]),
        )
        for i in pick
    ]
    rules = HitVerifier()
    out = []
    for name in ("rules", "learned"):
        analyse.cache_clear()
        _prepared.cache_clear()
        for _, c, _ in pairs:
            analyse(c)  # the cached prompt's analysis is warm in a running cache
            _prepared(c)

        def one(pair: tuple[str, str, float], name: str = name) -> None:
            a, c, sc = pair
            if name == "rules":
                rules(a, c)
            else:
                x = (np.asarray(pair_features(a, c, sc, rarity)) - mean) / std
                float(x @ w[:-1] + w[-1])

        us = summarize(time_each(one, pairs, warmup=0)).scaled(1e-3)
        out.append(f"{name} p50 {us.p50:.0f} us, p95 {us.p95:.0f} us")
    return f"per-hit cost over {len(pairs)} pairs (cosine >= 0.85): " + "; ".join(out)


def main(argv: Sequence[str]) -> int:
    t0 = time.perf_counter()
    q = cq.load_qqp()
    scored = q.exact < 0
    dev, test = ~q.test & scored, q.test & scored
    rarity = Rarity(vocab_words())
    rows, ks = np.nonzero(scored[:, None] & (q.scores >= FLOOR))
    x = features(q, rows, ks, rarity)
    y = q.label[rows] & (q.ids[rows, ks] == q.own[rows])
    on_dev = dev[rows]

    target = cq.at(cq.curve(q, dev, None), 0.90).recall
    p90 = cq.at(cq.curve(q, test, None), 0.90)
    masks = cq.refusal_masks(q, cq.THRESHOLDS[0])
    rules = np.asarray((masks & cq.bits(DEFAULT_CHECKS)) != 0)
    rt = max(p.threshold for p in cq.curve(q, dev, rules) if p.recall >= target)

    def fit(xs: F64, cols: list[int]) -> tuple[float, float, F64, Bools, F64, F64]:
        xs = xs[:, cols]
        mean, std = xs[on_dev].mean(0), xs[on_dev].std(0) + 1e-9
        w = fit_logistic((xs[on_dev] - mean) / std, y[on_dev])
        prob = np.zeros(q.scores.shape)
        prob[rows, ks] = predict((xs - mean) / std, w)
        t, p, _ = choose(q, prob, dev, target)
        return t, p, w, prob >= p, mean, std

    every = list(range(len(FEATURES)))
    t, p, w, accept, mean, std = fit(x, every)
    base = p90.false
    print(
        f"Test split. Operating points chosen on dev: the fewest dev false hits at dev recall >= "
        f"{target:.3f} (plain 0.90's dev recall). {int(on_dev.sum())} dev / "
        f"{int((~on_dev).sum())} test candidate rows (cosine >= {FLOOR}).\n"
    )
    print(KINDS_HEAD)
    print(kinds_row(q, "plain cosine", served(q, 0.90, None), test, 0.90, "", base))
    print(kinds_row(q, "rules: `HitVerifier()`", served(q, rt, ~rules), test, rt, "", base))
    print(kinds_row(q, "learned (logistic)", served(q, t, accept), test, t, f"{p:.2f}", base))
    if "--rank" in argv:
        xr = np.hstack([x, rank_features(q, rows, ks)])
        tr_, pr_, *_ = fit(xr, list(range(xr.shape[1])))
        acc = fit(xr, list(range(xr.shape[1])))[3]
        name = "learned + candidate-rank features"
        print(kinds_row(q, name, served(q, tr_, acc), test, tr_, f"{pr_:.2f}", base))

    # Equal recall exactly: false hits read off each curve (thresholds every 0.0025,
    # linear between points) at plain 0.90's recall, on dev and on test.
    prob = np.zeros(q.scores.shape)
    prob[rows, ks] = predict((x - mean) / std, w)
    p90_dev = cq.at(cq.curve(q, dev, None), 0.90)
    print(
        f"\nFalse hits at exactly plain 0.90's recall (dev {p90_dev.recall:.3f}, test "
        f"{p90.recall:.3f}), read off curves over t in steps of 0.0025; learned at p {p:.2f}:\n"
    )
    print("| config | dev: fewer false hits | test: false hits | test: fewer false hits |")
    print("|---|---|---|---|")
    for name, acc in (
        ("rules: `HitVerifier()`", ~rules),
        ("learned (logistic)", prob >= p),
        ("rules veto, then learned", ~rules & (prob >= p)),
    ):
        fd = false_at_recall(q, acc, dev, p90_dev.recall)
        ft = false_at_recall(q, acc, test, p90.recall)
        print(f"| {name} | {1 - fd / p90_dev.false:.1%} | {ft:.0f} | {1 - ft / base:.1%} |")

    print("\n### Curves (test): plain vs rules vs learned (learned at its dev-chosen p)\n")
    print(
        "| t | plain P | plain R | plain FHR | rules P | rules R | rules FHR "
        "| learned P | learned R | learned FHR |\n" + "|---" * 10 + "|"
    )
    for th in cq.THRESHOLDS:
        if round(th * 100) % 2:
            continue
        a = cq.point(q, served(q, th, None), test, th)
        b = cq.point(q, served(q, th, ~rules), test, th)
        c = cq.point(q, served(q, th, accept), test, th)
        print(
            f"| {th:.2f} | {a.precision:.3f} | {a.recall:.3f} | {a.false_rate:.4f} | "
            f"{b.precision:.3f} | {b.recall:.3f} | {b.false_rate:.4f} | "
            f"{c.precision:.3f} | {c.recall:.3f} | {c.false_rate:.4f} |"
        )
    print("\nWeights (standardised features), largest first:")
    ranked = sorted(zip(FEATURES, w[:-1], strict=True), key=lambda nw: -abs(nw[1]))
    print(", ".join(f"{n} {wi:+.2f}" for n, wi in ranked))
    if "--ablate" in argv:
        print("\n### Ablation (fit and operating point on dev, reported on test)\n")
        print(
            "| features | t | p | hits | false | recall | vs plain 0.90 "
            "| at equal recall (curve) |\n" + "|---" * 8 + "|"
        )
        runs = [("all", [i for i in every])]
        runs += [
            (f"without {g}", [i for i, f in enumerate(FEATURES) if f not in names])
            for g, names in GROUPS.items()
        ]
        runs += [
            (
                f"cosine + {g} only",
                [i for i, f in enumerate(FEATURES) if f in names or f in GROUPS["cosine"]],
            )
            for g, names in GROUPS.items()
            if g != "cosine"
        ]
        for label, cols in runs:
            gt, gp, _, acc, _, _ = fit(x, cols)
            pt = cq.point(q, served(q, gt, acc), test, gt)
            print(
                f"| {label} | {gt:.2f} | {gp:.2f} | {pt.hits} | {pt.false} | {pt.recall:.3f} | "
                f"{1 - pt.false / base:.1%} fewer false | "
                f"{1 - false_at_recall(q, acc, test, p90.recall) / base:.1%} fewer false |"
            )
    if "--latency" in argv:
        print("\n" + latency(q, rarity, w, mean, std))
    if "--write" in argv:
        MODEL.parent.mkdir(parents=True, exist_ok=True)
        vocab = np.frombuffer("\n".join(vocab_words()).encode(), dtype=np.uint8)
        np.savez_compressed(
            MODEL,
            features=np.array(FEATURES),
            mean=mean.astype(np.float32),
            std=std.astype(np.float32),
            weights=w[:-1].astype(np.float32),
            bias=np.float32(w[-1]),
            threshold=np.float32(t),
            min_probability=np.float32(p),
            vocab=vocab,
        )
        cq.log(f"wrote {MODEL} ({MODEL.stat().st_size} bytes)")
    cq.log(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
