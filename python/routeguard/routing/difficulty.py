"""How hard a prompt is across many models: a cleaner training target than one pair's win/loss.

Data flow: a matrix of outcomes, one row per prompt and one column per model (scores in
``[0, 1]``: right/wrong, a judge's win/tie/loss as 1/0.5/0, NaN where a model was not scored)
-> a one-parameter item-response (Rasch) model fitted jointly over prompts and models,
``P(model m does well on prompt i) = sigmoid(ability_m - difficulty_i)``, with a Gaussian
prior on both so a prompt every model got right (or wrong) gets a finite difficulty ->
:func:`difficulty_labels`: ``sigmoid(difficulty_i - mean ability)``, the probability that a
model of average ability for the set does badly on the prompt, in ``(0, 1)``.

Why not the pair's own outcome: one cheap/strong pair's win/loss on a prompt is one noisy coin
flip; nine or eleven models' outcomes average out most of that noise, and a model that fails
where strong models succeed says more about the prompt than about the pair. The router trains
a logistic head on these soft labels (:func:`routeguard.routing.learned.train_difficulty`).

Fitting is by alternating one-dimensional Newton steps (prompts, then models), exact and
deterministic; a few hundred thousand cells take well under a second.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

ITEM_PRIOR = 0.5
"""L2 penalty on each prompt's difficulty (a standard-normal-ish prior, in logits)."""
MODEL_PRIOR = 0.1
"""L2 penalty on each model's ability."""


def _sigmoid(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def fit_irt(
    outcomes: npt.ArrayLike,
    *,
    item_prior: float = ITEM_PRIOR,
    model_prior: float = MODEL_PRIOR,
    iterations: int = 200,
) -> tuple[F64, F64]:
    """``(difficulty per prompt, ability per model)`` of a Rasch model fitted to ``outcomes``
    (prompts x models, values in ``[0, 1]``, NaN = not scored)."""
    y = np.asarray(outcomes, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"outcomes must be a non-empty (prompts, models) matrix, got {y.shape}")
    seen = ~np.isnan(y)
    if np.any((y[seen] < 0.0) | (y[seen] > 1.0)):
        raise ValueError("outcomes must lie in [0, 1]")
    if item_prior <= 0.0 or model_prior <= 0.0:
        raise ValueError("the priors must be positive (they keep all-right prompts finite)")
    yz = np.where(seen, y, 0.0)
    b = np.zeros(y.shape[0])
    theta = np.zeros(y.shape[1])
    for _ in range(iterations):
        p = _sigmoid(theta[None, :] - b[:, None])
        step_b = (((yz - p) * seen).sum(axis=1) + item_prior * b) / (
            (p * (1.0 - p) * seen).sum(axis=1) + item_prior
        )
        b -= step_b
        p = _sigmoid(theta[None, :] - b[:, None])
        step_t = (((p - yz) * seen).sum(axis=0) + model_prior * theta) / (
            (p * (1.0 - p) * seen).sum(axis=0) + model_prior
        )
        theta -= step_t
        if max(float(np.abs(step_b).max()), float(np.abs(step_t).max())) < 1e-9:
            break
    return b, theta


def difficulty_labels(outcomes: npt.ArrayLike) -> F64:
    """Per prompt, P(a model of the set's mean ability does badly on it), from :func:`fit_irt`."""
    b, theta = fit_irt(outcomes)
    return _sigmoid(b - theta.mean())
