"""``cache.max_error_rate`` end to end: the gateway against a simulated upstream that answers
by meaning (every question of one cluster gets the cluster's answer), so a served hit is
wrong exactly when it carries another cluster's answer.

Traffic is synthetic and seeded: clusters of paraphrases (six shared words and a filler word)
and, in the hard case, *twin* clusters (the same six words and one more, a different
question whose text embeds even closer to the original than its own paraphrases do). The
bounded gateway's wrong share of served hits stays within the bound where a fixed threshold
serves wrong answers; on easy traffic it does serve hits; shadow checks are counted and
charged; stats come out of ``GET /admin/cache/stats`` and ``/metrics``; a client's "down" on
a hit drops that entry; config errors are named; ``analyze`` estimates the same from a log.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from embedders import WideWordsEmbedder
from routeguard import config
from routeguard.analyze.analysis import analyze
from routeguard.cache.layer import CacheLayer
from routeguard.errors import ConfigError
from routeguard.gateway import Gateway
from routeguard.mock import Meanings, MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-bound"
FILLERS = ("please", "now", "today", "quickly", "again", "thanks", "briefly", "exactly")


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(7))


def _traffic(seed: int, clusters: int, twins: bool, n: int) -> tuple[list[str], Meanings]:
    """``n`` questions drawn from ``clusters`` clusters (and their twins), and the clusters."""
    rng = random.Random(seed)
    groups: list[list[str]] = []
    for _ in range(clusters):
        base = [_word(rng) for _ in range(6)]
        groups.append([" ".join([*base, f]) for f in FILLERS])
        if twins:
            extra = _word(rng)
            groups.append([" ".join([*base, extra, f]) for f in FILLERS])
    questions = [rng.choice(rng.choice(groups)) for _ in range(n)]
    return questions, Meanings.from_groups(groups)


def _cfg(url: str, cache: dict[str, Any], **extra: Any) -> dict[str, Any]:
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k", "model_name": "qa",
           "model": "sim-qa", "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0}  # fmt: skip
    return {"model_list": [dep], "cache": {"enabled": True, **cache}, **extra}


def _layer(gw: Gateway) -> CacheLayer:
    assert gw.cache is not None
    return gw.cache


async def _replay(gw: Gateway, questions: list[str], mock: MockServer) -> dict[str, int]:
    """Ask every question; count served semantic hits, wrong ones and shadow checks."""
    layer = _layer(gw)
    for bound in layer.bounds.values():
        bound._rng = random.Random(5)  # a reproducible shadow sample
    out = {"hits": 0, "wrong": 0, "shadow": 0, "upstream": 0}
    for q in questions:
        exact_before = layer.metrics.exact_hits
        res = await gw.chat_result({"model": "qa", "messages": [{"role": "user", "content": q}]})
        await asyncio.gather(*layer._comparing)  # the verdicts, before the next request
        out["shadow"] += res.cache == "shadow"
        out["upstream"] += res.cache != "hit"
        if res.cache == "hit" and layer.metrics.exact_hits == exact_before:
            out["hits"] += 1
            assert res.response is not None
            fresh = await _upstream_answer(mock, q)
            out["wrong"] += res.response["choices"][0]["message"]["content"] != fresh
    return out


async def _upstream_answer(mock: MockServer, question: str) -> str:
    """What the upstream answers ``question`` (asked directly, not through the cache)."""
    async with httpx.AsyncClient(base_url=mock.url) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "sim-qa", "messages": [{"role": "user", "content": question}]},
            headers={"authorization": "Bearer k"},
        )
    text: str = r.json()["choices"][0]["message"]["content"]
    return text


@pytest.fixture(scope="module")
def hard() -> tuple[list[str], Meanings]:
    return _traffic(seed=11, clusters=40, twins=True, n=700)


@pytest.fixture(scope="module")
def hard_mock(hard: tuple[list[str], Meanings]) -> Iterator[MockServer]:
    with MockServer(meanings=hard[1]) as m:
        yield m


async def test_by_meaning_upstream_answers_each_cluster_alike(
    hard: tuple[list[str], Meanings], hard_mock: MockServer
) -> None:
    questions, meanings = hard
    a, b = _two_of_cluster(questions, meanings)
    other = next(q for q in questions if meanings.of(q) != meanings.of(a))
    assert await _upstream_answer(hard_mock, a) == await _upstream_answer(hard_mock, b)
    assert await _upstream_answer(hard_mock, a) != await _upstream_answer(hard_mock, other)


def _two_of_cluster(questions: list[str], meanings: Meanings) -> tuple[str, str]:
    seen: dict[str | None, str] = {}
    for q in dict.fromkeys(questions):
        key = meanings.of(q)
        if key in seen:
            return seen[key], q
        seen[key] = q
    raise AssertionError("no cluster asked twice")


async def test_bound_holds_where_a_fixed_threshold_serves_wrong_answers(
    hard: tuple[list[str], Meanings], hard_mock: MockServer
) -> None:
    questions, _ = hard
    delta = 0.05
    fixed = Gateway.from_config(_cfg(hard_mock.url, {"threshold": 0.8}),
                                embedder=WideWordsEmbedder())  # fmt: skip
    bounded = Gateway.from_config(
        _cfg(hard_mock.url, {"threshold": 0.8, "max_error_rate": delta}),
        embedder=WideWordsEmbedder(),
    )
    try:
        base = await _replay(fixed, questions, hard_mock)
        ours = await _replay(bounded, questions, hard_mock)
    finally:
        await fixed.aclose()
        await bounded.aclose()
    assert base["hits"] > 20 and base["wrong"] / base["hits"] > 2 * delta  # the traffic is hard
    # within the bound: at most delta of the served semantic hits, plus sampling slack
    allowed = delta * ours["hits"] + 2.0 * math.sqrt(max(ours["hits"], 1) * delta)
    assert ours["wrong"] <= allowed
    stats = _layer(bounded).stats()["routes"]["qa"]
    assert stats["free_checks"] > 0  # misses compared at no extra cost
    assert stats["shadow_checks"] == ours["shadow"]


async def test_easy_traffic_is_served_with_shadow_checks_charged(tmp_path: Any) -> None:
    questions, meanings = _traffic(seed=3, clusters=60, twins=False, n=1400)
    with MockServer(meanings=meanings) as mock:
        gw = Gateway.from_config(
            _cfg(mock.url, {"max_error_rate": 0.05, "verify_sample": 0.1}),
            embedder=WideWordsEmbedder(),
        )
        try:
            out = await _replay(gw, questions, mock)
            layer = _layer(gw)
            stats = layer.stats()["routes"]["qa"]
        finally:
            await gw.aclose()
    assert out["hits"] > 40 and out["wrong"] == 0
    assert out["shadow"] > 0 and stats["shadow_checks"] == out["shadow"]
    assert stats["threshold"] is not None and stats["threshold"] < 0.9
    assert stats["served_hits"] == out["hits"]
    assert 0.0 <= stats["error_rate_low"] <= stats["error_rate"] <= stats["error_rate_high"]
    assert stats["error_rate"] == pytest.approx(0.0)
    # every shadow check went upstream and was charged like any call
    assert out["upstream"] == len(questions) - out["hits"] - layer.metrics.exact_hits


def test_proxy_reports_stats_metrics_and_takes_feedback_on_hits() -> None:
    questions, meanings = _traffic(seed=4, clusters=40, twins=False, n=800)
    with MockServer(meanings=meanings) as mock:
        cfg = _cfg(mock.url, {"max_error_rate": 0.05}, server={"master_key": MASTER})
        gw = Gateway(config.load(cfg, env={}), embedder=WideWordsEmbedder())
        with (
            ServerThread(create_app(gw)) as srv,
            httpx.Client(base_url=srv.url) as c,
            openai.OpenAI(base_url=srv.url + "/v1", api_key=MASTER, max_retries=0) as client,
        ):
            states: dict[str, int] = {}
            hit_id = None
            for q in questions:
                raw = client.chat.completions.with_raw_response.create(
                    model="qa", messages=[{"role": "user", "content": q}]
                )
                state = raw.headers["x-routeguard-cache"]
                states[state] = states.get(state, 0) + 1
                if state == "hit":
                    hit_id = raw.headers["x-routeguard-request-id"]
            auth = {"authorization": f"Bearer {MASTER}"}
            r = c.get("/admin/cache/stats", headers=auth)
            assert r.status_code == 200
            row = r.json()["routes"]["qa"]
            assert row["max_error_rate"] == 0.05
            assert row["shadow_checks"] == states.get("shadow", 0) > 0
            assert c.get("/admin/cache/stats").status_code == 401
            assert c.get("/admin/cache/nothing", headers=auth).status_code == 404
            text = c.get("/metrics", headers=auth).text
            assert 'routeguard_cache_error_rate_estimate{route="qa"}' in text
            assert 'routeguard_cache_shadow_checks_total{kind="shadow"' in text
            # a client says a hit was wrong: counted, and the entry is gone
            assert hit_id is not None
            before = len(_layer(gw).cache)
            r = c.post("/v1/feedback", json={"request_id": hit_id, "rating": "down"}, headers=auth)
            assert r.status_code == 200
            row = c.get("/admin/cache/stats", headers=auth).json()["routes"]["qa"]
            assert row["feedback_wrong"] == 1
            assert len(_layer(gw).cache) == before - 1


@pytest.mark.parametrize(
    ("cache", "path", "words"),
    [
        ({"max_error_rate": 0.7}, "cache.max_error_rate", "(0, 0.5)"),
        ({"max_error_rate": 0.02, "verify_sample": 2}, "cache.verify_sample", "[0, 1]"),
        ({"max_error_rate": 0.02, "judge": "nope"}, "cache.judge", "unknown model 'nope'"),
        ({"max_error_rate": 0.02, "verify": False}, "cache.verify", "verifier"),
        ({"error_confidence": 1.0}, "cache.error_confidence", "[0.5, 1)"),
    ],
)
def test_config_names_bad_bound_settings(cache: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(_cfg("http://127.0.0.1:9", cache))
    assert path in str(err.value) and words in str(err.value)


def test_a_judge_alias_and_per_route_bounds_load() -> None:
    cfg = _cfg("http://127.0.0.1:9", {"max_error_rate": 0.02, "judge": "qa"})
    cfg["routes"] = {"qa": {"cache": {"max_error_rate": 0.01}}}
    loaded = config.load(cfg)
    assert loaded.cache_for("qa").max_error_rate == 0.01
    assert loaded.cache_for("qa").judge == "qa"


# ------------------------------------------------------------------------------ analyze


def _logged(questions: list[str], meanings: Meanings) -> list[str]:
    """Log lines with each question's by-meaning answer (what log_content records)."""
    lines = []
    for q in questions:
        answer = f"answer about {meanings.of(q)}"
        lines.append(
            json.dumps(
                {
                    "request": {"model": "qa", "messages": [{"role": "user", "content": q}]},
                    "response": {"choices": [{"message": {"role": "assistant",
                                                          "content": answer}}]},
                }
            )
        )  # fmt: skip
    return lines


@pytest.mark.parametrize("twins", [False, True])
def test_analyze_estimates_the_bound_from_a_log(tmp_path: Path, twins: bool) -> None:
    questions, meanings = _traffic(seed=8, clusters=30, twins=twins, n=900)
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(_logged(questions, meanings)) + "\n")
    result = analyze(path, embedder=WideWordsEmbedder(), max_error_rate=0.05)
    est = result.routes[0].bound
    assert est is not None and est.requests == len(questions)
    assert est.exact_hits > 0 and est.shadow_calls >= 0
    allowed = 0.05 * est.semantic_hits + 2.0 * math.sqrt(max(est.semantic_hits, 1) * 0.05)
    assert est.wrong_hits <= allowed
    if not twins:
        assert est.semantic_hits > 40 and est.wrong_hits == 0
    assert "max_error_rate 0.05" in result.summary()
    assert result.to_dict()["routes"][0]["error_bound"]["requests"] == len(questions)


def test_analyze_says_when_the_log_holds_no_answers(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"model": "qa", "messages": [{"role": "user", "content": f"q {i}"}]})
             for i in range(5)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    est = analyze(path, embedder=WideWordsEmbedder(), max_error_rate=0.02).routes[0].bound
    assert est is not None and est.requests == 0 and "log_content" in est.note
