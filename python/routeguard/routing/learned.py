"""The learned cheap/strong router: how much better the strong model's answer is likely to be.

Model: two logistic-regression heads over the same features, ``[embedding, lexical]`` (the
shared 384-d MiniLM vector of the prompt, and the ten lexical features of
:mod:`routeguard.routing.features`, standardised and clipped to the range seen in training):

- ``p_worse``  = P(the cheap model's answer is worse than the strong one's),
- ``p_better`` = P(the cheap model's answer is better),

and ``score = p_worse - p_better``, the expected quality gain of calling the strong model with
0/1 outcomes (in ``[-1, 1]``; higher = more in need of the strong model). On RouteLLM's MMLU
outcomes this beat a single ``p_worse`` head, ridge regression on the gain, kNN over the
embedding and a one-hidden-layer MLP in cross-validation, on random and on cross-subject folds
(numbers in ``benches/router_quality.py``'s docstring).

Training (:func:`train`): labels from :class:`~routeguard.routing.outcomes.Outcomes`
(``strong > cheap`` and ``cheap > strong``) -> each head fitted by Newton's method with an L2
penalty (exact and deterministic: no seeds, no sampling) -> the training prompts' scores kept
as 1,001 quantiles, so a ``strong_share`` can be turned into a threshold without data.
Calibration to real traffic lives in :mod:`routeguard.routing.calibration`.

Artifact: one small ``.npz`` (a few KB): ``weights`` (2 x (dim + 10)), ``bias``, the lexical
scaling and clip bounds, ``reference`` quantiles, and ``meta`` (JSON: embedder, dimension,
feature names, training summary). Loading needs no pickle.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.errors import RouteguardError
from routeguard.routing.features import (
    ALL_FEATURES,
    FEATURE_NAMES,
    lexical_features,
    lexical_row,
)
from routeguard.routing.outcomes import Outcomes
from routeguard.routing.semantic import TextEmbedder

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

FORMAT = "routeguard-learned-router/1"
EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_L2 = 10.0
DEFAULT_MODEL = "default_router.npz"
_REFERENCE_POINTS = 1001
_MIN_OUTCOMES = 20


@dataclass
class LearnedRouter:
    """A trained two-head router; see the module docstring for what it computes."""

    weights: F64  # (2, dim + n_lexical): row 0 = p_worse head, row 1 = p_better head
    bias: F64  # (2,)
    lex_mean: F64
    lex_scale: F64
    lex_lo: F64  # clip bounds, in standardised units
    lex_hi: F64
    reference: F64  # quantiles 0..1 of the training prompts' scores
    meta: dict[str, Any] = field(default_factory=dict)
    embedder: TextEmbedder | None = None  # embeds prompts given without vectors
    features: tuple[str, ...] = FEATURE_NAMES  # the feature columns the model reads

    def __post_init__(self) -> None:
        k = len(self.features)
        if self.weights.ndim != 2 or self.weights.shape[0] != 2 or self.weights.shape[1] <= k:
            raise RouteguardError(f"learned router: bad weight shape {self.weights.shape}")
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

    def _lexical(self, raw: F64) -> F64:
        z = (raw[..., self._cols] - self.lex_mean) / self.lex_scale
        out: F64 = np.clip(z, self.lex_lo, self.lex_hi)
        return out

    def _check(self, vectors: npt.NDArray[Any]) -> None:
        if vectors.shape[-1] != self.dim:
            raise RouteguardError(
                f"learned router expects {self.dim}-d vectors from {self.meta.get('embedder')}, "
                f"got {vectors.shape[-1]}-d: embed prompts with the model's embedder"
            )

    def probabilities(
        self, prompts: Sequence[str], vectors: npt.ArrayLike | None = None
    ) -> tuple[F64, F64]:
        """``(p_worse, p_better)`` for each prompt; ``vectors`` are the prompts' embeddings
        (computed with :attr:`embedder`, or the default MiniLM, when omitted)."""
        texts = list(prompts)
        v = self._embed(texts) if vectors is None else np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[0] != len(texts):
            raise RouteguardError(f"expected {len(texts)} vectors, got shape {v.shape}")
        self._check(v)
        z = (
            v @ self.weights[:, : self.dim].T
            + self._lexical(lexical_features(texts)) @ self._w_lex.T
        )
        p = _sigmoid(z + self.bias)
        return p[:, 0], p[:, 1]

    def score(self, prompts: Sequence[str], vectors: npt.ArrayLike | None = None) -> F64:
        """``p_worse - p_better`` per prompt: higher = more in need of the strong model."""
        if not prompts:
            return np.zeros(0, dtype=np.float64)
        worse, better = self.probabilities(prompts, vectors)
        out: F64 = worse - better
        return out

    def score_one(self, text: str, vector: F32) -> float:
        """:meth:`score` of one prompt whose embedding is at hand (the request path)."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        self._check(v)
        lex = self._lexical(np.array(lexical_row(text)))
        z = self._w_emb @ v + self._w_lex @ lex + self.bias
        p = 1.0 / (1.0 + np.exp(-z))
        return float(p[0] - p[1])

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
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                weights=self.weights.astype(np.float32),
                bias=self.bias.astype(np.float32),
                lex_mean=self.lex_mean,
                lex_scale=self.lex_scale,
                lex_lo=self.lex_lo,
                lex_hi=self.lex_hi,
                reference=self.reference.astype(np.float32),
                meta=np.array(json.dumps(meta, sort_keys=True)),
            )

    @classmethod
    def load(cls, path: str | Path, embedder: TextEmbedder | None = None) -> LearnedRouter:
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
            )
        except KeyError as exc:
            raise RouteguardError(f"{path}: router model lacks {exc}") from None


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
) -> LearnedRouter:
    """Fit both heads on ``outcomes`` whose prompts embed to ``vectors`` (one row each), on
    the soft labels where the outcomes carry them, reading the ``features`` columns."""
    v = np.asarray(vectors, dtype=np.float64)
    n = len(outcomes)
    if v.ndim != 2 or v.shape[0] != n:
        raise RouteguardError(f"train: expected {n} vectors, got shape {v.shape}")
    worse = outcomes.worse_target
    better = outcomes.better_target
    if n < _MIN_OUTCOMES or worse.sum() == 0:
        raise RouteguardError(
            f"train: need at least {_MIN_OUTCOMES} outcomes, some where the strong model did "
            f"better (got {n} outcomes, {int(worse.sum())} where it did)"
        )
    names = tuple(features)
    cols = [ALL_FEATURES.index(f) for f in names]
    raw = lexical_features(outcomes.prompts)[:, cols]
    mean = raw.mean(axis=0)
    scale = raw.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature stays 0 and gets no weight
    z = (raw - mean) / scale
    x = np.hstack([v, z])
    sw = None
    if sample_weight is not None:
        sw = np.asarray(sample_weight, dtype=np.float64)
        sw = sw * (n / sw.sum())
    w0, b0 = fit_logistic(x, worse, l2, sample_weight=sw)
    w1, b1 = fit_logistic(x, better, l2, sample_weight=sw)
    model = LearnedRouter(
        weights=np.vstack([w0, w1]),
        bias=np.array([b0, b1]),
        lex_mean=mean,
        lex_scale=scale,
        lex_lo=z.min(axis=0),
        lex_hi=z.max(axis=0),
        reference=np.zeros(_REFERENCE_POINTS),
        meta={
            "embedder": embedder,
            "l2": l2,
            "n": n,
            "share_worse": float(worse.mean()),
            "share_better": float(better.mean()),
            **(notes or {}),
        },
        features=names,
    )
    scores = model.score(outcomes.prompts, v)
    model.reference = np.quantile(scores, np.linspace(0.0, 1.0, _REFERENCE_POINTS))
    return model


_default: LearnedRouter | None = None
_default_lock = threading.Lock()


def default_model_path() -> Path:
    """Where the shipped default model lives inside the package."""
    return Path(str(resources.files("routeguard.routing").joinpath("data", DEFAULT_MODEL)))


def default_model() -> LearnedRouter:
    """The shipped router, trained on RouteLLM's MMLU outcomes (loaded once, shared)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = LearnedRouter.load(default_model_path())
    return _default
