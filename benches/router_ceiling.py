"""In-family ceiling of the learned routers and a label-noise bound, per task family (issue #15).

Run: ``taskset -c 0 .venv/bin/python benches/router_ceiling.py [--candidates A,B,...]``
(the data, embedding cache, families and cheap/strong pairs of ``router_families.py``; the
candidates of ``router_families.py`` by name, or a training target of ``router_targets.py``
such as ``gain``; default ``lr-lexical,gain,knn-centroids``).

Leave-one-family-out asks a router to rank prompts of a family it never saw. This bench asks
what the same routers reach when the family is *not* held out, and what any prompt-only
router could reach on these labels at all:

1. **In-family**: each family is cut into 5 folds by prompt hash
   (:func:`routeguard.routing.learned.fold_of`); each fold is scored by a model trained on
   the other 4 folds plus every other family (``pooled``; minus suspect MMLU subjects and
   near-copies of test prompts, :func:`router_families.training_rows`) or on the other 4
   folds only (``own``). The 5 test folds' scores are pooled, then APGR and CPT(50%) are
   taken over the whole family. ``knn-centroids`` uses ``min(256, n / 8)`` centroids so a
   small family's own rows still fill them.
2. **Label-noise bound** (sets judged over many models): an oracle ranks a prompt by how
   *other* models did on that same prompt: ``others`` is their mean (AlpacaEval: mean loss
   rate against GPT-4-Turbo; llmrouter: mean failure, i.e. difficulty), ``oracle`` a ridge
   regression of the pair's gain (strong minus cheap) on those outcomes and bins of their
   mean, fitted on the other 4 folds of the family. It sees outcomes on the test prompt, so
   it is an upper-ish bound for a router that sees only the prompt. In the main table:
   AlpacaEval's Mixtral row from the 10 other judged models; each llmrouter row from its 8
   cheap models (the oracle then knows the cheap side exactly and guesses only the strong
   model's outcome). The second table pairs each cheap model with the strong one
   (leave-one-model-out: AlpacaEval 11 pairs, ``others`` the other 10; llmrouter up to 8,
   ``others`` the other 7, skipping models not at least 0.02 worse than the strong
   Nemotron-51B on the family: Nemotron-Super-49B beats it on code and maths) and scores
   the routers' pooled in-family scores on the same pairs. MMLU has two models: no bound.
3. ``length`` (longer prompts to the strong model), ``random`` (mean of 50 orders) and
   ``label``: the ranking by the target's own gain, the most any ranking can reach. It is
   far from 1 where the strong model wins most prompts (AlpacaEval), so read every APGR
   against it.

Result: ``docs/performance.md`` ("In-family ceiling").
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

import router_families as rf
import router_targets as rt
from routeguard.routing import metrics
from routeguard.routing.learned import fold_of

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
Run = Callable[[Mask, Mask], F64]
FOLDS = 5
MIN_GAP = 0.02
ORACLE_L2 = 1.0
DEFAULT = "lr-lexical,gain,knn-centroids"


def families(c: rf.Corpus) -> dict[str, Mask]:
    """Family name -> its rows: AlpacaEval, the llmrouter families and all of MMLU."""
    out = {k: m for k, m in rf.splits(c).items() if not k.startswith("MMLU")}
    out["MMLU"] = c.source == "mmlu"
    return out


def runners(c: rf.Corpus, names: list[str]) -> dict[str, Run]:
    """Candidate name -> a function of (training rows, test rows) giving test scores."""
    weights = rf.balanced_weights(c.source)
    bench: rt.Bench | None = None
    out: dict[str, Run] = {}
    for name in names:
        if name == "knn-centroids":

            def run_knn(tr: Mask, te: Mask) -> F64:
                k = min(256, int(tr.sum()) // 8)
                tro, teo = c.data.subset(tr), c.data.subset(te)
                return rf.knn_centroids(tro, c.vectors[tr], teo, c.vectors[te], weights[tr], k=k)

            out[name] = run_knn
        elif name in rf.CANDIDATES:
            scorer = rf.CANDIDATES[name]

            def run_rf(tr: Mask, te: Mask, scorer: rf.Scorer = scorer) -> F64:
                tro, teo = c.data.subset(tr), c.data.subset(te)
                return scorer(tro, c.vectors[tr], teo, c.vectors[te], weights[tr])

            out[name] = run_rf
        else:
            bench = bench or rt.Bench(c)

            def run_rt(tr: Mask, te: Mask, name: str = name, bench: rt.Bench = bench) -> F64:
                return bench.run(name, tr, te)

            out[name] = run_rt
    return out


def in_family(
    c: rf.Corpus, fams: dict[str, Mask], runs: dict[str, Run], fold: npt.NDArray[np.intp]
) -> dict[str, dict[str, F64]]:
    """Family -> ``"<candidate> <pooled|own>"`` -> out-of-fold scores of the family's rows."""
    out: dict[str, dict[str, F64]] = {}
    for fam, rows in fams.items():
        started = time.monotonic()
        where = fold[rows]
        scores = {f"{n} {v}": np.zeros(int(rows.sum())) for n in runs for v in ("pooled", "own")}
        for k in range(FOLDS):
            test = rows & (fold == k)
            pooled = rf.training_rows(c, test)
            for n, run in runs.items():
                scores[f"{n} pooled"][where == k] = run(pooled, test)
                scores[f"{n} own"][where == k] = run(pooled & rows, test)
        out[fam] = scores
        took = time.monotonic() - started
        print(f"  {fam}: {int(rows.sum())} rows, {took:.0f} s", file=sys.stderr, flush=True)
    return out


@dataclass
class Pair:
    """One cheap model against the set's strong one, on one family's rows."""

    cheap: F64
    strong: F64
    others: F64  # the other cheap models' outcomes, (rows, models)
    others_mean: F64  # higher = the others did worse (more reason to call the strong model)


def _column(matrix: F64, values: F64) -> int:
    """The matrix column equal to ``values`` (how a reader's chosen model is found)."""
    return int(np.argmin(np.nansum(np.abs(matrix - values[:, None]), axis=0)))


def pairs(c: rf.Corpus, fams: dict[str, Mask]) -> dict[str, tuple[Pair, list[Pair]]]:
    """Family -> (the pair of its table row, its single-model pairs), for the sets with more
    than two models. AlpacaEval: Mixtral, then each of 11 against GPT-4-Turbo, ``others`` the
    10 other models; llmrouter: the mean of 8 with ``others`` those 8 (so the oracle knows
    the cheap side exactly and guesses only the strong model's outcome), then each of up to
    8 against Nemotron-51B, ``others`` the 7 other cheap models."""
    mats = rt.model_matrices(c)
    out: dict[str, tuple[Pair, list[Pair]]] = {}
    for fam, rows in fams.items():
        src = str(c.source[rows][0])
        if src == "mmlu":
            continue
        y = mats[src][rows[c.source == src]]
        found: list[Pair] = []
        if src == "alpacaeval":  # y = the cheap model's win (0 / 0.5 / 1) against GPT-4-Turbo
            filled = np.where(np.isnan(y), np.nanmean(y, axis=0), y)
            for m in range(y.shape[1]):
                rest = np.delete(filled, m, axis=1)
                found.append(Pair(filled[:, m], 1.0 - filled[:, m], rest, 1.0 - rest.mean(1)))
            own = found[_column(filled, c.data.cheap[rows])]
        else:  # y = each model's score in [0, 1]
            s = _column(y, c.data.strong[rows])
            for m in range(y.shape[1]):
                if m == s or (y[:, s] - y[:, m]).mean() < MIN_GAP:
                    continue
                rest = np.delete(y, [m, s], axis=1)
                found.append(Pair(y[:, m], y[:, s], rest, 1.0 - rest.mean(1)))
            rest = np.delete(y, s, axis=1)
            own = Pair(c.data.cheap[rows], c.data.strong[rows], rest, 1.0 - rest.mean(1))
        out[fam] = (own, found)
    return out


def oracle(p: Pair, fold: npt.NDArray[np.intp], bins: int = 8) -> F64:
    """The pair's gain predicted from the other models' outcomes on the same prompt (ridge,
    fitted on the other folds)."""
    level = np.minimum((p.others.mean(1) * bins).astype(np.intp), bins - 1)
    x = np.hstack([p.others, np.eye(bins)[level]])
    y = p.strong - p.cheap
    out = np.zeros(len(y))
    for k in range(FOLDS):
        te, tr = fold == k, fold != k
        mx, my = x[tr].mean(0), y[tr].mean()
        xc = x[tr] - mx
        beta = np.linalg.solve(xc.T @ xc + ORACLE_L2 * np.eye(x.shape[1]), xc.T @ (y[tr] - my))
        out[te] = (x[te] - mx) @ beta + my
    return out


def apgr_cpt(scores: F64, cheap: F64, strong: F64) -> tuple[float, float]:
    """APGR and CPT(50%) of one ranking."""
    q = metrics.quality(scores, cheap, strong)
    return q.apgr, q.cpt50


def main_table(
    c: rf.Corpus,
    fams: dict[str, Mask],
    scores: dict[str, dict[str, F64]],
    pp: dict[str, tuple[Pair, list[Pair]]],
    fold: npt.NDArray[np.intp],
) -> dict[str, dict[str, tuple[float, float]]]:
    """Row -> column -> (APGR, CPT(50%)) on the targets of ``router_families.py``."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for fam, rows in fams.items():
        te = c.data.subset(rows)
        cols = dict(scores[fam])
        cols["length"] = rf.length_rule(te.prompts)
        name = "MMLU (5 hash folds)" if fam == "MMLU" else fam
        evals = [(name, te.cheap, te.strong)]
        if fam == "AlpacaEval":
            evals = [("AlpacaEval (cheap = Mixtral)", te.cheap, te.strong)]
            pool = te.better_target + 0.5 * (1.0 - te.worse_target - te.better_target)
            evals.append(("AlpacaEval (cheap = mean of 11)", pool, 1.0 - pool))
        for row, cheap, strong in evals:
            table[row] = {k: apgr_cpt(s, cheap, strong) for k, s in cols.items()}
            table[row]["random"] = rf.random_quality(cheap, strong)
            table[row]["label"] = apgr_cpt(strong - cheap, cheap, strong)
            table[row]["n"] = (float(rows.sum()), 0.0)
        if fam in pp:  # the first row's target, seen through the other models' outcomes
            own, row = pp[fam][0], evals[0][0]
            table[row]["others"] = apgr_cpt(own.others_mean, own.cheap, own.strong)
            table[row]["oracle"] = apgr_cpt(oracle(own, fold[rows]), own.cheap, own.strong)
    return table


def noise_table(
    c: rf.Corpus,
    fams: dict[str, Mask],
    scores: dict[str, dict[str, F64]],
    pp: dict[str, tuple[Pair, list[Pair]]],
    fold: npt.NDArray[np.intp],
) -> dict[str, dict[str, float]]:
    """Family -> column -> APGR averaged over its single-model pairs."""
    table: dict[str, dict[str, float]] = {}
    for fam, (_, found) in pp.items():
        rows = fams[fam]
        pooled = {k: s for k, s in scores[fam].items() if k.endswith("pooled")}
        pooled["length"] = rf.length_rule(c.data.subset(rows).prompts)
        per: dict[str, list[float]] = {}
        for p in found:
            cols = pooled | {"others": p.others_mean, "oracle": oracle(p, fold[rows])}
            cols["label"] = p.strong - p.cheap
            for k, s in cols.items():
                per.setdefault(k, []).append(metrics.apgr(s, p.cheap, p.strong))
        table[fam] = {k: float(np.mean(v)) for k, v in per.items()}
        table[fam]["pairs"] = float(len(found))
    return table


def markdown(table: dict[str, dict[str, tuple[float, float]]], cols: list[str]) -> str:
    """The in-family table: APGR / CPT(50%) per column, worst and mean rows."""
    lines = ["| family | n | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for row, r in table.items():
        cells = [f"{r[k][0]:.3f} / {r[k][1]:.0%}" if k in r else "—" for k in cols]
        lines.append(f"| {row} | {int(r['n'][0]):,} | " + " | ".join(cells) + " |")
    for label, agg in (("worst", min), ("mean", lambda x: float(np.mean(x)))):
        vals = [agg([r[k][0] for r in table.values() if k in r]) for k in cols]
        lines.append(f"| {label} APGR | | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines)


def noise_markdown(table: dict[str, dict[str, float]]) -> str:
    """The label-noise table: mean APGR over each family's single-model pairs."""
    cols = [k for k in next(iter(table.values())) if k != "pairs"]
    lines = ["| family | pairs | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for fam, r in table.items():
        cells = " | ".join(f"{r[k]:.3f}" for k in cols)
        lines.append(f"| {fam} | {int(r['pairs'])} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the in-family table and the label-noise table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=rf.CACHE, help="embedding cache directory")
    ap.add_argument("--candidates", default=DEFAULT, help="comma-separated")
    args = ap.parse_args(argv)
    names = [n for n in args.candidates.split(",") if n]
    c = rf.load(args.cache)
    fams = families(c)
    fold = fold_of(c.data.prompts, FOLDS)
    scores = in_family(c, fams, runners(c, names), fold)
    pp = pairs(c, fams)
    cols = [f"{n} {v}" for v in ("pooled", "own") for n in names]
    cols += ["length", "random", "others", "oracle", "label"]
    print(f"CPU: {rf.cpu_name()}; rows: {len(c.source)}; folds: {FOLDS}")
    print("\nIn-family (APGR / CPT(50%), 5 test folds pooled):\n")
    print(markdown(main_table(c, fams, scores, pp, fold), cols))
    print("\nLabel-noise bound (APGR, mean over single-model pairs, routers trained pooled):\n")
    print(noise_markdown(noise_table(c, fams, scores, pp, fold)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
