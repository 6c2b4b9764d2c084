"""``routeguard simulate``: a log replayed through the real Gateway against the simulated
upstream, layered vs a no-layers baseline: cost, cache hits, strong-call share, latency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from embedders import WordsEmbedder
from routeguard.analyze.simulate import LAYERS, baseline_config, simulate, simulated_config
from routeguard.cli import main
from traffic import make_log, repeat_log, write_log


def _config() -> dict[str, Any]:
    dep = {"type": "openai", "api_key": "os.environ/SOME_UNSET_KEY"}
    return {
        "model_list": [
            {**dep, "model_name": "small", "model": "sim-small",
             "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.60},
            {**dep, "model_name": "gpt-4o", "model": "sim-large",
             "input_cost_per_mtok": 2.50, "output_cost_per_mtok": 10.00},
        ],
        "server": {"master_key": "os.environ/ANOTHER_UNSET_KEY"},
        "routes": {
            "support": {"mode": "routed", "default": "small",
                        "rules": [{"name": "order", "regex": "(?i)order", "target": "gpt-4o"}],
                        "cache": {"enabled": True, "threshold": 0.9}},
            "assistant": {"mode": "routed", "default": "small",
                          "rules": [{"name": "proofs", "regex": "(?i)prove", "target": "gpt-4o"}]},
            "agent": {"mode": "pinned", "target": "gpt-4o"},
        },
    }  # fmt: skip


def test_config_is_repointed_at_the_simulator() -> None:
    ours = simulated_config(_config(), "http://127.0.0.1:9")
    assert all(e["api_base"] == "http://127.0.0.1:9/v1" for e in ours["model_list"])
    assert all(e["api_key"] == "simulated" for e in ours["model_list"])
    assert "server" not in ours and _config()["server"]  # the input is left alone
    litellm = {"model_list": [
        {"model_name": "a", "litellm_params": {"model": "anthropic/claude-x", "api_key": "k"}},
        {"model_name": "b", "litellm_params": {"model": "openai/gpt-x"}}]}  # fmt: skip
    out = simulated_config(litellm, "http://h:1")
    params = [e["litellm_params"] for e in out["model_list"]]
    assert params[0]["api_base"] == "http://h:1" and params[1]["api_base"] == "http://h:1/v1"
    base = baseline_config({**ours, "cache": {"enabled": True}})
    assert "routes" not in base and "cache" not in base and base["model_list"]


def test_repetitive_log_hits_the_cache_and_costs_less(tmp_path: Path) -> None:
    lines = make_log(support=60, assistant=20, agent=10, seed=11)
    log = write_log(tmp_path / "t.jsonl", lines)
    sim = simulate(_config(), log, embedder=WordsEmbedder())
    lay, base = sim.layered, sim.baseline
    assert sim.records == 90 and sim.skipped == 3 and sim.unserved == 0
    assert lay.requests == base.requests == 90 and lay.errors == base.errors == 0
    assert lay.cache_hits > 0 and base.cache_hits == 0
    assert lay.cost < base.cost
    assert sim.to_dict()["cost_savings"] > 0
    # The baseline sends everything to the model asked for; routing sends some to "small".
    assert base.served_by == {"gpt-4o": 90}
    assert lay.served_by.get("small", 0) > 0
    assert base.strong_share == 1.0 and lay.strong_share < 1.0
    lat = lay.latency()
    assert set(lat) == set(LAYERS)
    assert lat["total"]["p95"] >= lat["total"]["p50"] > 0
    assert lat["upstream"]["p95"] > 0 and lat["embedding"]["p95"] > 0
    assert base.latency()["embedding"]["p95"] == 0.0  # no layers, no embedding
    text = sim.summary()
    assert "cache hit rate" in text and "latency ms" in text and "route support:" in text
    # Layers run only where they apply: hits skip upstream, the pinned agent skips the cache.
    assert lat["upstream"]["n"] == 90 - lay.cache_hits
    assert lat["cache"]["n"] < 90 and lat["total"]["n"] == 90
    support = lay.per_route["support"]
    assert support["cache_hits"] == lay.cache_hits and lay.per_route["agent"]["cache_hits"] == 0


def test_exact_repeats_become_cache_hits(tmp_path: Path) -> None:
    cfg = _config()
    cfg["routes"] = {"faq": {"mode": "routed", "default": "small", "cache": {"enabled": True}}}
    log = write_log(tmp_path / "r.jsonl", repeat_log(40, 0.5, route="faq"))
    sim = simulate(cfg, log, embedder=WordsEmbedder())
    assert sim.layered.cache_hits == 20 and sim.layered.hit_rate == pytest.approx(0.5)


def test_records_the_config_does_not_serve_are_counted(tmp_path: Path) -> None:
    lines = [json.dumps({"model": "nowhere", "messages": [{"role": "user", "content": "hi"}]})]
    lines += repeat_log(4, 0.0, route="agent")
    sim = simulate(_config(), write_log(tmp_path / "u.jsonl", lines), embedder=WordsEmbedder())
    assert sim.unserved == 1 and sim.layered.requests == 4


def test_cli_with_the_default_embedder_and_learned_router(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config()
    cfg["routes"]["assistant"] = {"mode": "routed", "cheap": "small", "strong": "gpt-4o",
                                  "strong_share": 0.5}  # fmt: skip
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = write_log(tmp_path / "t.jsonl", make_log(support=12, assistant=12, agent=2, seed=5))
    assert main(["simulate", "--config", str(cfg_path), str(log), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    lay = data["layered"]
    assert lay["requests"] == 26 and lay["errors"] == 0
    assert lay["cache_hits"] > 0 and 0.0 < lay["strong_share"] < 1.0
    assert lay["cost"] < data["baseline"]["cost"]
    assert lay["latency_ms"]["embedding"]["p95"] > 0
    assert main(["simulate", "--config", str(tmp_path / "none.yaml"), str(log)]) == 1
    assert "cannot read" in capsys.readouterr().err
