"""Multi-head learned routers and the trivial-prompt head (#15): format, limits, effect."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from embedders import WordsEmbedder
from routeguard.errors import RouteguardError
from routeguard.routing.features import lexical_row
from routeguard.routing.learned import LearnedRouter, train
from routeguard.routing.outcomes import Outcomes
from routeguard.routing.trivial import (
    TRAINED_MAX_WEIGHT,
    TrivialHead,
    add_trivial_head,
    gain_heads,
    prefixes,
    trivial_prompts,
)

_TASKS = [
    "prove that the sum of two even numbers is even and explain each step",
    "write a python function that merges two sorted lists without using sort",
    "what is the capital of australia and why was it chosen over sydney",
    "summarise the causes of the first world war in three paragraphs",
    "compute the derivative of x squared times the sine of x",
    "explain how a hash map handles collisions with open addressing",
]


def _real() -> Outcomes:
    records = [
        {
            "prompt": f"{_TASKS[i % len(_TASKS)]} case {i}",
            "cheap_ok": i % 3 != 0,
            "strong_ok": True,
        }
        for i in range(120)
    ]
    return Outcomes.from_records(records)


def _gain_model() -> tuple[LearnedRouter, Outcomes]:
    data = _real()
    return train(data, WordsEmbedder().embed(data.prompts), calibration_folds=0), data


def test_trivial_prompts_are_distinct_deterministic_and_social() -> None:
    a = trivial_prompts(300, seed=3)
    assert a == trivial_prompts(300, seed=3)
    assert len(set(a)) == 300
    assert a != trivial_prompts(300, seed=4)
    assert max(len(p.split()) for p in a) <= 12
    with pytest.raises(ValueError):
        trivial_prompts(-1)


def test_prefixes_keep_the_first_words() -> None:
    assert prefixes(["one two three four", "a b"], words=3) == ["one two three", "a b"]


def test_trivial_head_puts_social_turns_below_real_asks() -> None:
    base, data = _gain_model()
    emb = WordsEmbedder()
    model = add_trivial_head(base, data.prompts, emb.embed(data.prompts), emb)
    assert model.weights.shape[0] == 3 and model.head_coef[2] < 0
    pos, neg = model.head_coef[model.head_coef > 0].sum(), model.head_coef[model.head_coef < 0]
    assert pos <= 1 + 1e-9 and neg.sum() >= -1 - 1e-9
    social = ["hey there friend!", "thanks so much, bye", "ok cool"]
    asks = [f"{t} please" for t in _TASKS]
    s_social = model.score(social, emb.embed(social))
    s_asks = model.score(asks, emb.embed(asks))
    assert s_social.max() < s_asks.min()
    # on real prompts the head is near zero, so the gain ranking survives
    before = base.score(data.prompts, emb.embed(data.prompts))
    after = model.score(data.prompts, emb.embed(data.prompts))
    assert np.corrcoef(before, after)[0, 1] > 0.99
    stripped = gain_heads(model)
    assert stripped.weights.shape[0] == 2 and "trivial_head" not in stripped.meta
    np.testing.assert_allclose(stripped.score(data.prompts, emb.embed(data.prompts)), before)


def test_three_head_model_round_trips_and_score_one_matches(tmp_path: Path) -> None:
    base, data = _gain_model()
    emb = WordsEmbedder()
    model = add_trivial_head(base, data.prompts, emb.embed(data.prompts), emb)
    path = tmp_path / "m.npz"
    model.save(path)
    back = LearnedRouter.load(path)
    np.testing.assert_allclose(back.head_coef, model.head_coef)
    texts = ["hello friend", _TASKS[0]]
    vecs = emb.embed(texts)
    np.testing.assert_allclose(back.score(texts, vecs), model.score(texts, vecs), atol=1e-5)
    for t, v in zip(texts, vecs, strict=True):
        assert back.score_one(t, v) == pytest.approx(back.score([t], v[None, :])[0], abs=1e-5)
    with pytest.raises(RouteguardError, match="not p_worse and p_better"):
        back.probabilities(texts, vecs)


def test_head_coefficients_that_leave_the_score_range_are_refused() -> None:
    base, _ = _gain_model()
    with pytest.raises(RouteguardError, match=r"would leave \[-1, 1\]"):
        replace(base, head_coef=np.array([1.5, -1.0]))
    with pytest.raises(RouteguardError, match="heads"):
        replace(base, head_coef=np.array([1.0, -0.5, -0.5]))
    with pytest.raises(ValueError, match="max_weight"):
        TrivialHead(WordsEmbedder(), max_weight=0.0)


def test_lexical_inputs_are_what_every_head_reads() -> None:
    """The public lexical transform (used to fit an extra head) is the one scoring uses: the
    heads' probabilities rebuilt from it equal the model's, and the one-prompt path agrees."""
    base, data = _gain_model()
    emb = WordsEmbedder()
    model = add_trivial_head(base, data.prompts, emb.embed(data.prompts), emb)
    texts = ["hi", "thanks!", *data.prompts[:20], "x" * 5000]  # the last is clipped
    vecs = emb.embed(texts).astype(np.float64)
    lex = model.lexical_inputs(texts)
    assert lex.shape == (len(texts), len(model.features))
    z = np.hstack([vecs, lex]) @ model.weights.T + model.bias
    np.testing.assert_allclose(model.head_probabilities(texts, vecs), 1 / (1 + np.exp(-z)))
    assert np.all(lex >= model.lex_lo - 1e-12) and np.all(lex <= model.lex_hi + 1e-12)
    for i, t in enumerate(texts[:3]):
        np.testing.assert_array_equal(model.standardise_lexical(np.array(lexical_row(t))), lex[i])


def test_train_with_the_trivial_head_keeps_greetings_below_asks() -> None:
    """``train(extend=TrivialHead(...))`` (what ``router train`` does by default): the model
    carries the head, is calibrated on out-of-fold scores of fold models that carry it too,
    and puts social turns below real asks where the two gain heads alone do not."""
    data = _real()
    emb = WordsEmbedder()
    vecs = emb.embed(data.prompts)
    social = ["hey there friend!", "thanks so much, bye", "ok cool", "hello", "good night"]
    asks = [f"{t} please" for t in _TASKS]
    s_vec, a_vec = emb.embed(social), emb.embed(asks)
    plain = train(data, vecs)
    assert plain.score(social, s_vec).max() > plain.score(asks, a_vec).min()  # the gap to fill

    head = TrivialHead(emb)
    calls: list[int] = []

    def counting(m: LearnedRouter, o: Outcomes, v: npt.NDArray[np.float64]) -> LearnedRouter:
        calls.append(len(o))
        return head(m, o, v)

    model = train(data, vecs, extend=counting, calibration_folds=4)
    assert calls[0] == len(data) and len(calls) == 5 and all(n < len(data) for n in calls[1:])
    assert model.weights.shape[0] == 3 and model.calibrated and "trivial_head" in model.meta
    uncapped = add_trivial_head(plain, data.prompts, vecs, emb).head_coef[2]
    assert model.head_coef[2] == pytest.approx(max(uncapped, -TRAINED_MAX_WEIGHT))
    assert model.score(social, s_vec).max() < model.score(asks, a_vec).min()
    np.testing.assert_allclose(model.weights[:2], plain.weights)  # the gain heads unchanged
    p_ok = model.p_cheap_ok(social + asks, np.vstack([s_vec, a_vec]))
    assert np.all((p_ok >= 0) & (p_ok <= 1))
