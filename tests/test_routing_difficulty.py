"""The Rasch difficulty fit behind the difficulty targets (#15)."""

from __future__ import annotations

import numpy as np
import pytest

from routeguard.routing.difficulty import difficulty_labels, fit_irt


def test_fit_irt_recovers_the_order_of_difficulties_and_abilities() -> None:
    rng = np.random.default_rng(7)
    b_true = np.linspace(-2.5, 2.5, 300)
    theta_true = np.array([-1.5, -0.5, 0.0, 0.7, 1.5, 2.0])
    p = 1.0 / (1.0 + np.exp(-(theta_true[None, :] - b_true[:, None])))
    y = (rng.random(p.shape) < p).astype(np.float64)
    y[rng.random(y.shape) < 0.05] = np.nan  # some models not scored on some prompts
    b, theta = fit_irt(y)
    assert np.all(np.isfinite(b)) and np.all(np.isfinite(theta))
    assert list(np.argsort(theta)) == list(range(len(theta_true)))
    assert np.corrcoef(b, b_true)[0, 1] > 0.8


def test_all_right_and_all_wrong_prompts_stay_finite_and_ordered() -> None:
    y = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    d = difficulty_labels(y)
    assert np.all((d > 0) & (d < 1))
    assert d[0] < d[1] < d[2]


@pytest.mark.parametrize(
    "bad",
    [np.zeros((0, 3)), np.array([1.0, 0.0]), np.array([[0.5, 1.5]])],
)
def test_fit_irt_refuses_bad_matrices(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fit_irt(bad)
