"""Training targets for a cross-family router, leave-one-family-out (issue #15, every variant).

Run: ``.venv/bin/python benches/router_targets.py [VARIANT,...]`` (the embeddings and splits
of ``router_families.py``; a variant trains on every row but the held-out family's, with
hyperparameters fixed before any run: L2 10, the shipped features plus structure features).

Targets (a logistic head on soft labels in [0, 1] unless said otherwise):

- ``fail``: share of the set's models that did badly on the prompt (MMLU: 2, AlpacaEval: 11
  judged against GPT-4-Turbo, llmrouter: 9);
- ``irt``: :func:`routeguard.routing.difficulty.difficulty_labels` (a Rasch model fitted
  per set); ``rank-irt``: its rank within the set; ``irt-c``: centred within each family;
- ``gain``: the set's soft ``worse - better`` as one head; ``gain-c``: centred within each
  family (MMLU, AlpacaEval, each llmrouter family), so only within-family differences train;
- ``-bal``: each family the same total weight; ``pair-``: a linear ranking (logistic on
  differences of pairs within a family); ``+syn``: 400 synthetic trivial prompts labelled
  easiest (:func:`routeguard.routing.trivial.trivial_prompts`); ``+ens``: z-scored sum with
  the two gain heads trained on the training MMLU rows; ``ensgA``: MMLU gain heads (z) plus
  ``A`` times the pooled ``gain`` head (z).

Result: ``docs/performance.md`` ("Training targets tried").
"""

from __future__ import annotations

import sys
import time

import numpy as np
import numpy.typing as npt

import router_families as rf
from routeguard.routing import metrics
from routeguard.routing.difficulty import fit_irt
from routeguard.routing.features import lexical_features
from routeguard.routing.learned import DEFAULT_L2, default_model, fit_logistic, train
from routeguard.routing.trivial import trivial_prompts

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
DEFAULT_VARIANTS = (
    "fail,irt,rank-irt,irt+syn,irt+ens,pair-irt,irt-c,"
    "gain,gain-c,gain-c-bal,pair-gain,gain-c+syn,ensg1,ensg0.5"
)


def _sig(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def model_matrices(c: rf.Corpus) -> dict[str, F64]:
    """Set name -> (rows of that set, models) outcome matrix, in corpus order."""
    import json

    def lines(path: str) -> list[dict[str, object]]:
        text = (rf.DATA / path).read_text(encoding="utf-8")
        return [json.loads(x) for x in text.split("\n") if x.strip()]

    alp = lines("alpacaeval/preferences.jsonl")
    names = sorted({k for r in alp for k in r["preference_vs_gpt4_1106_preview"]})  # type: ignore[attr-defined]
    ya = np.full((len(alp), len(names)), np.nan)
    for i, r in enumerate(alp):
        for k, v in r["preference_vs_gpt4_1106_preview"].items():  # type: ignore[attr-defined]
            if v is not None:
                ya[i, names.index(k)] = float(v) - 1.0
    llm = lines("llmrouter/train.jsonl") + lines("llmrouter/test.jsonl")
    models = sorted(llm[0]["scores"])  # type: ignore[arg-type]
    yl = np.array([[float(r["scores"][m]) for m in models] for r in llm])  # type: ignore[index]
    mm = c.source == "mmlu"
    return {
        "mmlu": np.stack([c.data.cheap[mm], c.data.strong[mm]], axis=1),
        "alpacaeval": ya,
        "llmrouter": yl,
    }


class Bench:
    """Labels, features and the variant runner over one corpus."""

    def __init__(self, c: rf.Corpus) -> None:
        self.c = c
        src = c.source
        groups = np.array(c.data.groups)
        self.family = np.where(src == "llmrouter", groups, src)
        fail, irt = np.zeros(len(src)), np.zeros(len(src))
        for name, y in model_matrices(c).items():
            rows = src == name
            if rows.sum() != len(y):
                raise SystemExit(f"{name}: {len(y)} outcome rows, corpus has {rows.sum()}")
            fail[rows] = 1.0 - np.nanmean(y, axis=1)
            b, theta = fit_irt(y)
            irt[rows] = b - theta.mean()
        gain = c.data.worse_target - c.data.better_target
        self.labels = {
            "fail": fail,
            "irt": _sig(irt),
            "rank-irt": self._rank(irt, src),
            "irt-c": np.clip(0.5 + self._centred(_sig(irt)), 0, 1),
            "gain": (1.0 + gain) / 2.0,
            "gain-c": np.clip(0.5 + 0.5 * self._centred(gain), 0, 1),
        }
        self.feats = lexical_features(c.data.prompts)
        from routeguard.embed import default_embedder

        self.syn = trivial_prompts(400)
        self.syn_v = np.asarray(default_embedder("f32").embed(self.syn), dtype=np.float64)
        self.syn_f = lexical_features(self.syn)

    def _centred(self, x: F64) -> F64:
        out = np.zeros_like(x)
        for f in np.unique(self.family):
            m = self.family == f
            out[m] = x[m] - x[m].mean()
        return out

    @staticmethod
    def _rank(x: F64, by: npt.NDArray[np.str_]) -> F64:
        out = np.zeros_like(x)
        for name in np.unique(by):
            m = by == name
            _, inv, cnt = np.unique(x[m], return_inverse=True, return_counts=True)
            avg = np.cumsum(cnt) - (cnt - 1) / 2.0  # mean 1-based rank of ties
            out[m] = (avg[inv] - 0.5) / m.sum()
        return out

    def _design(self, tr_f: F64, te_f: F64) -> tuple[F64, F64]:
        mean, std = tr_f.mean(0), tr_f.std(0)
        std[std < 1e-9] = 1.0
        z = (tr_f - mean) / std
        return z, np.clip((te_f - mean) / std, z.min(0), z.max(0))

    def head(self, label: str, tr: Mask, te: Mask, syn: bool, bal: bool, pair: bool) -> F64:
        """One variant's test scores (and nothing learned from the test rows)."""
        y, v, f = self.labels[label][tr], self.c.vectors[tr], self.feats[tr]
        fam = self.family[tr]
        w = np.ones(len(y))
        if bal:
            names, counts = np.unique(fam, return_counts=True)
            per = dict(zip(names.tolist(), (1.0 / counts).tolist(), strict=True))
            w = np.array([per[x] for x in fam.tolist()])
        if syn:
            v, f = np.vstack([v, self.syn_v]), np.vstack([f, self.syn_f])
            y, w = np.concatenate([y, np.zeros(len(self.syn))]), np.append(w, [w.mean()] * 400)
            fam = np.append(fam, ["synthetic"] * len(self.syn))
        z, zt = self._design(f, self.feats[te])
        x, xt = np.hstack([v, z]), np.hstack([self.c.vectors[te], zt])
        if pair:
            return xt @ self._pairwise(x, y, fam)
        coef, b = fit_logistic(x, y, DEFAULT_L2, sample_weight=w * len(w) / w.sum())
        return xt @ coef + b

    @staticmethod
    def _pairwise(x: F64, y: F64, fam: npt.NDArray[np.str_], per: int = 20000) -> F64:
        rng = np.random.default_rng(0)
        xs, ys = [], []
        for name in np.unique(fam):
            idx = np.flatnonzero(fam == name)
            i, j = rng.choice(idx, per), rng.choice(idx, per)
            keep = np.abs(y[i] - y[j]) > 0.05
            xs.append(x[i[keep]] - x[j[keep]])
            ys.append((y[i[keep]] > y[j[keep]]).astype(np.float64))
        coef, _ = fit_logistic(np.vstack(xs), np.concatenate(ys), DEFAULT_L2)
        return coef

    def mmlu_head(self, tr: Mask, te: Mask) -> tuple[F64, F64]:
        """The two gain heads trained on the training MMLU rows: (test, training) scores."""
        c, m = self.c, tr & (self.c.source == "mmlu")
        model = train(c.data.subset(m), c.vectors[m], calibration_folds=0)
        pick = [c.data.prompts[i] for i in np.flatnonzero(te)]
        own = [c.data.prompts[i] for i in np.flatnonzero(tr)]
        return model.score(pick, c.vectors[te]), model.score(own, c.vectors[tr])

    def run(self, variant: str, tr: Mask, te: Mask) -> F64:
        """Test scores of ``variant`` (see the module docstring)."""

        def z(x: F64, ref: F64) -> F64:
            out: F64 = (x - ref.mean()) / (ref.std() + 1e-12)
            return out

        if variant.startswith("ensg"):
            g, g_tr = self.run("gain", tr, te), self.run("gain", tr, tr)
            h, h_tr = self.mmlu_head(tr, te)
            return z(h, h_tr) + float(variant[4:]) * z(g, g_tr)
        base, _, extra = variant.partition("+")
        pair = base.startswith("pair-")
        bal = base.endswith("-bal")
        label = base.removeprefix("pair-").removesuffix("-bal")
        s = self.head(label, tr, te, syn=extra == "syn", bal=bal, pair=pair)
        if extra == "ens":
            s_tr = self.head(label, tr, tr, syn=False, bal=bal, pair=pair)
            h, h_tr = self.mmlu_head(tr, te)
            return z(s, s_tr) + z(h, h_tr)
        return s


def main(argv: list[str] | None = None) -> int:
    """Print every variant's held-out APGR per family, worst and mean."""
    args = sys.argv[1:] if argv is None else argv
    variants = (args[0] if args else DEFAULT_VARIANTS).split(",")
    c = rf.load(rf.CACHE)
    bench = Bench(c)
    shipped = default_model()
    table: dict[str, dict[str, float]] = {}
    for fam, test in rf.splits(c).items():
        started = time.monotonic()
        tr = rf.training_rows(c, test)
        te = c.data.subset(test)
        scores = {v: bench.run(v, tr, test) for v in variants}
        scores["shipped"] = shipped.score(te.prompts, c.vectors[test])
        evals = [(fam, te.cheap, te.strong)]
        if fam == "AlpacaEval":
            pool = te.better_target + 0.5 * (1 - te.worse_target - te.better_target)
            evals.append(("AlpacaEval (pool of 11)", pool, 1 - pool))
        for row, cheap, strong in evals:
            table[row] = {k: metrics.quality(s, cheap, strong).apgr for k, s in scores.items()}
        print(f"  {fam}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    cols = [*variants, "shipped"]
    print(f"CPU: {rf.cpu_name()}")
    print("| held-out family | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for row, r in table.items():
        print(f"| {row} | " + " | ".join(f"{r[k]:.3f}" for k in cols) + " |")
    worst = [min(r[k] for r in table.values()) for k in cols]
    mean = [float(np.mean([r[k] for r in table.values()])) for k in cols]
    print("| worst | " + " | ".join(f"{x:.3f}" for x in worst) + " |")
    print("| mean | " + " | ".join(f"{x:.3f}" for x in mean) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
