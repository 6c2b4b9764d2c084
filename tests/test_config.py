"""Config loading: native shape, every problem with its key path, LiteLLM configs unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from routeguard import config
from routeguard.cli import main
from routeguard.errors import ConfigError

NATIVE = {
    "model_list": [
        {
            "model_name": "fast",
            "type": "openai",
            "model": "gpt-4o-mini",
            "api_key": "os.environ/TEST_OPENAI_KEY",
            "weight": 2,
            "input_cost_per_mtok": 0.15,
            "output_cost_per_mtok": 0.6,
        },
        {"model_name": "fast", "type": "openai", "model": "gpt-4o-mini", "api_base": "http://a/v1"},
        {"model_name": "smart", "type": "anthropic", "model": "claude-3-5-sonnet", "api_key": "k"},
    ],
    "fallbacks": {"fast": ["smart"]},
    "router_settings": {"strategy": "least-busy", "num_retries": 1},
}


def test_native_config_builds_deployments() -> None:
    cfg = config.load(NATIVE, env={"TEST_OPENAI_KEY": "sk-secret"})
    assert cfg.aliases == ["fast", "smart"]
    fast = cfg.deployments["fast"]
    assert [d.id for d in fast] == ["fast#0", "fast#1"]
    assert fast[0].api_key is not None and fast[0].api_key.get() == "sk-secret"
    assert fast[0].api_base == "https://api.openai.com/v1"
    assert fast[1].api_base == "http://a/v1"
    assert cfg.deployments["smart"][0].provider == "anthropic"
    assert cfg.router.strategy == "least-busy" and cfg.router.num_retries == 1
    assert cfg.fallbacks == {"fast": ["smart"]}
    assert fast[0].cost(1_000_000, 1_000_000) == pytest.approx(0.75)


def test_secrets_never_show_in_repr() -> None:
    cfg = config.load(NATIVE, env={"TEST_OPENAI_KEY": "sk-secret"})
    assert "sk-secret" not in repr(cfg)
    assert "sk-secret" not in str(cfg.deployments["fast"][0])


def test_every_problem_is_reported_with_its_path() -> None:
    bad = {
        "model_list": [
            {"model_name": "a", "type": "openai", "model": "m", "rpm": "many"},
            {"model_name": "b", "type": "cohere", "model": "m"},
            {"model_name": "c", "type": "openai", "model": "m", "api_key": "os.environ/NOPE_X"},
            {"model_name": "d", "type": "openai", "model": "m", "colour": "blue"},
            {"model_name": "e", "type": "openai", "model": "m", "weight": 0},
        ],
        "fallbacks": {"a": ["zzz"]},
        "router_settings": {"timeout": -1},
    }
    with pytest.raises(ConfigError) as info:
        config.load(bad, env={})
    paths = {p.path: p.message for p in info.value.problems}
    assert "int" in paths["model_list[0].rpm"]
    assert "unknown provider type" in paths["model_list[1].type"]
    assert "NOPE_X" in paths["model_list[2].api_key"]
    assert "colour" in paths["model_list[3]"]
    assert "must be > 0" in paths["model_list[4].weight"]
    assert "unknown model 'zzz'" in paths["fallbacks.a[0]"]
    assert "must not be negative" in paths["router_settings.timeout"]


def test_litellm_config_loads_unchanged(tmp_path: Path) -> None:
    f = tmp_path / "config.yaml"
    f.write_text(
        """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/TEST_KEY
      rpm: 100
      tpm: 100000
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:9/v1
      api_key: sk-x
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20240620
      api_key: sk-ant
      input_cost_per_token: 0.000003
  - model_name: gemini
    litellm_params:
      model: gemini/gemini-1.5-pro
      api_key: g
      drop_params: true
router_settings:
  routing_strategy: latency-based-routing
  num_retries: 3
  redis_host: localhost
litellm_settings:
  fallbacks: [{"gpt-4o": ["claude", "gemini"]}]
  context_window_fallbacks: [{"gpt-4o": ["gemini"]}]
  request_timeout: 20
  set_verbose: true
general_settings:
  master_key: sk-1234
  database_url: postgres://x
"""
    )
    cfg = config.load(f, env={"TEST_KEY": "sk-real"})
    assert cfg.aliases == ["gpt-4o", "claude", "gemini"]
    assert [d.provider for d in cfg.deployments["gpt-4o"]] == ["openai", "openai"]
    assert cfg.deployments["gpt-4o"][0].rpm == 100
    assert cfg.deployments["claude"][0].input_cost_per_mtok == pytest.approx(3.0)
    assert cfg.deployments["gemini"][0].model == "gemini-1.5-pro"
    assert cfg.router.strategy == "lowest-latency"
    assert cfg.router.num_retries == 3 and cfg.router.timeout == 20
    assert cfg.fallbacks == {"gpt-4o": ["claude", "gemini"]}
    assert cfg.context_window_fallbacks == {"gpt-4o": ["gemini"]}
    assert cfg.server.master_key is not None and cfg.server.master_key.get() == "sk-1234"
    joined = "\n".join(cfg.warnings)
    for unsupported in ("set_verbose", "database_url"):
        assert unsupported in joined
    # router_settings.redis_host shares usage across instances in LiteLLM: budgets do here
    assert (cfg.budget.backend, cfg.budget.redis_url) == ("redis", "redis://localhost:6379")
    assert "drop_params" not in joined  # honoured, on the deployment that set it
    assert cfg.deployments["gemini"][0].drop_params and not cfg.deployments["claude"][0].drop_params


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[[model_list]]\nmodel_name = "a"\ntype = "openai"\nmodel = "m"\n')
    assert main(["check-config", str(good)]) == 0
    assert "ok (1 models, 1 deployments)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list:\n  - model_name: a\n    type: openai\n    rpm: x\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "model_list[0]" in err and str(bad) in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_list: [\n")
    assert main(["check-config", str(broken)]) == 1
    assert "cannot parse" in capsys.readouterr().err


def test_redis_wait_settings_are_checked() -> None:
    settings = {"backend": "redis", "redis_url": "redis://h:1/0", "redis_wait_replicas": -1,
                "redis_wait_timeout_ms": 1000}  # fmt: skip
    bad = {**NATIVE, "budget_settings": settings}
    with pytest.raises(ConfigError) as info:
        config.load(bad, env={"TEST_OPENAI_KEY": "k"})
    paths = {p.path: p.message for p in info.value.problems}
    assert "0 or more" in paths["budget_settings.redis_wait_replicas"]
    assert "below the 1 s" in paths["budget_settings.redis_wait_timeout_ms"]


def test_the_end_user_budget_is_checked_at_load() -> None:
    """``budget_settings.end_user`` is only used at the first request naming an end user:
    a bad period, time zone or amount there is a ConfigError at load, not a 500 then."""
    end_user = {"limit": -1.0, "period": "1d", "rpm": 0, "timezone": "Mars/Base"}
    bad = {**NATIVE, "budget_settings": {"end_user": end_user}}
    with pytest.raises(ConfigError) as info:
        config.load(bad, env={"TEST_OPENAI_KEY": "k"})
    paths = {p.path: p.message for p in info.value.problems}
    assert "unknown time zone" in paths["budget_settings.end_user.timezone"]
    assert "0 to 9e9" in paths["budget_settings.end_user.limit"]
    assert "positive" in paths["budget_settings.end_user.rpm"]
    ok = {"limit": 1.0, "period": "daily", "rpm": 10}
    assert config.load(
        {**NATIVE, "budget_settings": {"end_user": ok}}, env={"TEST_OPENAI_KEY": "k"}
    )
    bad = {**NATIVE, "budget_settings": {"end_user": {"limit": 1.0, "period": "1d"}}}
    with pytest.raises(ConfigError) as info:
        config.load(bad, env={"TEST_OPENAI_KEY": "k"})
    assert "unknown period '1d'" in info.value.problems[0].message
