"""Quality of the learned cheap/strong router on RouteLLM's MMLU outcomes, against baselines.

Run: ``.venv/bin/python benches/router_quality.py [--compare] [--write-default] [--variants]``.

Data flow: ``../shared/data/routing/routellm-mmlu`` (Mixtral-8x7B = cheap, GPT-4 = strong;
the 5 contaminated prompts dropped) -> every prompt embedded once with MiniLM (cached under
``.bench/routing/``) -> for each split, a router trained with :func:`routeguard.routing.learned.
train` on the training side only -> APGR, CPT(50%), CPT(80%) on the held-out side, beside

- random routing (APGR 0.5, CPT(50%) 50%, CPT(80%) 80% in expectation),
- "longer prompts to the strong model" (0.584 on all of MMLU in the paper; measured here on
  the same held-out prompts),
- the paper's best router on MMLU (APGR 0.603; Ong et al., arXiv 2406.18665).

Splits (all by hash, see :mod:`routeguard.routing.outcomes`; no test prompt is ever trained on
or used to choose the model):

- ``random``: 20% of prompts held out. The shipped default model is exactly this split's model
  (``--write-default`` rewrites it), so ``routeguard router eval`` reproduces the row.
- ``cross-subject``: 25% of the 57 subjects held out (17 subjects, train on the other 40).
- ``STEM held out`` / ``code held out``: train without any STEM (or computer-science)
  subject, test on those: a proxy for task families the router never saw.
- ``subject 5-fold``: grouped cross-validation over subjects, APGR averaged over folds.

Every training side leaves out the subjects whose grading looks broken
(:func:`routeguard.routing.outcomes.suspect_groups`, judged on the training side): in this data
``high_school_mathematics``, where GPT-4 is marked right on 3% of questions and Mixtral on 32%.
Learning "maths -> the cheap model is better" from it would be learning a grading artifact; test
sides keep every subject, as the paper's figures do.

Then an out-of-family sanity check on hand-written easy and hard prompts (of similar lengths)
for maths, chat and code (labels are ours, not model outcomes: a smoke test that the score
ranks hard above easy outside MMLU's format, not a benchmark), and a PGR-vs-strong-share plot
(``.bench/routing/router_quality.png``; matplotlib, imported only here).

``--compare`` reruns the model choice: 5-fold CV (random folds, and folds grouped by subject)
on the random split's training side (suspect subjects left out) for the candidates. Results
(mean fold APGR, 2 cores, Nov 2026):

    candidate                                   random folds   subject folds
    two heads p_worse - p_better, LR (shipped)       0.645          0.582
    one head p_worse, LR                             0.628          0.569
    ridge regression on the gain                     0.639          0.573
    kNN (k=100) mean gain                            0.629          0.547
    MLP (64 ReLU, dropout) p_worse                   0.635          0.577
    longer-prompt rule                               0.565          0.536

``--variants`` (only that) tries to make the score generalise beyond MMLU's format: lexical
features of the question without its A-D options (:func:`mmlu_stem`), without the
template-bound columns, with per-character fractions shrunk toward the mean for short
prompts, the embedding alone, the embedding of the question alone (embedded once, cached).
APGR on the cross-subject split, in subject 5-fold CV and on the random split; then, for the
random split's model, hard-above-easy pair shares on the hand-written prompts and on
``tests/traffic.py``'s assistant tasks vs FAQ questions (which length alone separates), and
the interquartile range of the scores on MMLU held out and on those prompts (Nov 2026):

    APGR / pair share / IQR            xsubj  5fold  rand.  | maths chat  code  traf. | mmlu   oof
    shipped                            0.616  0.617  0.661 | 0.56  0.33  0.64  0.81  | 0.074  0.023
    lexical on the question only       0.583  0.600  0.650 | 0.39  0.31  0.67  0.92  | 0.071  0.040
    no log_lines, upper_frac           0.617  0.620  0.662 | 0.56  0.39  0.69  0.75  | 0.074  0.026
    smoothed fractions                 0.616  0.625  0.663 | 0.56  0.42  0.78  0.77  | 0.075  0.022
    embedding only                     0.592  0.577  0.649 | 0.44  0.58  0.89  0.76  | 0.064  0.032
    question-only embedding            0.652  0.613  0.653 | 0.58  0.39  0.75  0.77  | 0.071  0.026
    question-only embedding + lexical  0.618  0.593  0.640 | 0.47  0.31  0.78  0.91  | 0.068  0.042

None is an honest improvement: what widens the spread on other prompts (question-only
lexical features) costs held-out APGR, and what gains on one MMLU split loses on another
(question-only embedding: +0.036 cross-subject, -0.004 in 5-fold, -0.008 random) or moves
APGR by less than its noise while the out-of-family pair shares (36 pairs per family) move
both ways. The shipped model stays; :class:`~routeguard.routing.calibration.LiveShare`
compares scores by rank on live traffic, so their narrow spread there no longer matters for
``strong_share`` routing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.routing import metrics
from routeguard.routing.features import WINDOW
from routeguard.routing.learned import default_model_path, fit_logistic, train
from routeguard.routing.outcomes import (
    Outcomes,
    group_holdout_mask,
    holdout_mask,
    read_routellm_mmlu,
    suspect_groups,
    unit_hash,
)
from routeguard.routing.vectors import embed_many

F64 = npt.NDArray[np.float64]
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "routing" / "routellm-mmlu"
CACHE = ROOT / ".bench" / "routing"
PAPER_BEST_APGR = 0.603
PAPER_LENGTH_APGR = 0.584
STEM = {
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "electrical_engineering",
    "elementary_mathematics",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_mathematics",
    "high_school_physics",
    "high_school_statistics",
    "machine_learning",
}
CODE = {
    "college_computer_science",
    "high_school_computer_science",
    "computer_security",
    "machine_learning",
}

# Hand-written easy and hard prompts outside MMLU's multiple-choice format, of similar
# lengths within each family so that length alone cannot order them.
SANITY: dict[str, tuple[list[str], list[str]]] = {
    "maths": (
        [
            "What is 7 + 5?",
            "What is 10% of 50?",
            "How many days are there in one week?",
            "What is 100 divided by 4?",
            "Add 3 apples and 4 apples: how many apples?",
            "Which number is bigger, 8 or 3?",
        ],
        [
            "Is 221 prime?",
            "Integrate x^2 e^-x dx.",
            "Prove that sqrt(2) is irrational.",
            "Solve x^4 - 5x^2 + 4 = 0.",
            "Find the eigenvalues of [[2,1],[1,2]].",
            "Does sum 1/(n log n) converge?",
        ],
    ),
    "chat": (
        [
            "Hi! How are you today?",
            "Say good morning in Spanish, please.",
            "What colour is the sky on a sunny day?",
            "Thanks, that was really helpful!",
            "What day comes after Monday?",
            "Tell me a fun fact about cats.",
        ],
        [
            "Is moral realism true?",
            "Compare Kant and Hume on causality.",
            "Why did the 2008 financial crisis happen?",
            "Write a sonnet about entropy.",
            "Critique utilitarianism briefly.",
            "Explain Godel's incompleteness.",
        ],
    ),
    "code": (
        [
            "How do I print hello world in Python?",
            "What does len() do in Python?",
            "How do I make a list in Python?",
            "What is a variable in programming?",
            "How do I comment a line in JavaScript?",
            "What does HTML stand for?",
        ],
        [
            "Implement a lock-free queue in Rust.",
            "Write an LRU cache in C with O(1) ops.",
            "Fix this deadlock between two mutexes.",
            "Design a consistent-hashing scheme.",
            "Write a parser combinator in Haskell.",
            "Optimise a 5-way SQL join with indexes.",
        ],
    ),
}


def _row(name: str, q: metrics.Quality) -> str:
    return f"  {name:<30} APGR {q.apgr:.3f}   CPT(50%) {q.cpt50:6.1%}   CPT(80%) {q.cpt80:6.1%}"


def lengths(prompts: list[str]) -> F64:
    """The longer-prompt rule's scores."""
    return np.array([len(p) for p in prompts], dtype=np.float64)


def training_side(data: Outcomes, test: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The rows to train on: outside ``test``, without the subjects whose grading looks
    broken (:func:`suspect_groups`, judged on the training side only)."""
    suspect = suspect_groups(data.subset(~test))
    return ~test & ~np.isin(np.array(data.groups), suspect)


def evaluate(
    label: str, data: Outcomes, vectors: F64, test: npt.NDArray[np.bool_]
) -> tuple[F64, Outcomes]:
    """Train on the training side, print the held-out figures; return the test scores, rows."""
    started = time.monotonic()
    side = training_side(data, test)
    model = train(data.subset(side), vectors[side])
    held = data.subset(test)
    scores = model.score(held.prompts, vectors[test])
    q = metrics.quality(scores, held.cheap, held.strong)
    ql = metrics.quality(lengths(held.prompts), held.cheap, held.strong)
    n_groups = len(set(held.groups))
    print(
        f"\n{label}: train {int(side.sum())}, test {int(test.sum())} prompts "
        f"({n_groups} subjects); cheap {q.q_cheap:.3f}, strong {q.q_strong:.3f} "
        f"(trained in {time.monotonic() - started:.1f} s)"
    )
    print(_row("learned router (routeguard)", q))
    print(_row("longer-prompt rule", ql))
    print("  random                         APGR 0.500   CPT(50%)  50.0%   CPT(80%)  80.0%")
    print(f"  paper's best on MMLU           APGR {PAPER_BEST_APGR:.3f}")
    return scores, held


def subject_folds(data: Outcomes, vectors: F64, folds: int = 5) -> None:
    """Grouped cross-validation over subjects: mean held-out APGR over the folds."""
    mine, base = [], []
    for f in range(folds):
        test = np.array([_fold(g, folds) == f for g in data.groups])
        side = training_side(data, test)
        model = train(data.subset(side), vectors[side])
        held = data.subset(test)
        mine.append(metrics.apgr(model.score(held.prompts, vectors[test]), held.cheap, held.strong))
        base.append(metrics.apgr(lengths(held.prompts), held.cheap, held.strong))
    print(f"\nsubject {folds}-fold (grouped CV, all prompts): mean APGR over folds")
    print(f"  learned router {np.mean(mine):.3f} (folds {', '.join(f'{x:.3f}' for x in mine)})")
    print(f"  longer-prompt  {np.mean(base):.3f} (folds {', '.join(f'{x:.3f}' for x in base)})")


def _fold(key: str, folds: int) -> int:
    return int(unit_hash("fold:" + key, "routeguard") * folds)


def sanity(scores_mmlu: F64) -> None:
    """Out-of-family smoke test with the shipped default model (hand-labelled pairs)."""
    from routeguard.routing import default_router

    model = default_router()
    print("\nout-of-family sanity (hand-written easy and hard prompts, all pairs; shipped model):")
    print(f"  MMLU held-out mean score {scores_mmlu.mean():+.3f}")
    for family, (easy_prompts, hard_prompts) in SANITY.items():
        easy = model.score(easy_prompts)
        hard = model.score(hard_prompts)
        auc = float(np.mean(hard[:, None] > easy[None, :]))
        print(
            f"  {family:<6} hard ranked above easy in {auc:5.1%} of pairs; mean score "
            f"easy {easy.mean():+.3f}, hard {hard.mean():+.3f}"
        )


def plot(curves: dict[str, F64], path: Path) -> None:
    """PGR against the share of strong calls, one line per router."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, pgrs in curves.items():
        shares = np.linspace(0.0, 1.0, len(pgrs))
        ax.plot(shares * 100, pgrs, marker=".", label=name)
    ax.plot([0, 100], [0, 1], linestyle="--", color="grey", label="random (APGR 0.500)")
    ax.set_xlabel("strong model calls (%)")
    ax.set_ylabel("performance gap recovered (PGR)")
    ax.set_title("RouteLLM MMLU (Mixtral-8x7B vs GPT-4), held-out prompts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def compare(data: Outcomes, vectors: F64, train_mask: npt.NDArray[np.bool_]) -> None:
    """5-fold CV of the candidate models on the training side (random and subject folds)."""
    d = data.subset(train_mask)
    v = vectors[train_mask]
    from routeguard.routing.features import FEATURE_NAMES, lexical_features

    lex = lexical_features(d.prompts)[:, : len(FEATURE_NAMES)]
    worse = (d.strong > d.cheap).astype(np.float64)
    gain = d.strong - d.cheap

    def design(tr: Any, te: Any) -> tuple[F64, F64]:
        mu, sd = lex[tr].mean(0), lex[tr].std(0) + 1e-9
        return (
            np.hstack([v[tr], (lex[tr] - mu) / sd]),
            np.hstack([v[te], np.clip((lex[te] - mu) / sd, -4, 4)]),
        )

    def logit(x: F64, w: F64, b: float) -> F64:
        out: F64 = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        return out

    def one_head(tr: Any, te: Any) -> F64:
        xtr, xte = design(tr, te)
        return logit(xte, *fit_logistic(xtr, worse[tr], 10.0))

    def ridge(tr: Any, te: Any) -> F64:
        xtr, xte = design(tr, te)
        xb = np.hstack([xtr, np.ones((len(xtr), 1))])
        reg = 100.0 * np.eye(xb.shape[1])
        reg[-1, -1] = 0.0
        beta = np.linalg.solve(xb.T @ xb + reg, xb.T @ gain[tr])
        out: F64 = np.hstack([xte, np.ones((len(xte), 1))]) @ beta
        return out

    def knn(tr: Any, te: Any) -> F64:
        sims = v[te] @ v[tr].T
        nn = np.argpartition(-sims, 100, axis=1)[:, :100]
        out: F64 = gain[tr][nn].mean(axis=1)
        return out

    def mlp(tr: Any, te: Any) -> F64:
        xtr, xte = design(tr, te)
        return _mlp(xtr, worse[tr], xte)

    def shipped(tr: Any, te: Any) -> F64:
        idx_tr = np.flatnonzero(tr)
        idx_te = np.flatnonzero(te)
        model = train(d.subset(idx_tr), v[idx_tr])
        return model.score([d.prompts[i] for i in idx_te], v[idx_te])

    def length(tr: Any, te: Any) -> F64:
        return lengths([d.prompts[i] for i in np.flatnonzero(te)])

    candidates = {
        "two heads p_worse - p_better, LR": shipped,
        "one head p_worse, LR": one_head,
        "ridge regression on the gain": ridge,
        "kNN (k=100) mean gain": knn,
        "MLP (64 ReLU, dropout) p_worse": mlp,
        "longer-prompt rule": length,
    }
    random_fold = np.array([int(unit_hash(p, "cv") * 5) for p in d.prompts])
    subject_fold = np.array([int(unit_hash("g:" + g, "cv") * 5) for g in d.groups])
    print("\nmodel choice: 5-fold CV on the random split's training side (mean fold APGR)")
    print(f"  {'candidate':<36} random folds   subject folds")
    for name, fit_score in candidates.items():
        res = []
        for folds in (random_fold, subject_fold):
            per = []
            for f in range(5):
                te = folds == f
                s = fit_score(~te, te)
                per.append(metrics.apgr(s, d.cheap[te], d.strong[te]))
            res.append(float(np.mean(per)))
        print(f"  {name:<36} {res[0]:.3f}          {res[1]:.3f}", flush=True)


def _mlp(x: F64, y: F64, x_test: F64, hidden: int = 64, epochs: int = 10) -> F64:
    """A one-hidden-layer ReLU network with dropout, Adam and weight decay (seeded)."""
    rng = np.random.default_rng(0)
    n, d = x.shape
    params = [
        rng.normal(0, 1 / np.sqrt(d), (d, hidden)),
        np.zeros(hidden),
        rng.normal(0, 1 / np.sqrt(hidden), hidden),
        np.array([np.log(y.mean() / (1 - y.mean()))]),
    ]
    m = [np.zeros_like(p) for p in params]
    s = [np.zeros_like(p) for p in params]
    t = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, 128):
            idx = order[start : start + 128]
            w1, b1, w2, b2 = params
            h = np.maximum(x[idx] @ w1 + b1, 0)
            keep = (rng.random(h.shape) > 0.2) / 0.8
            hd = h * keep
            p = 1 / (1 + np.exp(-(hd @ w2 + b2[0])))
            dz = (p - y[idx]) / len(idx)
            dh = np.outer(dz, w2) * keep * (h > 0)
            grads = [
                x[idx].T @ dh + 1e-3 * w1,
                dh.sum(0),
                hd.T @ dz + 1e-3 * w2,
                np.array([dz.sum()]),
            ]
            t += 1
            for i, g in enumerate(grads):
                m[i] = 0.9 * m[i] + 0.1 * g
                s[i] = 0.999 * s[i] + 0.001 * g * g
                params[i] -= 1e-3 * (m[i] / (1 - 0.9**t)) / (np.sqrt(s[i] / (1 - 0.999**t)) + 1e-8)
    w1, b1, w2, b2 = params
    out: F64 = 1 / (1 + np.exp(-(np.maximum(x_test @ w1 + b1, 0) @ w2 + b2[0])))
    return out


def mmlu_stem(prompt: str) -> str:
    """The question of an MMLU-formatted prompt, without its A-D options and ``Answer:``."""
    if not prompt.rstrip().endswith("Answer:"):
        return prompt
    i = prompt.rfind("\nA. ")
    rest = prompt[i:]
    if i >= 0 and all(x in rest for x in ("\nB. ", "\nC. ", "\nD. ")):
        return prompt[:i]
    return prompt


def _smoothed(raw: F64, prior: F64, chars: float = 50.0, words: float = 10.0) -> F64:
    """Per-character fractions shrunk toward ``prior`` as if ``chars`` more characters (and
    ``words`` more words) of average text were there: a 20-character chat line no longer gets
    fractions as extreme as any MMLU prompt's."""
    out = raw.copy()
    m = np.minimum(np.expm1(raw[:, 0]), WINDOW)
    nw = np.expm1(raw[:, 1])
    for j in (3, 4, 5, 6, 9):
        out[:, j] = (raw[:, j] * m + prior[j] * chars) / (m + chars)
    out[:, 7] = (raw[:, 7] * nw + prior[7] * words) / (nw + words)
    return out


def _fit_heads(
    data: Outcomes, v: F64, lex: F64, cols: list[int], side: npt.NDArray[np.bool_]
) -> Any:
    """The shipped model's two heads on ``side``, over ``v`` and the lexical ``cols``; returns
    a scoring function of (vectors, raw lexical features)."""
    z_raw = lex[side][:, cols]
    mu, sd = z_raw.mean(axis=0), z_raw.std(axis=0)
    sd[sd < 1e-9] = 1.0
    z = (z_raw - mu) / sd
    lo, hi = z.min(axis=0), z.max(axis=0)
    x = np.hstack([v[side], z])
    heads = [
        fit_logistic(x, (data.strong > data.cheap)[side].astype(np.float64), 10.0),
        fit_logistic(x, (data.cheap > data.strong)[side].astype(np.float64), 10.0),
    ]

    def score(vv: F64, ll: F64) -> F64:
        xx = np.hstack([vv, np.clip((ll[:, cols] - mu) / sd, lo, hi)])
        p = [1.0 / (1.0 + np.exp(-(xx @ w + b))) for w, b in heads]
        out: F64 = p[0] - p[1]
        return out

    return score


def variants(data: Outcomes, vectors: F64) -> None:
    """Generalisation candidates, each scored on MMLU (held out) and out of family.

    Each candidate changes the inputs of the shipped model (two logistic heads, l2 10): which
    lexical columns, computed on which text, and which embedding. Columns: APGR on the
    cross-subject split, in subject 5-fold CV and on the random split; then, with the random
    split's model, the share of hard-above-easy pairs on the hand-written SANITY prompts and
    on the synthetic traffic of ``tests/traffic.py`` (assistant tasks above FAQ questions,
    which length alone separates), and the interquartile range of the scores on MMLU held
    out and on all those out-of-family prompts.
    """
    import random

    sys.path.insert(0, str(ROOT / "tests"))
    import traffic
    from routeguard.embed import default_embedder
    from routeguard.routing.features import FEATURE_NAMES, lexical_features

    emb = default_embedder("f32")  # the cached vectors and the shipped model are f32
    rng = random.Random(0)
    faq = sorted({traffic.support_request(rng)["messages"][-1]["content"] for _ in range(300)})
    tasks = sorted(
        {
            rng.choice(traffic.TASKS).format(a=a, b=b)
            for a, b in (rng.sample(traffic.TOPICS, 2) for _ in range(300))
        }
    )
    sets = [(e, h) for e, h in SANITY.values()] + [(faq, tasks)]
    oof = [p for e, h in sets for p in e + h]
    oof_v = np.asarray(emb.embed(oof), dtype=np.float64)
    stems = [mmlu_stem(p) for p in data.prompts]
    full_lex = lexical_features(data.prompts)[:, : len(FEATURE_NAMES)]
    prior = full_lex.mean(axis=0)
    every = list(range(len(FEATURE_NAMES)))

    def drop(*names: str) -> list[int]:
        return [i for i, n in enumerate(FEATURE_NAMES) if n not in names]

    def stem_vectors() -> F64:
        return embed_many(stems, emb, cache_dir=CACHE, name="minilm-stem", progress=True).astype(
            np.float64
        )

    candidates: list[tuple[str, Any, Any, list[int], bool]] = [
        # name, MMLU lexical text, MMLU vectors (or a thunk), lexical columns, smoothed
        ("shipped", data.prompts, vectors, every, False),
        ("lexical on the question only", stems, vectors, every, False),
        ("no log_lines, upper_frac", data.prompts, vectors, drop("log_lines", "upper_frac"), False),
        ("smoothed fractions", data.prompts, vectors, every, True),
        ("embedding only", data.prompts, vectors, [], False),
        ("question-only embedding", data.prompts, stem_vectors, every, False),
        ("question-only embedding + lexical", stems, stem_vectors, every, False),
    ]
    print("\ngeneralisation candidates (APGR held out; out-of-family: hard ranked above easy)")
    print(f"  {'candidate':<34} x-subj  5-fold  random | maths  chat  code traffic | IQR mmlu  oof")
    for name, texts, vecs, cols, smooth in candidates:
        v = vecs() if callable(vecs) else vecs
        lex = lexical_features(texts)[:, : len(FEATURE_NAMES)]
        lex_oof = lexical_features(oof)[:, : len(FEATURE_NAMES)]
        if smooth:
            lex, lex_oof = _smoothed(lex, prior), _smoothed(lex_oof, prior)

        apgrs = []
        for test in (
            group_holdout_mask(data.groups, 0.25),
            *(np.array([_fold(g, 5) == f for g in data.groups]) for f in range(5)),
            holdout_mask(data.prompts, 0.2),
        ):
            model = _fit_heads(data, v, lex, cols, training_side(data, test))
            s = model(v[test], lex[test])
            apgrs.append(metrics.apgr(s, data.cheap[test], data.strong[test]))
        so = model(oof_v, lex_oof)  # the random split's model, as shipped
        aucs, i = [], 0
        for e, h in sets:
            se, sh = so[i : i + len(e)], so[i + len(e) : i + len(e) + len(h)]
            i += len(e) + len(h)
            aucs.append(float(np.mean(sh[:, None] > se[None, :])))
        iqr = [float(np.subtract(*np.percentile(x, [75, 25]))) for x in (s, so)]
        print(
            f"  {name:<34} {apgrs[0]:.3f}   {np.mean(apgrs[1:6]):.3f}   {apgrs[6]:.3f} | "
            + "  ".join(f"{a:.2f}" for a in aucs)
            + f"    | {iqr[0]:.3f}  {iqr[1]:.3f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--compare", action="store_true", help="rerun the model comparison (slow)")
    ap.add_argument("--write-default", action="store_true", help="rewrite the shipped model")
    ap.add_argument(
        "--variants", action="store_true", help="only the generalisation candidates (slow)"
    )
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"skipped: {args.data} not found (the shared evaluation data)", file=sys.stderr)
        return 0
    data = read_routellm_mmlu(args.data)
    from routeguard.embed import default_embedder

    vectors = embed_many(
        data.prompts, default_embedder("f32"), cache_dir=CACHE, name="minilm", progress=True
    ).astype(np.float64)
    print(f"{len(data)} prompts, {len(set(data.groups))} subjects (contaminated prompts dropped)")

    if args.variants:
        variants(data, vectors)
        return 0
    test = holdout_mask(data.prompts, 0.2)
    if args.write_default:
        side = training_side(data, test)
        model = train(
            data.subset(side),
            vectors[side],
            notes={
                "trained_on": "RouteLLM MMLU, random split: prompts outside the 20% "
                "hash holdout (holdout_mask(prompts, 0.2)), without "
                + ", ".join(suspect_groups(data.subset(~test)))
            },
        )
        model.save(default_model_path())
        print(f"wrote {default_model_path()} ({default_model_path().stat().st_size} bytes)")

    curves: dict[str, F64] = {}
    s, held = evaluate("random split (20% of prompts held out)", data, vectors, test)
    curves["learned, random split"] = metrics.pgr_curve(s, held.cheap, held.strong)[1]
    curves["longer-prompt rule, random split"] = metrics.pgr_curve(
        lengths(held.prompts), held.cheap, held.strong
    )[1]
    random_scores = s
    gtest = group_holdout_mask(data.groups, 0.25)
    s, held = evaluate("cross-subject split (25% of subjects held out)", data, vectors, gtest)
    curves["learned, cross-subject"] = metrics.pgr_curve(s, held.cheap, held.strong)[1]
    curves["longer-prompt rule, cross-subject"] = metrics.pgr_curve(
        lengths(held.prompts), held.cheap, held.strong
    )[1]
    for label, subjects in (("STEM held out", STEM), ("code held out", CODE)):
        mask = np.array([g in subjects for g in data.groups])
        evaluate(label, data, vectors, mask)
    subject_folds(data, vectors)
    sanity(random_scores)
    plot(curves, CACHE / "router_quality.png")
    if args.compare:
        compare(data, vectors, training_side(data, test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
