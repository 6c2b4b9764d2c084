"""Learning from traffic, end to end with the simulated upstream: the proxy serves routed
requests with the request log and its content on -> feedback marks one recognisable class of
prompts (proofs and code) as needing the strong model, posted by the client or given by the
shadow judge -> ``routeguard router train --from-log`` writes a model -> a new gateway pointing
at it sends held-out prompts of that class to the strong model and the other class to the
cheap one, where the shipped model (same ``min_p_cheap``) cannot tell them apart. Also: the
feedback → label mapping, and the error when the log holds no prompts."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from routeguard.budget.keys import KeySpec
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.routing.cli import main
from routeguard.routing.fromlog import label, last_feedback
from routeguard.routing.learned import LearnedRouter
from routeguard.server import create_app
from routeguard.server.thread import ServerThread
from test_routing import needs_minilm
from test_routing_spread import GREETINGS, HARD
from waiting import eventually

MASTER = "sk-master-learning"
TRAFFIC = 40  # requests of each class served (and rated) before training


def hard(n: int, start: int = 0) -> list[str]:
    """Proof and coding requests (the mock judge's "hard" words are in each)."""
    stmts = ["the square root of {} is irrational",
             "there are infinitely many primes of the form {}k+1",
             "the sum of the first {} odd numbers is a perfect square",
             "every tree with {} vertices has {} minus one edges"]  # fmt: skip
    algos = ["Dijkstra's shortest path algorithm", "a red-black tree",
             "quicksort with a random pivot", "an LRU cache",
             "the Knuth-Morris-Pratt string search", "a topological sort"]  # fmt: skip
    out = []
    for i in itertools.islice(itertools.count(start), n):
        if i % 2 == 0:
            s = stmts[(i // 2) % len(stmts)].format(i + 2, i + 2)
            out.append(f"Prove that {s}, step by step.")
        else:
            a = algos[(i // 2) % len(algos)]
            out.append(f"Implement {a} in Python and explain its time complexity for n = {i * 10}.")
    return out


def easy(n: int, start: int = 0) -> list[str]:
    """Small talk: pet names and greetings."""
    pets = ["cat", "dog", "parrot", "hamster", "goldfish", "rabbit", "turtle"]
    names = ["Anna", "Ben", "Chloe", "Dev", "Ema", "Farid", "Gus", "Hana"]
    out = []
    for i in itertools.islice(itertools.count(start), n):
        if i % 2 == 0:
            out.append(f"Suggest a cute name for my new {pets[(i // 2) % len(pets)]}, number {i}.")
        else:
            who = names[(i // 2) % len(names)]
            out.append(f"Write a short friendly hello message to my friend {who} for day {i}.")
    return out


def _cfg(url: str, log: Path, *, model: str = "default", content: bool = True,
         shadow: bool = False) -> dict[str, Any]:  # fmt: skip
    dep = {"type": "openai", "api_base": url + "/v1", "api_key": "k",
           "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 4.0}  # fmt: skip
    route: dict[str, Any] = {"cheap": "cheap-m", "strong": "strong-m", "model": model,
                             "strong_share": 0.5}  # fmt: skip
    if shadow:
        route["shadow"] = {"share": 1.0, "judge": "judge-m", "max_concurrent": 64}
    return {
        "model_list": [
            {**dep, "model_name": "cheap-m", "model": "sim-cheap"},
            {**dep, "model_name": "strong-m", "model": "sim-strong"},
            {**dep, "model_name": "judge-m", "model": "sim-judge"},
        ],
        "server": {"master_key": MASTER},
        "routes": {"auto": route},
        "observability": {"request_log": str(log), "log_content": content},
    }


def _chat(c: httpx.Client, key: str, text: str) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    r = c.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r


def _feedback(c: httpx.Client, key: str, body: dict[str, Any]) -> httpx.Response:
    return c.post("/v1/feedback", json=body, headers={"authorization": f"Bearer {key}"})


def _serve_traffic(cfg: dict[str, Any], source: str) -> dict[str, int]:
    """Routed traffic through the proxy, and feedback on it from ``source``; how many
    requests of each class the route sent to the cheap alias."""
    gw = Gateway.from_config(cfg)  # the real MiniLM: the learned models read its vectors
    alice, _ = gw.keys.create(KeySpec(name="alice"))
    bob, _ = gw.keys.create(KeySpec(name="bob"))
    app = create_app(gw)
    prompts = [p for pair in zip(hard(TRAFFIC), easy(TRAFFIC), strict=True) for p in pair]
    cheap = {"hard": 0, "easy": 0}
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for i, text in enumerate(prompts):
            r = _chat(c, alice, text)
            rid, served = r.headers["x-routeguard-request-id"], r.headers["x-routeguard-model"]
            kind = "hard" if i % 2 == 0 else "easy"
            cheap[kind] += served == "cheap-m"
            if i == 0:  # another key may not rate alice's request
                refused = _feedback(c, bob, {"request_id": rid, "rating": "up"})
                assert refused.status_code == 403
            if source != "client":
                continue
            if kind == "hard":  # the client finds these answers lacking
                body = {"rating": "down"} if served == "cheap-m" else {"strong_needed": True}
            else:
                body = {"rating": "up"}
            assert _feedback(c, alice, {"request_id": rid, **body}).status_code == 200
        if source == "shadow":
            assert gw.shadows is not None
            stats = gw.shadows.stats
            total = cheap["hard"] + cheap["easy"]  # only cheap answers are shadowed
            eventually(lambda: _check(sum(stats.verdicts.values()) == total), timeout=60)
            assert stats.verdicts == {"A": 0, "B": cheap["hard"], "TIE": cheap["easy"]}
            assert stats.failed == stats.unparsed == stats.skipped_busy == 0
    return cheap


def _check(ok: bool) -> None:
    assert ok


async def _decisions(cfg: dict[str, Any], hard: list[str], easy: list[str]) -> tuple[int, int]:
    """How many of the ``hard`` and of the ``easy`` prompts (sent alternately, as a live
    ``strong_share`` expects mixed traffic) a gateway built from ``cfg`` sends to strong."""
    gw = Gateway.from_config(cfg)
    counts = {"hard": 0, "easy": 0}
    try:
        for h, e in zip(hard, easy, strict=True):
            for kind, text in (("hard", h), ("easy", e)):
                r = await gw.chat_result(
                    {"model": "auto", "messages": [{"role": "user", "content": text}]}
                )
                assert r.route == "learned"
                counts[kind] += r.alias == "strong-m"
        return counts["hard"], counts["easy"]
    finally:
        await gw.aclose()


@needs_minilm
@pytest.mark.parametrize("source", ["client", "shadow"])
async def test_feedback_trains_a_router_that_learns_the_class(
    mock: MockServer, tmp_path: Path, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "requests.jsonl"
    old = _cfg(mock.url, log, shadow=source == "shadow")
    cheap = _serve_traffic(old, source)
    entries = [json.loads(x) for x in (tmp_path / "requests.jsonl.feedback.jsonl").read_text()
               .splitlines()]  # fmt: skip
    rated = 2 * TRAFFIC if source == "client" else cheap["hard"] + cheap["easy"]
    assert len(entries) == rated and {e["source"] for e in entries} == {source}

    cfg_file = tmp_path / "routeguard.json"
    cfg_file.write_text(json.dumps(old))
    model = tmp_path / "learned.npz"
    argv = ["router", "train", "--from-log", str(log), "--config", str(cfg_file), "--out",
            str(model)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "wrote" in out and f"routes.auto.model: {model}" in out
    assert "new model" in out and "current model" in out and "APGR" in out
    report = dict(re.findall(r"^  (new model|current model)\s+APGR (\d\.\d{3})", out, re.M))
    assert set(report) == {"new model", "current model"}, out
    assert all(0.0 <= float(v) <= 1.0 for v in report.values())
    # Retrained from traffic, the router keeps the shipped one's spread: its trivial head was
    # fitted again, on the logged prompts, and calibrated with the gain heads.
    learned = LearnedRouter.load(model)
    assert learned.weights.shape[0] == 3 and "trivial_head" in learned.meta
    assert learned.calibrated
    easy_s, hard_s = learned.score(GREETINGS), learned.score(HARD)
    assert easy_s.max() < hard_s.min() - 1e-9, (GREETINGS[int(np.argmax(easy_s))], HARD[
        int(np.argmin(hard_s))])  # fmt: skip
    if source == "client":  # the option to go without: two gain heads, nothing else changed
        bare = tmp_path / "bare.npz"
        assert main([*argv[:-1], str(bare), "--no-trivial-head"]) == 0
        plain = LearnedRouter.load(bare)
        assert plain.weights.shape[0] == 2 and "trivial_head" not in plain.meta
        np.testing.assert_allclose(plain.weights, learned.weights[:2])
        assert "new model" in capsys.readouterr().out

    new = _cfg(mock.url, tmp_path / "new.jsonl", model=str(model))
    held_hard, held_easy = hard(24, start=100), easy(24, start=100)  # never seen in training
    new_hard, new_easy = await _decisions(new, held_hard, held_easy)
    old_hard, old_easy = await _decisions(old, held_hard, held_easy)
    # A router that had learned nothing would pass these with odds below 1e-9.
    assert new_hard >= 22 and new_easy <= 2, (new_hard, new_easy)
    assert new_hard - new_easy >= (old_hard - old_easy) + 12, (old_hard, old_easy)
    assert new_hard > old_hard


@needs_minilm
def test_train_from_log_says_prompts_are_missing(
    mock: MockServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "requests.jsonl"
    cfg = _cfg(mock.url, log, content=False)
    gw = Gateway.from_config(cfg)
    with ServerThread(create_app(gw)) as srv, httpx.Client(base_url=srv.url) as c:
        for text in hard(3):
            rid = _chat(c, MASTER, text).headers["x-routeguard-request-id"]
            assert _feedback(c, MASTER, {"request_id": rid, "strong_needed": True}).is_success
    cfg_file = tmp_path / "routeguard.json"
    cfg_file.write_text(json.dumps(cfg))
    argv = ["router", "train", "--from-log", str(log), "--config", str(cfg_file)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "holds no prompts for the 3 request(s)" in err and "log_content: true" in err


@pytest.mark.parametrize(
    ("entry", "role", "expected"),
    [
        ({"strong_needed": True}, "cheap", (0, 1, 1, 0)),
        ({"strong_needed": True}, "strong", (0, 1, 1, 0)),
        ({"strong_needed": False}, None, (1, 1, 0, 0)),
        ({"rating": "up"}, "cheap", (1, 1, 0, 0)),
        ({"rating": "down"}, "cheap", (0, 1, 1, 0)),
        ({"score": 0.75}, "cheap", (0.75, 1, 0.25, 0)),
        ({"rating": "down"}, "strong", (0, 0, 0, 0)),
        ({"score": 0.2}, "strong", (0, 0, 0, 0)),
        ({"rating": "up"}, "strong", None),
        ({"score": 0.9}, "strong", None),
        ({"rating": "down"}, None, None),
        ({"source": "shadow", "strong_needed": False, "judge": "cheap"}, "cheap", (1, 0, 0, 1)),
        ({"source": "shadow", "strong_needed": True, "judge": "strong"}, "cheap", (0, 1, 1, 0)),
        ({"source": "shadow", "strong_needed": False, "judge": "tie"}, "cheap", (1, 1, 0, 0)),
    ],
)
def test_feedback_to_label_mapping(
    entry: dict[str, Any], role: str | None, expected: tuple[float, ...] | None
) -> None:
    assert label(entry, role) == expected


def test_client_feedback_outranks_shadow_verdicts() -> None:
    entries = [
        {"request_id": "a", "source": "client", "rating": "up"},
        {"request_id": "a", "source": "shadow", "strong_needed": True},
        {"request_id": "b", "source": "shadow", "strong_needed": True},
        {"request_id": "b", "source": "client", "rating": "down"},
        {"request_id": "b", "source": "client", "rating": "up"},
    ]
    got = last_feedback(entries)
    assert got["a"]["rating"] == "up" and got["b"]["rating"] == "up"
