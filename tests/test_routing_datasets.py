"""Readers of many-model outcome sets, soft labels, and models over chosen feature columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedders import WordsEmbedder
from routeguard.routing.datasets import llmrouter_family, read_alpacaeval, read_llmrouter
from routeguard.routing.features import ALL_FEATURES, FEATURE_NAMES, lexical_features
from routeguard.routing.learned import LearnedRouter, train
from routeguard.routing.outcomes import Outcomes


def _write(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_llmrouter_family_reads_source_formats() -> None:
    assert llmrouter_family("Write a python function to reverse a string.") == "code"
    assert llmrouter_family('\ndef add(a, b):\n    """Add."""\n') == "code"
    assert llmrouter_family("Q: There are 3 houses in a row, numbered 1 to 3.") == "reasoning"
    assert llmrouter_family("Simplify $\\frac{2}{4}$.") == "maths"
    assert llmrouter_family("Tom has 3 apples and buys 4 more. How many apples?") == "maths"
    assert llmrouter_family("who wrote the song yesterday") == "knowledge"


def test_read_alpacaeval_pairs_and_soft_labels(tmp_path: Path) -> None:
    key = "preference_vs_gpt4_1106_preview"
    _write(
        tmp_path / "preferences.jsonl",
        [
            {
                "prompt": "a\u2028b",
                "dataset": "oasst",
                key: {"Mixtral-8x7B-Instruct-v0.1": 2.0, "x": 1},
            },
            {
                "prompt": "c",
                "dataset": "koala",
                key: {"Mixtral-8x7B-Instruct-v0.1": 1.5, "x": None},
            },
        ],
    )
    o = read_alpacaeval(tmp_path)
    assert o.prompts == ["a\u2028b", "c"]
    np.testing.assert_allclose(o.cheap, [1.0, 0.5])
    np.testing.assert_allclose(o.strong, [0.0, 0.5])
    np.testing.assert_allclose(o.worse_target, [0.5, 0.0])
    np.testing.assert_allclose(o.better_target, [0.5, 0.0])
    assert o.groups == ["alpacaeval/oasst", "alpacaeval/koala"]


def test_read_llmrouter_strong_against_the_pool(tmp_path: Path) -> None:
    strong = "llama-3.1-nemotron-51b-instruct"
    _write(
        tmp_path / "train.jsonl",
        [{"prompt": "who is x", "scores": {strong: 1.0, "a": 0.0, "b": 1.0}}],
    )
    _write(
        tmp_path / "test.jsonl",
        [{"prompt": "Write a function f.", "scores": {strong: 0.0, "a": 1.0, "b": 0.0}}],
    )
    o = read_llmrouter(tmp_path)
    np.testing.assert_allclose(o.cheap, [0.5, 0.5])
    np.testing.assert_allclose(o.strong, [1.0, 0.0])
    np.testing.assert_allclose(o.worse_target - o.better_target, o.strong - o.cheap)
    assert o.groups == ["llmrouter/knowledge", "llmrouter/code"]


def test_concat_keeps_soft_labels_and_pair_labels() -> None:
    hard = Outcomes(["p"], np.array([0.0]), np.array([1.0]), ["g"])
    soft = Outcomes(
        ["q"], np.array([0.5]), np.array([0.5]), ["h"], np.array([0.3]), np.array([0.2])
    )
    both = Outcomes.concat([hard, soft])
    np.testing.assert_allclose(both.worse_target, [1.0, 0.3])
    np.testing.assert_allclose(both.better_target, [0.0, 0.2])
    assert both.subset(np.array([1])).worse is not None


@pytest.mark.parametrize("features", [FEATURE_NAMES, ALL_FEATURES])
def test_model_reads_only_its_feature_columns(tmp_path: Path, features: tuple[str, ...]) -> None:
    emb = WordsEmbedder()
    prompts = [f"prove theorem {i} step by step" if i % 2 else f"hello {i}" for i in range(40)]
    worse = np.array([0.9 if i % 2 else 0.1 for i in range(40)])
    o = Outcomes(prompts, np.zeros(40), np.ones(40), [""] * 40, worse, np.zeros(40))
    vectors = np.asarray(emb.embed(prompts), dtype=np.float64)
    model = train(o, vectors, features=features)
    assert model.features == tuple(features)
    model.save(tmp_path / "m.npz")
    loaded = LearnedRouter.load(tmp_path / "m.npz")
    assert loaded.features == tuple(features)
    np.testing.assert_allclose(
        loaded.score(prompts, vectors), model.score(prompts, vectors), atol=1e-4
    )
    one = loaded.score_one(prompts[1], vectors[1].astype(np.float32))
    assert one == pytest.approx(float(loaded.score(prompts[1:2], vectors[1:2])[0]), abs=1e-5)
    assert lexical_features(prompts).shape == (40, len(ALL_FEATURES))
    assert (
        model.score(prompts[1::2], vectors[1::2]).mean()
        > model.score(prompts[::2], vectors[::2]).mean()
    )
