"""The learned router's calibrated probability: fitting, reliability, the model file, routing by it.

Synthetic outcomes whose true probability is known check the fits; the router tests use the
deterministic ``WordsEmbedder``. Held-out reliability of the shipped model is measured in
``benches/router_calibration.py``, not asserted here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedders import WordsEmbedder
from routeguard.errors import RouteguardError
from routeguard.routing import Router, default_router
from routeguard.routing.learned import LearnedRouter, train
from routeguard.routing.outcomes import Outcomes
from routeguard.routing.probability import (
    ScoreCalibration,
    fit_calibration,
    fit_isotonic,
    fit_platt,
    reliability,
)


def _truth(s: np.ndarray) -> np.ndarray:
    """A known P(cheap as good) falling with the score."""
    out: np.ndarray = 1.0 / (1.0 + np.exp(8.0 * s - 1.0))
    return out


def _draws(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(-0.6, 0.8, n)
    return s, (rng.random(n) < _truth(s)).astype(np.float64)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_fit_recovers_a_known_probability_and_never_increases(method: str) -> None:
    s, y = _draws(20_000, seed=1)
    cal = fit_calibration(s, y, method=method)
    grid = np.linspace(-0.6, 0.8, 50)
    p = cal(grid)
    assert np.all(np.diff(p) <= 1e-12) and np.all((p >= 0) & (p <= 1))
    # much closer to the truth than the base rate is
    err = np.abs(p - _truth(grid)).mean()
    assert err < 0.25 * np.abs(y.mean() - _truth(grid)).mean()
    # on fresh draws, calibrated beats the raw score read as a probability
    s2, y2 = _draws(5_000, seed=2)
    fitted = reliability(cal(s2), y2)
    naive = reliability(np.clip(0.5 - s2, 0, 1), y2)
    assert fitted.ece < naive.ece
    assert fitted.count.sum() == fitted.n == 5_000


def test_isotonic_weights_count_like_repeats() -> None:
    s, y = _draws(500, seed=3)
    w = np.where(np.arange(500) % 2 == 0, 2.0, 1.0)
    repeated = np.concatenate([s, s[::2]]), np.concatenate([y, y[::2]])
    a, b = fit_isotonic(s, y, w), fit_isotonic(*repeated)
    grid = np.linspace(-0.6, 0.8, 40)
    np.testing.assert_allclose(a(grid), b(grid), atol=1e-9)


def test_reliability_of_a_perfect_and_a_biased_predictor() -> None:
    rng = np.random.default_rng(4)
    p = rng.random(40_000)
    y = (rng.random(p.size) < p).astype(np.float64)
    good, bad = reliability(p, y), reliability(np.clip(p + 0.2, 0, 1), y)
    assert good.ece < bad.ece
    full = good.count > 0
    assert np.all(np.abs(good.predicted[full] - good.observed[full]) < bad.ece)


@pytest.mark.parametrize("min_p", [0.0, 0.1, 0.35, 0.5, 0.62, 0.9, 1.0])
def test_score_threshold_is_the_probability_floor(min_p: float) -> None:
    s, y = _draws(3_000, seed=5)
    for cal in (fit_isotonic(s, y), fit_platt(s, y)):
        t = cal.score_threshold(min_p)
        probe = np.concatenate([np.linspace(-1, 1, 2001), s, cal.x])
        strong = probe >= t
        np.testing.assert_array_equal(strong, cal(probe) < min_p)
        assert all(cal.one(float(v)) == pytest.approx(float(cal(v)), abs=1e-12) for v in probe)


def test_bad_knots_are_refused() -> None:
    with pytest.raises(ValueError, match="increase"):
        ScoreCalibration(np.array([0.0, 0.1]), np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="increase"):
        ScoreCalibration(np.array([0.1, 0.0]), np.array([0.3, 0.2]))


# --------------------------------------------------------------------------- the model file

_HARD = ["prove the theorem about primes", "derive the integral bound", "prove the lemma"]
_EASY = ["say hello to me", "what colour is the sky", "thanks a lot friend"]


def _outcomes(n: int = 120) -> Outcomes:
    records = []
    for i in range(n):
        hard = i % 2 == 0
        records.append(
            {
                "prompt": f"{(_HARD if hard else _EASY)[i % 3]} {i}",
                "cheap_ok": not hard or i % 10 == 0,
                "strong_ok": hard or i % 7 == 0,
            }
        )
    return Outcomes.from_records(records)


def _model() -> LearnedRouter:
    data = _outcomes()
    model = train(data, WordsEmbedder().embed(data.prompts), embedder="words-test")
    model.embedder = WordsEmbedder()
    return model


def test_training_calibrates_on_out_of_fold_scores(tmp_path: Path) -> None:
    model = _model()
    assert model.calibrated and model.calibration is not None
    hard, easy = model.p_cheap_ok(["prove the lemma 1001", "say hello to me 1002"])
    assert hard < easy
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = LearnedRouter.load(path, embedder=WordsEmbedder())
    prompts = [*_HARD, *_EASY]
    np.testing.assert_allclose(loaded.p_cheap_ok(prompts), model.p_cheap_ok(prompts), atol=1e-6)
    assert loaded.meta["calibration"]["method"] == "isotonic"
    # too few outcomes for the folds: a model without a calibration, and it says why
    small = _outcomes(24)
    bare = train(small, WordsEmbedder().embed(small.prompts))
    assert not bare.calibrated and "calibration_skipped" in bare.meta


def _old_file(tmp_path: Path) -> Path:
    """A model file as written before calibration existed."""
    model = _model()
    model.calibration = None
    model.meta.pop("calibration", None)
    path = tmp_path / "old.npz"
    model.save(path)
    with np.load(path) as z:
        assert "calib_x" not in z.files
    return path


def test_files_without_calibration_still_load_and_route(tmp_path: Path) -> None:
    path = _old_file(tmp_path)
    old = LearnedRouter.load(path, embedder=WordsEmbedder())
    assert not old.calibrated
    with pytest.raises(RouteguardError, match="no probability calibration"):
        old.p_cheap_ok(["hi"])
    spec: dict[str, Any] = {"cheap": "small", "strong": "big", "model": str(path)}
    r = Router.from_dict("smart", {**spec, "threshold": 0.0}, embedder=WordsEmbedder())
    d = r.route({"messages": [{"role": "user", "content": "prove the lemma"}]})
    assert d.reason == "learned" and d.p_cheap_ok is None
    with pytest.raises(RouteguardError, match="min_p_cheap: the model has no probability"):
        Router.from_dict("smart", {**spec, "min_p_cheap": 0.7}, embedder=WordsEmbedder())


def _texts(n: int) -> list[str]:
    return [f"{(_HARD + _EASY)[i % 6]} {1000 + i}" for i in range(n)]


def test_min_p_cheap_routes_by_the_calibrated_probability(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    model = _model()
    model.save(path)
    spec: dict[str, Any] = {"cheap": "small", "strong": "big", "model": str(path)}
    emb = WordsEmbedder()
    for min_p in (0.2, 0.5, 0.8):
        r = Router.from_dict("smart", {**spec, "min_p_cheap": min_p}, embedder=emb)
        for text in _texts(30):
            d = r.route({"messages": [{"role": "user", "content": text}]})
            assert d.p_cheap_ok is not None and d.score is not None
            assert d.p_cheap_ok == pytest.approx(model.p_cheap_ok_of(d.score), abs=1e-12)
            assert (d.target_alias == "big") == (d.p_cheap_ok < min_p)
    for other in ({"threshold": 0.1}, {"strong_share": 0.3}):
        with pytest.raises(RouteguardError, match="set one of"):
            Router.from_dict("smart", {**spec, "min_p_cheap": 0.5, **other}, embedder=emb)
    with pytest.raises(RouteguardError, match="probability in"):
        Router.from_dict("smart", {**spec, "min_p_cheap": 1.5}, embedder=emb)


def test_threshold_and_strong_share_are_unchanged_by_calibration(tmp_path: Path) -> None:
    calibrated, old = tmp_path / "m.npz", _old_file(tmp_path)
    _model().save(calibrated)
    emb = WordsEmbedder()
    for keys in ({"threshold": 0.05}, {"strong_share": 0.4}):
        routers = [
            Router.from_dict(
                "smart", {"cheap": "s", "strong": "b", "model": str(p), **keys}, embedder=emb
            )
            for p in (calibrated, old)
        ]
        for text in _texts(40):
            a, b = (r.route({"messages": [{"role": "user", "content": text}]}) for r in routers)
            assert (a.target_alias, a.score) == (b.target_alias, b.score)


def test_cli_score_prints_the_probability(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from routeguard.routing.cli import main

    path = tmp_path / "m.npz"
    model = _model()
    model.save(path)
    monkeypatch.setattr(
        LearnedRouter, "load", classmethod(lambda cls, p, embedder=None: model)
    )  # the CLI embeds with MiniLM by default; this model reads WordsEmbedder vectors
    prompts = ["prove the lemma 7", "say hello to me 8"]
    monkeypatch.setattr(
        "sys.stdin", io.StringIO("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    )
    assert main(["router", "score", "--model", str(path)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["p_cheap_ok"] for r in rows] == pytest.approx(
        model.p_cheap_ok(prompts).tolist(), abs=1e-4
    )
    assert rows[0]["p_cheap_ok"] < rows[1]["p_cheap_ok"]


# --------------------------------------------------------------------------- estimated APGR


def test_estimated_apgr_matches_labels_drawn_from_the_probabilities() -> None:
    from routeguard.routing import metrics

    rng = np.random.default_rng(6)
    n = 20_000
    for spread in (0.0, 0.2, 0.45):
        p = np.clip(0.5 + spread * rng.uniform(-1, 1, n), 0, 1)
        scores = 1.0 - p + rng.normal(0, 1e-6, n)  # ranks by p, ties broken at random
        cheap = (rng.random(n) < p).astype(np.float64)  # outcomes as the assumptions say
        est = metrics.estimated_apgr(scores, p)
        real = metrics.apgr(scores, cheap, np.ones(n))
        assert est == pytest.approx(real, abs=0.02)
        if spread == 0.0:
            assert est == pytest.approx(0.5, abs=1e-3)
    assert metrics.estimated_apgr(np.zeros(4), np.ones(4)) == 0.5


def test_the_shipped_model_carries_a_calibration() -> None:
    model = default_router()
    assert model.calibrated and model.calibration is not None
    p = model.calibration(np.linspace(-1, 1, 101))
    assert np.all((p >= 0) & (p <= 1)) and np.all(np.diff(p) <= 1e-12)
    assert "fitted_on" in model.meta["calibration"]
