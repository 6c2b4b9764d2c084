"""``routeguard analyze``: log parsing, repetition and cache estimates, complexity and routing
savings, recommendations, the HTML report and the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from embedders import WordsEmbedder
from routeguard import config
from routeguard.analyze import html
from routeguard.analyze.analysis import Analysis, analyze, price_table
from routeguard.analyze.complexity import Price, analyse_complexity, score_cutoffs
from routeguard.analyze.logs import parse_lines, read_log
from routeguard.analyze.progress import Progress
from routeguard.analyze.recommend import (
    CACHE_ONLY,
    PINNED,
    PINNED_NO_ROUTING,
    ROUTED,
    ROUTED_CACHED,
    Policy,
)
from routeguard.cli import main
from routeguard.defaults import default_config
from routeguard.errors import RouteguardError
from traffic import make_log, repeat_log, write_log


def length_scorer(texts: list[str], vectors: object) -> np.ndarray:
    """A stand-in router: longer prompts need the strong model more (in [-1, 1])."""
    return np.array([min(len(t) / 200.0, 1.0) * 2 - 1 for t in texts], dtype=np.float64)


def _analyze(lines: list[str], tmp_path: Path, **kwargs: object) -> Analysis:
    path = write_log(tmp_path / "log.jsonl", lines)
    return analyze(path, embedder=WordsEmbedder(), scorer=length_scorer, **kwargs)  # type: ignore[arg-type]


def _route(a: Analysis, name: str):  # type: ignore[no-untyped-def]
    return next(r for r in a.routes if r.route == name)


# ------------------------------------------------------------------------------ parsing


def test_reads_every_supported_shape_and_counts_bad_lines() -> None:
    msg = [{"role": "user", "content": "hello there"}]
    lines = [
        json.dumps({"model": "m1", "messages": msg}),
        json.dumps({"request": {"model": "m2", "messages": msg}, "route": "r2",
                    "usage": {"prompt_tokens": 5, "completion_tokens": 7}, "latency_ms": 12}),
        json.dumps({"model": "claude", "system": [{"type": "text", "text": "be terse"}],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                    "metadata": {"route": "r3", "sensitive": True}}),
        json.dumps({"model": "old", "prompt": "complete me"}),
        json.dumps({"body": {"model": "m4", "messages": msg, "tools": [{"type": "function"}]},
                    "response": {"usage": {"input_tokens": 3, "output_tokens": 4}}}),
        "{broken",
        "[1, 2]",
        json.dumps({"model": "x"}),
        json.dumps({"model": "x", "messages": ["not a message"]}),
        "",
    ]  # fmt: skip
    out = parse_lines(lines)
    assert out.skipped == 4 and len(out.problems) == 4
    assert out.problems[0].startswith("line 6:")
    routes = [r.route for r in out.records]
    assert routes == ["m1", "r2", "r3", "old", "m4"]
    r2, r3, old, r4 = out.records[1:]
    assert (r2.prompt_tokens, r2.completion_tokens, r2.latency_ms) == (5, 7, 12.0)
    assert r3.system == "be terse" and r3.sensitive and r3.prompt == "hi"
    assert r3.request["messages"][0] == {"role": "system", "content": "be terse"}
    assert "system" not in r3.request
    assert old.prompt == "complete me"
    assert r4.uses_tools and (r4.prompt_tokens, r4.completion_tokens) == (3, 4)
    assert not out.records[0].uses_tools


def test_tool_turns_mark_tool_use_and_are_not_cacheable() -> None:
    tool_turn = {"model": "m", "messages": [
        {"role": "user", "content": "refund A1"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "1", "content": "{}"}]}  # fmt: skip
    block = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]}  # fmt: skip
    out = parse_lines([json.dumps(tool_turn), json.dumps(block)])
    assert all(r.uses_tools for r in out.records)
    assert all(r.prompt is None for r in out.records)


def test_unreadable_or_empty_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RouteguardError, match="cannot read request log"):
        read_log(tmp_path / "missing.jsonl")
    path = write_log(tmp_path / "bad.jsonl", ["{nope", "42"])
    with pytest.raises(RouteguardError, match=r"no usable requests.*2 bad lines"):
        analyze(path, embedder=WordsEmbedder(), scorer=length_scorer)


# ------------------------------------------------------------------------------ repetition


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_exact_repeat_share_is_the_exact_hit_rate(tmp_path: Path, share: float) -> None:
    lines = repeat_log(200, share)
    a = _analyze(lines, tmp_path)
    rep = _route(a, "faq").repetition
    distinct = len(set(lines))
    assert rep.exact_hits == len(lines) - distinct
    assert rep.exact_hit_rate == pytest.approx(share, abs=0.01)
    assert all(row.hit_rate >= rep.exact_hit_rate for row in rep.rows)
    assert rep.entries == distinct


def test_context_and_parameters_partition_the_cache(tmp_path: Path) -> None:
    def req(context: str | None, temperature: float = 0.0) -> str:
        msgs = [{"role": "user", "content": context}, {"role": "assistant", "content": "ok"}]
        msgs = (msgs if context else []) + [{"role": "user", "content": "and in summer?"}]
        return json.dumps({"model": "m", "messages": msgs, "temperature": temperature})

    same = [req("weather in Oslo"), req("weather in Oslo")]
    other_context = [req("weather in Oslo"), req("weather in Rome")]
    other_params = [req(None, 0.0), req(None, 1.0)]
    assert _route(_analyze(same, tmp_path), "m").repetition.exact_hits == 1
    for lines in (other_context, other_params):
        rep = _route(_analyze(lines, tmp_path), "m").repetition
        assert rep.exact_hits == 0 and rep.partitions == 2
        assert all(row.semantic_hits == 0 and row.candidates == 0 for row in rep.rows)


def test_near_duplicates_that_differ_in_numbers_are_risk_not_hits(tmp_path: Path) -> None:
    text = "what is the current delivery status of my order number {n} please"
    lines = [
        json.dumps({"model": "m", "messages": [{"role": "user", "content": text.format(n=n)}]})
        for n in (1111, 2222, 3333, 4444)
    ]
    rep = _route(_analyze(lines, tmp_path), "m").repetition
    low = rep.rows[0]
    assert low.candidates > 0 and low.refused == low.candidates
    assert low.semantic_hits == 0 and low.plain_risk == 1.0 and low.hit_rate == 0.0


def test_paraphrases_hit_and_cluster(tmp_path: Path) -> None:
    texts = ["how do I reset my password", "how do I reset my password please",
             "reset my password how do I", "what are your opening hours"]  # fmt: skip
    lines = [
        json.dumps({"model": "m", "messages": [{"role": "user", "content": t}]}) for t in texts
    ]
    rep = _route(_analyze(lines, tmp_path), "m").repetition
    assert rep.row(0.8).semantic_hits >= 1
    assert rep.row(0.8).hit_rate > rep.row(0.98).hit_rate or rep.row(0.98).semantic_hits >= 1
    assert rep.clusters and rep.clusters[0].requests >= 2
    assert "opening hours" not in rep.clusters[0].example


# ------------------------------------------------------------------------------ complexity


def test_routing_savings_follow_scores_and_prices() -> None:
    recs = parse_lines(repeat_log(100, 0.0)).records
    # Half the prompts gain a lot from the strong model, half nothing.
    scores = np.array([0.8 if i % 2 else -0.2 for i in range(100)], dtype=np.float64)
    prices = {"cheap": Price(0.1, 0.4), "gpt-4o": Price(2.5, 10.0)}
    cx = analyse_complexity(recs, scores, cheap="cheap", strong="gpt-4o", prices=prices)
    assert sum(cx.histogram) == 100
    assert cx.target(0.9).strong_share == pytest.approx(0.45, abs=0.02)
    assert cx.baseline_model == "gpt-4o"
    assert cx.baseline_cost_per_request == pytest.approx(cx.strong_cost_per_request)
    costs = [t.cost_per_request for t in cx.targets]
    assert costs == sorted(costs)
    assert cx.cheap_cost_per_request < costs[0] < cx.baseline_cost_per_request
    assert all(0.0 < t.savings < 1.0 for t in cx.targets)
    # The curve runs from all-cheap to all-strong.
    assert cx.curve[0][2] == pytest.approx(cx.cheap_cost_per_request)
    assert cx.curve[-1][1] == pytest.approx(1.0)


def test_log_wide_cutoffs_spare_the_easy_route() -> None:
    easy = np.full(50, 0.05)
    hard = np.full(50, 0.6)
    cut = score_cutoffs(np.concatenate([easy, hard]), targets=(0.8, 0.9))
    assert all(easy[0] < c <= hard[0] for c in cut.values())


def test_prices_come_from_config_or_defaults() -> None:
    from routeguard.defaults import MODELS

    table = price_table()
    for alias, spec in MODELS.items():
        assert table[alias] == Price(spec[3], spec[4])


# ------------------------------------------------------------------------------ recommendations


def test_recommendations_on_mixed_traffic(tmp_path: Path) -> None:
    a = _analyze(make_log(support=200, assistant=60, agent=40), tmp_path)
    assert a.skipped == 3 and a.requests == 300
    agent, support = _route(a, "agent"), _route(a, "support")
    assistant = _route(a, "assistant")
    assert agent.recommendation.verdict == PINNED
    assert any("tools" in why for why in agent.recommendation.reasons)
    assert agent.recommendation.config == {"mode": "pinned", "target": "claude-3-5-haiku"}
    # the stand-in router calls every short support question easy: no gain to route for
    assert support.complexity.est_apgr < Policy().min_apgr
    assert support.recommendation.verdict == CACHE_ONLY
    assert support.recommendation.config["cache"]["enabled"] is True
    assert "cheap" not in support.recommendation.config
    assert support.recommendation.hit_rate > 0.5 > assistant.repetition.exact_hit_rate
    assert assistant.recommendation.verdict in (ROUTED, PINNED)
    snippet = a.config_yaml()
    import yaml

    routes = yaml.safe_load(snippet)["routes"]
    assert set(routes) == {"agent", "support", "assistant"}
    assert routes["support"]["mode"] == "routed"
    assert routes["support"]["default"] == support.complexity.baseline_model
    # The snippet is valid config next to the models it names.
    cfg = config.load({**default_config("http://127.0.0.1:9"), "routes": routes})
    assert cfg.cache_for("support").enabled and not cfg.cache_for("agent").enabled
    assert a.unpriced == ["gpt-4o"]  # the log's model is not among the default prices
    t = a.totals()
    assert t["recommended_cost_per_request"] <= t["baseline_cost_per_request"]


def _chat(route: str, texts: list[str]) -> list[str]:
    return [
        json.dumps({"model": "gpt-4o", "metadata": {"route": route},
                    "messages": [{"role": "user", "content": t}]})
        for t in texts
    ]  # fmt: skip


_EASY = ["hi", "thanks!", "hello there", "ok, bye", "good morning", "cheers"]
_HARD = [
    "Prove that there are infinitely many primes p such that p + 2 is also composite, then "
    "derive a bound on their density, step by step, and check each step with an example.",
    "Write a Python function that parses a CSV file of transactions, groups them by account "
    "and month, computes rolling 3-month averages, and explain the complexity of each step.",
    "Compare three approaches to distributed consensus (Paxos, Raft, PBFT): their failure "
    "models, message complexity and liveness guarantees, then recommend one for a bank.",
]


def _logistic_probability(scores: np.ndarray) -> np.ndarray:
    """A stand-in calibration: P(cheap as good) falls with the score."""
    out: np.ndarray = 1.0 / (1.0 + np.exp(6.0 * scores))
    return out


@pytest.mark.parametrize("probability", [None, _logistic_probability])
def test_no_routing_when_the_scores_do_not_separate(tmp_path: Path, probability: object) -> None:
    # near-identical prompts (one template, a different city): the scores barely move
    cities = ["Paris", "Rome", "Oslo", "Lima", "Kyiv", "Doha", "Lagos", "Quito", "Seoul"]
    same = [
        f"Summarise the {c} office report in five bullet points, request {i:03d}."
        for i in range(120)
        for c in [cities[i % len(cities)]]
    ]
    a = _analyze(_chat("reports", same), tmp_path, probability=probability)
    r = _route(a, "reports")
    policy = Policy()
    assert r.complexity.est_apgr < policy.min_apgr
    assert r.complexity.calibrated is (probability is not None)
    assert r.recommendation.verdict in (PINNED_NO_ROUTING, CACHE_ONLY)
    assert "cheap" not in r.recommendation.config and "strong_share" not in r.recommendation.config
    why = " ".join(r.recommendation.reasons)
    assert "do not separate" in why and f"{r.complexity.est_apgr:.3f}" in why
    cfg = config.load(
        {
            **default_config("http://127.0.0.1:9"),
            "routes": {
                "reports": {**r.recommendation.config, "target": "gpt-4o-mini"}
                if r.recommendation.config["mode"] == "pinned"
                else r.recommendation.config
            },
        }
    )
    assert cfg is not None


@pytest.mark.parametrize("probability", [None, _logistic_probability])
def test_routing_when_easy_and_hard_prompts_separate(tmp_path: Path, probability: object) -> None:
    texts = [(_EASY[i % 6] if i % 2 else _HARD[i % 3]) + f" #{i}" for i in range(120)]
    a = _analyze(_chat("mixed", texts), tmp_path, probability=probability)
    r = _route(a, "mixed")
    assert r.complexity.est_apgr >= Policy().min_apgr
    assert r.complexity.p_cheap_ok_p90 > r.complexity.p_cheap_ok_p10
    assert r.recommendation.verdict in (ROUTED, ROUTED_CACHED)
    assert r.recommendation.config["strong_share"] > 0
    # the same traffic with a stricter policy than its estimate: no routing
    strict = Policy(min_apgr=r.complexity.est_apgr + 0.01)
    a2 = _analyze(_chat("mixed", texts), tmp_path, probability=probability, policy=strict)
    assert _route(a2, "mixed").recommendation.verdict in (PINNED_NO_ROUTING, CACHE_ONLY)


def test_sensitive_marks_pin_a_route(tmp_path: Path) -> None:
    lines = [
        json.dumps({"model": "m", "metadata": {"route": "hr", "sensitive": True},
                    "messages": [{"role": "user", "content": f"question {i}"}]})
        for i in range(10)
    ]  # fmt: skip
    rec = _route(_analyze(lines, tmp_path, cheap="gemini-2.0-flash"), "hr").recommendation
    assert rec.verdict == PINNED and "sensitive" in rec.reasons[0]


# ------------------------------------------------------------------------------ report, CLI


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    lines = (
        make_log(support=40, assistant=10, agent=5)
        + [
            json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "<script>x</script>"}]}
            )
        ]
        * 2
    )
    a = _analyze(lines, tmp_path)
    page = html.render(a)
    assert page.count("<svg") == 3 * len(a.routes)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for r in a.routes:
        assert f"<h2>{r.route}</h2>" in page


def test_progress_line_only_when_enabled() -> None:
    on, off = io.StringIO(), io.StringIO()
    for stream, enabled in ((on, True), (off, False)):
        bar = Progress("work", 3, enabled=enabled, stream=stream)
        for i in range(1, 4):
            bar.update(i)
        bar.close()
    assert off.getvalue() == ""
    assert "\rwork: 3/3 (100%" in on.getvalue() and on.getvalue().endswith("\n")
    assert Progress("x", 1, stream=io.StringIO()).enabled is False  # not a TTY


def test_cli_with_the_default_embedder_and_router(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "t.jsonl", make_log(support=24, assistant=6, agent=4, seed=3))
    out = tmp_path / "report.html"
    assert main(["analyze", str(log), "--json", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["requests"] == 34 and data["skipped_lines"] == 3
    assert data["report"] == str(out) and out.read_text().startswith("<!doctype html>")
    by_route = {r["route"]: r for r in data["routes"]}
    assert by_route["agent"]["recommendation"]["verdict"] == PINNED
    support = by_route["support"]["repetition"]
    assert support["exact_hits"] > 0
    scores = by_route["support"]["complexity"]
    assert sum(scores["histogram"]) == 24 and -1.0 <= scores["scores_mean"] <= 1.0
    assert main(["analyze", str(log), "--no-html"]) == 0
    text = capsys.readouterr().out
    assert "recommended config:" in text and "support" in text
    assert main(["analyze", str(tmp_path / "nope.jsonl")]) == 1
    assert "cannot read request log" in capsys.readouterr().err
