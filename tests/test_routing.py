"""The routing layer: rules, semantic routes, the learned router, metrics, the pipeline, the CLI.

Logic tests use the deterministic ``WordsEmbedder``; only the default-model and CLI tests call
the real MiniLM (a few small batches). No test asserts a quality figure: those are measured in
``benches/router_quality.py``.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedders import WordsEmbedder
from routeguard.config.routes import RouteSettings, RuleSettings, route_targets
from routeguard.errors import RouteguardError
from routeguard.routing import (
    RouteDecision,
    Router,
    default_router,
    metrics,
    prompt_text,
)
from routeguard.routing.calibration import LiveShare, calibrate
from routeguard.routing.learned import LearnedRouter, train
from routeguard.routing.outcomes import (
    Outcomes,
    group_holdout_mask,
    holdout_mask,
    read_jsonl,
    read_outcomes,
    suspect_groups,
)
from routeguard.routing.rules import Rule, RuleInput, Rules
from routeguard.routing.semantic import SemanticRoutes


def _minilm_available() -> bool:
    try:
        from routeguard.embed.minilm import bundled_model_dir

        bundled_model_dir()
    except RouteguardError:
        return False
    return True


needs_minilm = pytest.mark.skipif(
    not _minilm_available(), reason="all-MiniLM-L6-v2 weights not installed"
)


def _req(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "smart", "messages": [{"role": "user", "content": text}], **extra}


def _input(text: str = "", tokens: int = 10, **kw: Any) -> RuleInput:
    return RuleInput(
        metadata=kw.get("metadata", {}),
        request_metadata=kw.get("request_metadata", {}),
        headers=kw.get("headers", {}),
        tokens=tokens,
        text=text,
    )


# --------------------------------------------------------------------------- rules


def test_rule_conditions_combine_with_and() -> None:
    rule = Rule.from_dict(
        {"target": "big", "metadata": {"tier": ["gold", "platinum"]}, "min_tokens": 100}
    )
    assert rule.matches(_input(tokens=100, metadata={"tier": "gold"}))
    assert not rule.matches(_input(tokens=99, metadata={"tier": "gold"}))
    assert not rule.matches(_input(tokens=500, metadata={"tier": "silver"}))
    assert not rule.matches(_input(tokens=500))


def test_rule_metadata_prefers_caller_over_request_hints() -> None:
    rule = Rule.from_dict({"target": "x", "metadata": {"task": "code"}})
    assert rule.matches(_input(request_metadata={"task": "code"}))
    assert not rule.matches(_input(metadata={"task": "chat"}, request_metadata={"task": "code"}))


def test_rule_key_and_team_come_only_from_the_caller() -> None:
    rule = Rule.from_dict({"target": "x", "team": ["research"], "key": "k1"})
    assert rule.matches(_input(metadata={"team": "research", "key": "k1"}))
    assert not rule.matches(_input(metadata={"key": "k1"}, request_metadata={"team": "research"}))
    assert not rule.matches(_input(metadata={"team": "research", "key": "k2"}))


def test_rule_headers_regex_and_token_bounds() -> None:
    rule = Rule.from_dict(
        {"target": "x", "headers": {"X-Task": "sql"}, "regex": r"(?i)\bjoin\b", "max_tokens": 50}
    )
    assert rule.matches(_input("please JOIN these", headers={"x-task": "sql"}))
    assert not rule.matches(_input("please join these", headers={"x-task": "code"}))
    assert not rule.matches(_input("no match here", headers={"x-task": "sql"}))
    assert not rule.matches(_input("join", tokens=51, headers={"x-task": "sql"}))


def test_rules_first_match_wins_and_catch_all() -> None:
    rules = Rules.from_list(
        [
            {"name": "long", "target": "big", "min_tokens": 1000},
            {"name": "any", "target": "small"},
        ]
    )
    match = rules.match(_input(tokens=2000))
    assert match is not None and match.name == "long"
    match = rules.match(_input(tokens=5))
    assert match is not None and match.name == "any"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"target": "x", "colour": "red"}, "unknown key"),
        ({"regex": "a"}, "target"),
        ({"target": "x", "regex": "("}, "invalid pattern"),
        ({"target": "x", "min_tokens": -1}, "non-negative"),
        ({"target": "x", "metadata": ["a"]}, "Expected `object`"),
    ],
)
def test_rule_errors_name_the_problem(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RouteguardError, match=message):
        Rule.from_dict(spec, "routes.smart.rules[0]")


# --------------------------------------------------------------------------- semantic routes


def _semantic(method: str = "knn", threshold: float = 0.5) -> SemanticRoutes:
    return SemanticRoutes.from_dict(
        {
            "threshold": threshold,
            "method": method,
            "routes": [
                {
                    "name": "code",
                    "target": "coder",
                    "utterances": ["write a python function", "fix this python bug"],
                },
                {
                    "name": "billing",
                    "target": "support",
                    "utterances": ["refund my invoice", "my invoice is wrong"],
                },
            ],
        },
        WordsEmbedder(),
    )


@pytest.mark.parametrize("method", ["knn", "centroid"])
def test_semantic_routes_pick_the_nearest_route(method: str) -> None:
    routes = _semantic(method, threshold=0.3)
    emb = WordsEmbedder()
    hit = routes.match(emb.embed(["write a python function please"])[0])
    assert hit is not None and hit.route.name == "code" and hit.route.target == "coder"
    hit = routes.match(emb.embed(["refund my invoice"])[0])
    assert hit is not None and hit.route.name == "billing"
    assert hit.score == pytest.approx(1.0, abs=1e-5) or method == "centroid"


def test_semantic_routes_below_threshold_fall_through() -> None:
    routes = _semantic(threshold=0.9)
    assert routes.match(WordsEmbedder().embed(["tell me about the weather"])[0]) is None


def test_semantic_routes_reject_bad_specs_and_vectors() -> None:
    with pytest.raises(RouteguardError, match="utterances"):
        SemanticRoutes.from_dict(
            {"routes": [{"name": "a", "target": "b", "utterances": []}]}, WordsEmbedder()
        )
    with pytest.raises(RouteguardError, match="threshold"):
        SemanticRoutes.from_dict(
            {"threshold": 2, "routes": [{"name": "a", "target": "b", "utterances": ["x"]}]},
            WordsEmbedder(),
        )
    with pytest.raises(RouteguardError, match="same embedder"):
        _semantic().match(np.ones(8, dtype=np.float32))


# --------------------------------------------------------------------------- outcomes + learned

_HARD = ["prove the theorem about primes", "derive the integral bound", "prove the lemma"]
_EASY = ["say hello to me", "what colour is the sky", "thanks a lot friend"]


def _synthetic(n: int = 60) -> Outcomes:
    """Hard prompts: the cheap model fails and the strong one succeeds; easy: both succeed."""
    records = []
    for i in range(n):
        hard = i % 2 == 0
        pool = _HARD if hard else _EASY
        records.append(
            {
                "prompt": f"{pool[i % 3]} {i}",
                "cheap_ok": not hard or i % 10 == 0,
                "strong_ok": hard or i % 7 == 0,
                "group": "hard" if hard else "easy",
            }
        )
    return Outcomes.from_records(records)


def _trained() -> LearnedRouter:
    data = _synthetic()
    model = train(data, WordsEmbedder().embed(data.prompts), embedder="words-test")
    model.embedder = WordsEmbedder()
    return model


def test_learned_router_ranks_hard_prompts_higher() -> None:
    model = _trained()
    scores = model.score(["prove the theorem about primes 4", "say hello to me 5"])
    assert scores[0] > scores[1]
    assert np.all((scores > -1) & (scores < 1))
    worse, better = model.probabilities(["prove the lemma"])
    assert 0 < worse[0] < 1 and 0 < better[0] < 1


def test_learned_router_score_one_matches_batch() -> None:
    model = _trained()
    text = "derive the integral bound"
    vector = WordsEmbedder().embed([text])[0]
    assert model.score_one(text, vector) == pytest.approx(model.score([text])[0], abs=1e-5)


def test_learned_router_save_load_round_trip(tmp_path: Path) -> None:
    model = _trained()
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = LearnedRouter.load(path, embedder=WordsEmbedder())
    prompts = _HARD + _EASY
    np.testing.assert_allclose(loaded.score(prompts), model.score(prompts), atol=1e-5)
    assert loaded.meta["embedder"] == "words-test" and loaded.dim == WordsEmbedder.dim
    assert path.stat().st_size < 20_000


def test_learned_router_rejects_wrong_vectors_and_bad_files(tmp_path: Path) -> None:
    model = _trained()
    with pytest.raises(RouteguardError, match="64-d"):
        model.score(["x"], np.ones((1, 8)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(RouteguardError, match="cannot read"):
        LearnedRouter.load(bad)


def test_training_is_deterministic() -> None:
    a, b = _trained(), _trained()
    np.testing.assert_array_equal(a.weights, b.weights)


def test_train_needs_enough_outcomes() -> None:
    data = _synthetic(10)
    with pytest.raises(RouteguardError, match="at least"):
        train(data, WordsEmbedder().embed(data.prompts))


def test_calibrate_hits_the_target_share() -> None:
    scores = np.random.default_rng(0).normal(size=1000)
    for share in (0.0, 0.1, 0.3, 0.5, 0.9, 1.0):
        t = calibrate(scores, strong_share=share)
        assert abs(float(np.mean(scores >= t)) - share) <= 0.002


def test_calibrate_cost_ceiling() -> None:
    scores = np.linspace(0, 1, 100)
    # cheap $1, strong $3: a ceiling of $1.50 a request affords 25% strong calls.
    t = calibrate(scores, cost_ceiling=1.5, cheap_cost=1.0, strong_cost=3.0)
    assert float(np.mean(scores >= t)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="below the all-cheap cost"):
        calibrate(scores, cost_ceiling=0.5, cheap_cost=1.0, strong_cost=3.0)
    with pytest.raises(ValueError, match="exactly one"):
        calibrate(scores)


def _score_stream(kind: str, n: int, seed: int) -> list[float]:
    """Scores unlike the training distribution's, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        xs = rng.uniform(-1.0, 1.0, n)
    elif kind == "narrow":  # what the MMLU-trained model gives chat traffic: all in 0..0.15
        xs = rng.uniform(0.0, 0.15, n)
    elif kind == "bimodal":
        xs = np.where(rng.random(n) < 0.7, rng.normal(-0.5, 0.05, n), rng.normal(0.6, 0.05, n))
    elif kind == "drifting":  # the whole distribution slides by ten times its spread
        xs = rng.normal(0.0, 0.1, n) + np.linspace(-0.5, 0.5, n)
    elif kind == "step":  # a sudden change of traffic halfway
        xs = np.concatenate([rng.normal(0.5, 0.05, n // 2), rng.normal(-0.5, 0.05, n - n // 2)])
    elif kind == "ties":  # few distinct scores, the quantile inside a run of equal ones
        xs = rng.choice([0.01, 0.02, 0.05], n, p=[0.6, 0.3, 0.1])
    else:
        raise AssertionError(kind)
    return [float(x) for x in xs]


@pytest.mark.parametrize("kind", ["uniform", "narrow", "bimodal", "drifting", "step", "ties"])
@pytest.mark.parametrize("share", [0.1, 0.3, 0.5, 0.9])
def test_live_share_hits_the_target_on_any_score_distribution(kind: str, share: float) -> None:
    # The initial (training) threshold is far off every stream but the uniform one.
    live = LiveShare(share, initial=0.2, window=512)
    scores = _score_stream(kind, 2000, seed=int(share * 10))
    strong = np.array([live.decide(s) for s in scores])
    assert abs(float(strong[:100].mean()) - share) <= 0.06  # on target from the start
    assert abs(float(strong.mean()) - share) <= 0.02
    blocks = strong[200:].reshape(-1, 200).mean(axis=1)  # and all along, drift or not
    assert np.all(np.abs(blocks - share) <= 0.06), blocks
    assert live.decisions == 2000


@pytest.mark.parametrize("kind", ["uniform", "narrow", "bimodal"])
def test_live_share_sends_the_highest_scores_to_the_strong_model(kind: str) -> None:
    live = LiveShare(0.3, initial=0.0, window=256)
    scores = np.array(_score_stream(kind, 1500, seed=7))
    strong = np.array([live.decide(float(s)) for s in scores])
    # Ranking, not only the count: each decision compares with its recent neighbours, so
    # nearly every score above its window's 80th percentile goes strong and nearly every
    # score below its 50th goes cheap.
    rank = np.array(
        [np.mean(scores[max(0, i - 255) : i + 1] <= scores[i]) for i in range(len(scores))]
    )[300:]
    s = strong[300:]
    assert s[rank >= 0.8].mean() >= 0.95
    assert s[rank <= 0.5].mean() <= 0.05


def test_live_share_cold_start_uses_the_initial_threshold() -> None:
    scores = _score_stream("narrow", 400, seed=3)
    live = LiveShare(0.5, initial=10.0, cold_start=8)
    strong = [live.decide(s) for s in scores]
    assert not any(strong[:8]) and live.threshold != 10.0  # then the window's quantile
    # The cold start's shortfall is made up in the next few dozen decisions.
    assert abs(float(np.mean(strong[:100])) - 0.5) <= 0.05 and live.owed < 2.0
    everything = LiveShare(0.5, initial=-10.0, cold_start=8)
    assert all(everything.decide(s) for s in scores[:8])


def test_live_share_identical_scores_split_by_share() -> None:
    live = LiveShare(0.25, initial=0.5)
    strong = [live.decide(0.125) for _ in range(400)]
    assert sum(strong[8:]) == pytest.approx(0.25 * 400, abs=3)


def test_live_share_observe_returns_a_deciding_threshold() -> None:
    scores = _score_stream("bimodal", 300, seed=4)
    a, b = LiveShare(0.3, initial=0.0), LiveShare(0.3, initial=0.0)
    for s in scores:
        assert (s >= a.observe(s)) == b.decide(s)


def test_live_share_extremes_and_bad_input() -> None:
    scores = _score_stream("uniform", 300, seed=5)
    none, every = LiveShare(0.0, initial=0.0), LiveShare(1.0, initial=0.0)
    assert not any([none.decide(s) for s in scores][8:])
    assert all([every.decide(s) for s in scores][8:])
    with pytest.raises(ValueError, match="share"):
        LiveShare(1.5, 0.0)
    with pytest.raises(ValueError, match="window"):
        LiveShare(0.5, 0.0, window=1)
    with pytest.raises(ValueError, match="cold_start"):
        LiveShare(0.5, 0.0, window=8, cold_start=8)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            LiveShare(0.5, 0.0).decide(bad)


def test_live_share_is_safe_across_threads() -> None:
    live = LiveShare(0.3, initial=0.0, window=256)
    chunks = [_score_stream("narrow", 1000, seed=s) for s in range(4)]
    results: list[list[bool]] = [[] for _ in chunks]

    def run(i: int) -> None:
        results[i] = [live.decide(s) for s in chunks[i]]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert live.decisions == 4000
    assert abs(float(np.mean(np.concatenate(results))) - 0.3) <= 0.02


def test_threshold_for_share_follows_training_scores() -> None:
    model = _trained()
    ts = [model.threshold_for_share(s) for s in (0.0, 0.2, 0.5, 0.8, 1.0)]
    assert ts == sorted(ts, reverse=True) and ts[0] == 1.0 and ts[-1] == -1.0


def test_outcome_files_and_hash_splits(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text(
        '{"prompt": "a", "cheap_score": 3, "strong_score": 7.5}\n\n'
        '{"prompt": "b", "cheap_score": 9, "strong_score": 2}\n'
    )
    data = read_outcomes(path)
    assert data.cheap_worse.tolist() == [1.0, 0.0]
    path.write_text('{"prompt": "a", "cheap_ok": "yes", "strong_ok": true}\n')
    with pytest.raises(RouteguardError, match="boolean"):
        read_jsonl(path)
    prompts = [f"p{i}" for i in range(2000)]
    mask = holdout_mask(prompts, 0.2)
    assert 0.15 < mask.mean() < 0.25
    assert holdout_mask(prompts[::-1], 0.2).tolist() == mask.tolist()[::-1]
    groups = [f"g{i % 40}" for i in range(2000)]
    gmask = group_holdout_mask(groups, 0.25)
    held = {g for g, m in zip(groups, gmask, strict=True) if m}
    assert all(m == (g in held) for g, m in zip(groups, gmask, strict=True))


def test_suspect_groups_flag_a_strong_model_far_below_the_cheap_one() -> None:
    records = [
        {"prompt": f"q{i}", "cheap_ok": i % 2 == 0, "strong_ok": i % 10 == 0, "group": "broken"}
        for i in range(40)
    ] + [
        {"prompt": f"r{i}", "cheap_ok": i % 2 == 0, "strong_ok": True, "group": "fine"}
        for i in range(40)
    ]
    assert suspect_groups(Outcomes.from_records(records)) == ["broken"]


# --------------------------------------------------------------------------- metrics


def test_metrics_on_a_hand_computed_example() -> None:
    cheap = [1, 0, 0, 1]
    strong = [1, 1, 1, 0]
    scores = [0.1, 0.9, 0.5, 0.2]
    # Order by score: gains +1, +1, -1, 0 -> mix quality 0.5, 0.75, 1.0, 0.75, 0.75;
    # q_cheap 0.5, q_strong 0.75 -> PGR 0, 1, 2, 1, 1.
    np.testing.assert_allclose(
        metrics.mix_quality(scores, cheap, strong), [0.5, 0.75, 1.0, 0.75, 0.75]
    )
    shares, pgrs = metrics.pgr_curve(scores, cheap, strong, steps=4)
    np.testing.assert_allclose(shares, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(pgrs, [0, 1, 2, 1, 1])
    # Trapezoid: 0.25 * (0.5 + 1.5 + 1.5 + 1.0) = 1.125
    assert metrics.apgr(scores, cheap, strong, steps=4) == pytest.approx(1.125)
    assert metrics.cpt(scores, cheap, strong, 0.5) == 0.25
    assert metrics.cpt(scores, cheap, strong, 1.5) == 0.5
    assert metrics.cpt(scores, cheap, strong, 5.0) == 1.0


def test_metrics_reference_routers() -> None:
    rng = np.random.default_rng(1)
    cheap = (rng.random(4000) < 0.6).astype(float)
    strong = (rng.random(4000) < 0.8).astype(float)
    oracle = strong - cheap
    q = metrics.quality(oracle, cheap, strong)
    assert q.apgr > 0.9 and q.cpt50 < 0.3
    assert metrics.apgr(-oracle, cheap, strong) < 0.2
    # Ten equal steps of a linear curve: PGR = share, APGR = 0.5 exactly.
    lin_c, lin_s = np.zeros(10), np.ones(10)
    assert metrics.apgr(np.arange(10), lin_c, lin_s) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same mean quality"):
        metrics.apgr([1, 2], [1, 0], [0, 1])


# --------------------------------------------------------------------------- router pipeline


def _router(tmp_path: Path, **over: Any) -> tuple[Router, WordsEmbedder]:
    path = tmp_path / "m.npz"
    _trained().save(path)
    emb = WordsEmbedder()
    spec: dict[str, Any] = {
        "cheap": "small",
        "strong": "big",
        "model": str(path),
        "threshold": 0.0,
        "rules": [
            {"name": "vip", "target": "strong", "team": "vip"},
            {"name": "long", "target": "long-context", "min_tokens": 5000},
        ],
        "semantic_routes": {
            "threshold": 0.6,
            "routes": [
                {"name": "billing", "target": "support", "utterances": ["refund my invoice"]}
            ],
        },
        **over,
    }
    if "strong_share" in over:
        del spec["threshold"]
    return Router.from_dict("smart", spec, embedder=emb), emb


def test_router_pipeline_order(tmp_path: Path) -> None:
    router, _ = _router(tmp_path)
    assert router.route(_req("say hello"), metadata={"team": "vip"}) == RouteDecision(
        "big", "rule:vip"
    )
    assert router.route(_req("x " * 20_000)).reason == "rule:long"
    d = router.route(_req("refund my invoice"))
    assert d.target_alias == "support" and d.reason == "semantic:billing" and d.score
    hard = router.route(_req("prove the theorem about primes 4"))
    easy = router.route(_req("say hello to me 5"))
    assert hard.reason == easy.reason == "learned"
    assert hard.target_alias == "big" and easy.target_alias == "small"
    assert hard.score is not None and easy.score is not None and hard.score > easy.score
    assert router.targets() == {"small", "big", "long-context", "support"}
    spec = RouteSettings(cheap="small", strong="big", rules=[RuleSettings(target="strong")])
    assert route_targets("smart", spec) == {"small", "big"}


def test_router_reuses_the_callers_vector(tmp_path: Path) -> None:
    router, emb = _router(tmp_path)
    text = "prove the lemma"
    vector = WordsEmbedder().embed([text])[0]
    calls = emb.calls
    d = router.route(_req(text), vector)
    assert emb.calls == calls and d.reason == "learned"
    router.route(_req(text))
    assert emb.calls == calls + 1


async def test_aroute_embeds_only_when_needed(tmp_path: Path) -> None:
    router, emb = _router(tmp_path)
    calls = emb.calls
    d = await router.aroute(_req("hi"), metadata={"team": "vip"})
    assert d.reason == "rule:vip" and emb.calls == calls
    d = await router.aroute(_req("prove the theorem about primes 4"))
    assert d == router.route(_req("prove the theorem about primes 4"))
    assert emb.calls == calls + 2


def test_router_strong_share_holds_on_traffic_unlike_training(tmp_path: Path) -> None:
    # Only easy prompts: by the training distribution's threshold almost none would go strong.
    router, _ = _router(tmp_path, strong_share=0.5)
    prompts = [f"say hello to me {i}" for i in range(200)]
    assert router.learned is not None
    scores = np.array([router.learned.score_one(p, router.embed(p)) for p in prompts])
    assert np.mean(scores >= router.threshold) < 0.2
    decisions = [router.route(_req(p)) for p in prompts]
    assert {d.reason for d in decisions} == {"learned"}
    share = np.mean([d.target_alias == "big" for d in decisions])
    assert abs(float(share) - 0.5) <= 0.05


def test_router_strong_share_and_pinned(tmp_path: Path) -> None:
    router, _ = _router(tmp_path, strong_share=1.0)
    assert router.threshold == -1.0 and router.live is not None
    assert router.route(_req("say hello to me 5")).target_alias == "big"
    pinned = Router.from_dict("safe", {"mode": "pinned", "target": "gpt-4"})
    assert pinned.route(_req("anything")) == RouteDecision("gpt-4", "pinned")
    assert not pinned.needs_vector and pinned.targets() == {"gpt-4"}
    fixed = Router.from_dict("plain", {"default": "small", "rules": []})
    assert fixed.route(_req("hi")) == RouteDecision("small", "default")
    # msgspec.to_builtins writes unset optional fields as None: they count as absent.
    unset = Router.from_dict(
        "plain",
        {
            "default": "small",
            "target": None,
            "threshold": None,
            "semantic_routes": None,
            "rules": [{"target": "big", "key": None, "regex": None, "min_tokens": 100}],
        },
    )
    assert unset.route(_req("hi")) == RouteDecision("small", "default")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cheap": "a"}, "both 'cheap' and 'strong'"),
        ({"cheap": "a", "strong": "b", "threshold": 0.1, "strong_share": 0.2}, "not both"),
        ({"mode": "sometimes"}, "mode"),
        ({"default": "a", "colour": 1}, "unknown key"),
        ({}, "needs 'cheap' and 'strong'"),
        ({"cheap": "a", "strong": "b"}, "set 'strong_share'"),
        ({"cheap": "a", "strong": "b", "threshold": 3}, r"\[-1, 1\]"),
    ],
)
def test_router_config_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RouteguardError, match=message):
        Router.from_dict("smart", spec, embedder=WordsEmbedder())


def test_prompt_text_is_the_last_user_message() -> None:
    req = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "tool", "content": "result"},
        ]
    }
    assert prompt_text(req) == "a\nb"
    assert prompt_text({"messages": []}) == ""


# --------------------------------------------------------------------------- default model + CLI


@needs_minilm
def test_default_router_scores_prompts() -> None:
    router = default_router()
    assert router.dim == 384 and router.meta["embedder"] == "all-MiniLM-L6-v2"
    scores = router.score(["Hi there!", "Prove that there are infinitely many primes."])
    assert scores.shape == (2,) and np.all(np.abs(scores) < 1)
    assert router.score([]).shape == (0,)


@needs_minilm
def test_cli_train_score_calibrate_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from routeguard.routing.cli import main

    outcomes = tmp_path / "outcomes.jsonl"
    data = _synthetic(24)
    outcomes.write_text(
        "".join(
            json.dumps({"prompt": p, "cheap_ok": bool(c), "strong_ok": bool(s)}) + "\n"
            for p, c, s in zip(data.prompts, data.cheap, data.strong, strict=True)
        )
    )
    model = tmp_path / "model.npz"
    assert main(["router", "train", str(outcomes), "-o", str(model)]) == 0
    assert "wrote" in capsys.readouterr().out and model.is_file()

    prompts = ["prove the theorem about primes 99", "say hello to me 98", "thanks a lot"]
    stdin = "".join(json.dumps({"prompt": p}) + "\n" for p in prompts)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["router", "score", "--model", str(model)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and all(isinstance(x["score"], float) for x in lines)
    assert lines[0]["score"] > lines[1]["score"]

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["router", "calibrate", "--model", str(model), "--share", "0.34"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and out["strong_share"] == pytest.approx(1 / 3)

    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "no prompt"}\n'))
    assert main(["router", "score", "--model", str(model)]) == 1
    assert "line 1" in capsys.readouterr().err


def test_embed_many_keeps_each_precisions_vectors_apart(tmp_path: Path) -> None:
    from routeguard.routing.vectors import embed_many

    texts = ["what is two plus two", "prove the theorem"]
    full, half = WordsEmbedder(), WordsEmbedder()
    half.precision = "bf16"  # type: ignore[attr-defined]
    first = embed_many(texts, full, cache_dir=tmp_path)
    assert np.array_equal(embed_many(texts, WordsEmbedder(), cache_dir=tmp_path), first)
    embed_many(texts, half, cache_dir=tmp_path)
    assert (full.calls, half.calls) == (1, 1)  # the f32 file was not read for bf16
    names = sorted(p.name.rsplit("-", 1)[0] for p in tmp_path.glob("*.npy"))
    assert names == ["minilm", "minilm-bf16"]
    embed_many(texts, half, cache_dir=tmp_path)
    assert half.calls == 1  # and its own file is
