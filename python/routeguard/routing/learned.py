"""The learned cheap/strong router: how much better the strong model's answer is likely to be.

Model: two logistic-regression heads over the same features, ``[embedding, lexical]`` (the
shared 384-d MiniLM vector of the prompt, and the ten lexical features of
:mod:`routeguard.routing.features`, standardised and clipped to the range seen in training):

- ``p_worse``  = P(the cheap model's answer is worse than the strong one's),
- ``p_better`` = P(the cheap model's answer is better),

and ``score = p_worse - p_better``, the expected quality gain of calling the strong model with
0/1 outcomes (in ``[-1, 1]``; higher = more in need of the strong model). More generally a
model holds any number of logistic heads and ``score = head_coef . p`` (``[1, -1]`` for the
two above); the shipped default adds a third, P(the prompt is a trivial social turn), with a
negative coefficient (:mod:`routeguard.routing.trivial`). Positive coefficients sum to at most
1 and negative ones to at least -1, so the score stays in ``[-1, 1]``. A model file may also
carry a calibration (:mod:`routeguard.routing.probability`) turning the score into
``p_cheap_ok``, P(the cheap answer is as good as the strong one's), fitted on out-of-fold
scores; files without one still load (their ``p_cheap_ok`` is unavailable). On RouteLLM's MMLU
outcomes this beat a single ``p_worse`` head, ridge regression on the gain, kNN over the
embedding and a one-hidden-layer MLP in cross-validation, on random and on cross-subject folds
(numbers in ``benches/router_quality.py``'s docstring).

Training (:func:`train`): labels from :class:`~routeguard.routing.outcomes.Outcomes`
(``strong > cheap`` and ``cheap > strong``) -> each head fitted by Newton's method with an L2
penalty (exact and deterministic: no seeds, no sampling) -> the training prompts' scores kept
as 1,001 quantiles, so a ``strong_share`` can be turned into a threshold without data -> the
same fit on ``calibration_folds`` - 1 folds scoring the last, for every fold (hash-assigned),
and isotonic regression of the outcomes on those out-of-fold scores.
Calibration to real traffic lives in :mod:`routeguard.routing.calibration`.

Artifact: one small ``.npz`` (a few KB): ``weights`` (heads x (dim + features)), ``bias``,
``head_coef`` (files without it are two-head gain models), the lexical
scaling and clip bounds, ``reference`` quantiles, and ``meta`` (JSON: embedder, dimension,
feature names, training summary, calibration summary), and the calibration knots
``calib_x``/``calib_y`` when present. Loading needs no pickle.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.embed.base import Embedder
from routeguard.errors import CoreInputError, CoreNotFound, RouteguardError
from routeguard.routing.features import (
    ALL_FEATURES,
    FEATURE_NAMES,
    lexical_features,
    lexical_row,
)
from routeguard.routing.outcomes import Outcomes, unit_hash
from routeguard.routing.probability import ISOTONIC, ScoreCalibration, fit_calibration

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

FORMAT = "routeguard-learned-router/1"
EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_L2 = 10.0
DEFAULT_MODEL = "default_router.npz"
_REFERENCE_POINTS = 1001
_MIN_OUTCOMES = 20
DEFAULT_FOLDS = 5

Extend = Callable[["LearnedRouter", Outcomes, F64], "LearnedRouter"]
"""Turns a freshly fitted gain model into the final form (e.g. adds a head), given the
outcomes and vectors it was fitted on; :func:`train` applies it to every fold model too."""


@dataclass
class LearnedRouter:
    """A trained two-head router; see the module docstring for what it computes."""

    weights: F64  # (heads, dim + n_lexical): by default row 0 = p_worse, row 1 = p_better
    bias: F64  # (heads,)
    lex_mean: F64
    lex_scale: F64
    lex_lo: F64  # clip bounds, in standardised units
    lex_hi: F64
    reference: F64  # quantiles 0..1 of the training prompts' scores
    meta: dict[str, Any] = field(default_factory=dict)
    embedder: Embedder | None = None  # embeds prompts given without vectors
    features: tuple[str, ...] = FEATURE_NAMES  # the feature columns the model reads
    calibration: ScoreCalibration | None = None  # score -> P(cheap answer as good)
    head_coef: F64 = field(default_factory=lambda: np.array([1.0, -1.0]))  # score = coef . p

    def __post_init__(self) -> None:
        k = len(self.features)
        heads = self.head_coef.shape
        if self.weights.ndim != 2 or self.weights.shape[1] <= k or heads != (len(self.weights),):
            raise RouteguardError(
                f"learned router: bad weight shape {self.weights.shape} for {heads[0]} heads"
            )
        c = self.head_coef
        if not np.all(np.isfinite(c)) or c[c > 0].sum() > 1 + 1e-9 or c[c < 0].sum() < -1 - 1e-9:
            raise RouteguardError(
                f"learned router: head coefficients {c.tolist()} would leave [-1, 1] (positive "
                "ones must sum to at most 1, negative ones to at least -1)"
            )
        unknown = [f for f in self.features if f not in ALL_FEATURES]
        if unknown:
            raise RouteguardError(
                f"learned router: unknown features {unknown}: this version computes "
                f"{list(ALL_FEATURES)}; retrain the model with `routeguard router train`"
            )
        self._cols = np.array([ALL_FEATURES.index(f) for f in self.features], dtype=np.intp)
        # float32 copies for the one-prompt path: the embedding arrives as float32.
        self._w_emb = np.ascontiguousarray(self.weights[:, : self.dim], dtype=np.float32)
        self._w_lex = self.weights[:, self.dim :]

    @property
    def dim(self) -> int:
        """The embedding dimension the model expects."""
        return int(self.weights.shape[1]) - len(self.features)

    def standardise_lexical(self, raw: F64) -> F64:
        """The lexical columns the heads read, from raw :func:`lexical_features` rows (all
        :data:`ALL_FEATURES` columns, one row or many): the model's columns, standardised with
        its training mean and scale and clipped to the range seen in training."""
        z = (raw[..., self._cols] - self.lex_mean) / self.lex_scale
        out: F64 = np.clip(z, self.lex_lo, self.lex_hi)
        return out

    def lexical_inputs(self, prompts: Sequence[str]) -> F64:
        """:meth:`standardise_lexical` of the prompts' features, ``(len(prompts), features)``:
        the lexical half of the input every head of this model reads (a head fitted on
        ``[embedding, lexical_inputs]`` can be appended to the model)."""
        return self.standardise_lexical(lexical_features(list(prompts)))

    def _check(self, vectors: npt.NDArray[Any]) -> None:
        if vectors.shape[-1] != self.dim:
            raise RouteguardError(
                f"learned router expects {self.dim}-d vectors from {self.meta.get('embedder')}, "
                f"got {vectors.shape[-1]}-d: embed prompts with the model's embedder"
            )

    def head_probabilities(
        self, prompts: Sequence[str], vectors: npt.ArrayLike | None = None
    ) -> F64:
        """Each head's probability per prompt, ``(len(prompts), heads)``; ``vectors`` are the
        prompts' embeddings (computed with :attr:`embedder`, or the default MiniLM, when
        omitted)."""
        texts = list(prompts)
        v = self._embed(texts) if vectors is None else np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[0] != len(texts):
            raise RouteguardError(f"expected {len(texts)} vectors, got shape {v.shape}")
        self._check(v)
        z = v @ self.weights[:, : self.dim].T + self.lexical_inputs(texts) @ self._w_lex.T
        return _sigmoid(z + self.bias)

    def probabilities(
        self, prompts: Sequence[str], vectors: npt.ArrayLike | None = None
    ) -> tuple[F64, F64]:
        """``(p_worse, p_better)`` for each prompt, for the two-head (gain) models."""
        if len(self.weights) != 2:
            raise RouteguardError(
                f"this router model has {len(self.weights)} heads, not p_worse and p_better"
            )
        p = self.head_probabilities(prompts, vectors)
        return p[:, 0], p[:, 1]

    def score(self, prompts: Sequence[str], vectors: npt.ArrayLike | None = None) -> F64:
        """The heads' probabilities weighted by :attr:`head_coef` (``p_worse - p_better`` for
        a two-head model), in ``[-1, 1]``: higher = more in need of the strong model."""
        if not prompts:
            return np.zeros(0, dtype=np.float64)
        out: F64 = self.head_probabilities(prompts, vectors) @ self.head_coef
        return out

    def score_one(self, text: str, vector: F32) -> float:
        """:meth:`score` of one prompt whose embedding is at hand (the request path)."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        self._check(v)
        lex = self.standardise_lexical(np.array(lexical_row(text)))
        z = self._w_emb @ v + self._w_lex @ lex + self.bias
        p = 1.0 / (1.0 + np.exp(-z))
        return float(self.head_coef @ p)

    @property
    def calibrated(self) -> bool:
        """Whether the model carries a score -> probability calibration."""
        return self.calibration is not None

    def _calibration(self) -> ScoreCalibration:
        if self.calibration is None:
            raise RouteguardError(
                "this router model has no probability calibration (written before it existed): "
                "retrain it with `routeguard router train`, or route by threshold/strong_share"
            )
        return self.calibration

    def p_cheap_ok(self, prompts: Sequence[str], vectors: npt.ArrayLike | None = None) -> F64:
        """P(the cheap model's answer is as good as the strong one's) per prompt (calibrated)."""
        cal = self._calibration()
        return cal(self.score(prompts, vectors))

    def p_cheap_ok_of(self, score: float) -> float:
        """The calibrated probability of one score (as from :meth:`score_one`)."""
        return self._calibration().one(score)

    def threshold_for_p(self, min_p_cheap: float) -> float:
        """The score threshold at which ``p_cheap_ok`` falls below ``min_p_cheap``."""
        return self._calibration().score_threshold(min_p_cheap)

    def threshold_for_share(self, share: float) -> float:
        """The threshold that sends ``share`` of the *training* prompts to the strong model.
        Real traffic differs: :mod:`routeguard.routing.calibration` fits it to live traffic."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        if share == 0.0:
            return 1.0
        if share == 1.0:
            return -1.0
        grid = np.linspace(0.0, 1.0, len(self.reference))
        return float(np.interp(1.0 - share, grid, self.reference))

    def _embed(self, texts: list[str]) -> F64:
        emb = self.embedder
        if emb is None:
            from routeguard.embed import default_embedder

            emb = self.embedder = default_embedder()
        return np.asarray(emb.embed(texts), dtype=np.float64)

    def save(self, path: str | Path) -> None:
        """Write the model as one ``.npz`` file."""
        meta = {**self.meta, "format": FORMAT, "features": list(self.features), "dim": self.dim}
        extra: dict[str, Any] = {}
        if self.calibration is not None:
            extra = {"calib_x": self.calibration.x, "calib_y": self.calibration.y}
            meta["calibration"] = {
                **meta.get("calibration", {}),
                "method": self.calibration.method,
                "knots": int(self.calibration.x.size),
            }
        else:
            meta.pop("calibration", None)
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                **extra,
                weights=self.weights.astype(np.float32),
                bias=self.bias.astype(np.float32),
                lex_mean=self.lex_mean,
                lex_scale=self.lex_scale,
                lex_lo=self.lex_lo,
                lex_hi=self.lex_hi,
                reference=self.reference.astype(np.float32),
                head_coef=self.head_coef,
                meta=np.array(json.dumps(meta, sort_keys=True)),
            )

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None) -> LearnedRouter:
        """Read a model written by :meth:`save` (``routeguard router train``)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise RouteguardError(f"cannot read router model {path}: {exc}") from None
        try:
            meta = json.loads(str(arrays["meta"]))
            if meta.get("format") != FORMAT:
                raise RouteguardError(
                    f"{path}: not a routeguard router model (format {meta.get('format')!r}, "
                    f"expected {FORMAT!r})"
                )
            features = tuple(meta.get("features", []))
            calibration = _read_calibration(arrays, meta, path)
            if not set(features) <= set(ALL_FEATURES):
                raise RouteguardError(
                    f"{path}: trained with lexical features {meta.get('features')}, this "
                    "version computes others: retrain it with `routeguard router train`"
                )
            return cls(
                weights=arrays["weights"].astype(np.float64),
                bias=arrays["bias"].astype(np.float64),
                lex_mean=arrays["lex_mean"].astype(np.float64),
                lex_scale=arrays["lex_scale"].astype(np.float64),
                lex_lo=arrays["lex_lo"].astype(np.float64),
                lex_hi=arrays["lex_hi"].astype(np.float64),
                reference=arrays["reference"].astype(np.float64),
                meta=meta,
                embedder=embedder,
                features=features,
                calibration=calibration,
                head_coef=arrays.get("head_coef", np.array([1.0, -1.0])).astype(np.float64),
            )
        except KeyError as exc:
            raise RouteguardError(f"{path}: router model lacks {exc}") from None


def _read_calibration(
    arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any], path: str | Path
) -> ScoreCalibration | None:
    """The calibration stored in a model file, None for files written before calibration."""
    if "calib_x" not in arrays:
        return None
    try:
        return ScoreCalibration(
            arrays["calib_x"].astype(np.float64),
            arrays["calib_y"].astype(np.float64),
            str(meta.get("calibration", {}).get("method", ISOTONIC)),
        )
    except (KeyError, ValueError) as exc:
        raise RouteguardError(f"{path}: bad probability calibration ({exc})") from None


def _sigmoid(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic
    return out


def fit_logistic(
    x: F64, y: F64, l2: float, iterations: int = 50, sample_weight: F64 | None = None
) -> tuple[F64, float]:
    """L2-penalised logistic regression by Newton's method: ``(weights, bias)``.

    ``y`` may be soft (in ``[0, 1]``); ``sample_weight`` (mean 1 keeps ``l2``'s meaning)
    weighs each row's log-loss. The bias gets a tiny penalty too, so a label that never
    occurs yields a large negative bias instead of diverging.
    """
    n, d = x.shape
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    xb = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = 1e-3
    beta = np.zeros(d + 1)
    for _ in range(iterations):
        p = _sigmoid(xb @ beta)
        grad = xb.T @ (sw * (p - y)) + penalty * beta
        hess = (xb * (sw * p * (1.0 - p))[:, None]).T @ xb
        hess[np.diag_indices_from(hess)] += penalty
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return beta[:-1], float(beta[-1])


def train(
    outcomes: Outcomes,
    vectors: npt.ArrayLike,
    *,
    l2: float = DEFAULT_L2,
    embedder: str = EMBEDDER,
    notes: dict[str, Any] | None = None,
    features: Sequence[str] = FEATURE_NAMES,
    sample_weight: npt.ArrayLike | None = None,
    calibration_folds: int = DEFAULT_FOLDS,
    extend: Extend | None = None,
) -> LearnedRouter:
    """Fit both heads on ``outcomes`` whose prompts embed to ``vectors`` (one row each), on
    the soft labels where the outcomes carry them, reading the ``features`` columns; apply
    ``extend`` (e.g. :class:`routeguard.routing.trivial.TrivialHead`); then calibrate
    ``p_cheap_ok`` on out-of-fold scores of models built the same way (``calibration_folds``
    folds; 0 = none)."""
    v = np.asarray(vectors, dtype=np.float64)
    n = len(outcomes)
    if v.ndim != 2 or v.shape[0] != n:
        raise RouteguardError(f"train: expected {n} vectors, got shape {v.shape}")
    worse = outcomes.worse_target
    if n < _MIN_OUTCOMES or worse.sum() == 0:
        raise RouteguardError(
            f"train: need at least {_MIN_OUTCOMES} outcomes, some where the strong model did "
            f"better (got {n} outcomes, {int(worse.sum())} where it did)"
        )
    if calibration_folds == 1 or calibration_folds < 0:
        raise ValueError(f"calibration_folds must be 0 or at least 2, got {calibration_folds}")
    sw = None
    if sample_weight is not None:
        sw = np.asarray(sample_weight, dtype=np.float64)
        sw = sw * (n / sw.sum())
    model = _fit(outcomes, v, l2, tuple(features), sw)
    if extend is not None:
        model = extend(model, outcomes, v)
    model.meta.update(
        embedder=embedder,
        l2=l2,
        n=n,
        share_worse=float(worse.mean()),
        share_better=float(outcomes.better_target.mean()),
        **(notes or {}),
    )
    scores = model.score(outcomes.prompts, v)
    model.reference = np.quantile(scores, np.linspace(0.0, 1.0, _REFERENCE_POINTS))
    if calibration_folds:
        try:
            oof = out_of_fold_scores(
                outcomes, v, calibration_folds, l2, tuple(features), sw, extend
            )
        except (CoreInputError, CoreNotFound):
            raise  # a native kernel refused its input: a bug, not too few outcomes
        except RouteguardError as exc:  # too few outcomes per fold: a model without p_cheap_ok
            model.meta["calibration_skipped"] = str(exc)
            return model
        model.calibration = fit_calibration(oof, outcomes.ok_target, sw)
        model.meta["calibration"] = {
            "fitted_on": f"out-of-fold scores, {calibration_folds} folds of the training rows",
            "n": n,
        }
    return model


def fold_of(prompts: Sequence[str], folds: int) -> npt.NDArray[np.intp]:
    """Each prompt's fold in ``0..folds-1``, by hash (the same prompt, the same fold)."""
    return np.array([int(unit_hash(p, "fold") * folds) for p in prompts], dtype=np.intp)


def out_of_fold_scores(
    outcomes: Outcomes,
    vectors: F64,
    folds: int,
    l2: float = DEFAULT_L2,
    features: tuple[str, ...] = FEATURE_NAMES,
    sample_weight: F64 | None = None,
    extend: Extend | None = None,
) -> F64:
    """Each row's score from a model fitted without its fold, and ``extend``-ed on the same
    rows (what calibration is fitted on: in-sample scores are more confident than the model
    is on new prompts)."""
    fold = fold_of(outcomes.prompts, folds)
    out = np.zeros(len(outcomes))
    for k in range(folds):
        test = fold == k
        train_rows = ~test
        if not test.any():
            continue
        side = outcomes.subset(train_rows)
        if len(side) < _MIN_OUTCOMES or side.worse_target.sum() == 0:
            raise RouteguardError(
                f"train: too few outcomes to calibrate on {folds} folds; pass "
                "calibration_folds=0 (no p_cheap_ok) or add outcomes"
            )
        w = None if sample_weight is None else sample_weight[train_rows]
        m = _fit(side, vectors[train_rows], l2, features, w)
        if extend is not None:
            m = extend(m, side, vectors[train_rows])
        out[test] = m.score(outcomes.subset(test).prompts, vectors[test])
    return out


def _fit(
    outcomes: Outcomes, v: F64, l2: float, names: tuple[str, ...], sw: F64 | None
) -> LearnedRouter:
    """The two heads fitted on ``outcomes`` (no reference quantiles, no calibration)."""
    cols = [ALL_FEATURES.index(f) for f in names]
    raw = lexical_features(outcomes.prompts)[:, cols]
    mean = raw.mean(axis=0)
    scale = raw.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature stays 0 and gets no weight
    z = (raw - mean) / scale
    x = np.hstack([v, z])
    w0, b0 = fit_logistic(x, outcomes.worse_target, l2, sample_weight=sw)
    w1, b1 = fit_logistic(x, outcomes.better_target, l2, sample_weight=sw)
    return LearnedRouter(
        weights=np.vstack([w0, w1]),
        bias=np.array([b0, b1]),
        lex_mean=mean,
        lex_scale=scale,
        lex_lo=z.min(axis=0),
        lex_hi=z.max(axis=0),
        reference=np.zeros(_REFERENCE_POINTS),
        meta={},
        features=names,
    )


_default: LearnedRouter | None = None
_default_lock = threading.Lock()


def default_model_path() -> Path:
    """Where the shipped default model lives inside the package."""
    return Path(str(resources.files("routeguard.routing").joinpath("data", DEFAULT_MODEL)))


def default_model() -> LearnedRouter:
    """The shipped router (gain heads trained on RouteLLM's MMLU outcomes, plus the
    trivial-prompt head; built by ``benches/router_default.py``), loaded once and shared."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = LearnedRouter.load(default_model_path())
    return _default
