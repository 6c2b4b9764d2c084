"""Twelve LiteLLM proxy configs written the way LiteLLM's docs write them
(``tests/data/litellm/``) all pass ``routeguard check-config``, each with exactly the
warnings expected: one per setting we do not honour, naming it. What they set is honoured:
Redis and in-memory caches, budgets with LiteLLM durations, aliases, every kind of fallback.
A provider we do not have fails, naming the key written and the prefixes we serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from routeguard import config
from routeguard.cli import main
from routeguard.config.litellm import OPENAI_COMPATIBLE, PROXY_ACCOUNT
from routeguard.errors import ConfigError

DATA = Path(__file__).parent / "data" / "litellm"
ENV = {
    **{var: "test-key" for _, var in OPENAI_COMPATIBLE.values() if var},
    "OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", "GEMINI_API_KEY": "g",
    "EU_KEY": "eu", "REDIS_HOST": "cache.internal", "REDIS_PASSWORD": "p@ss:word",
    "REDIS_URL": "redis://cache.internal:6380", "LITELLM_MASTER_KEY": "sk-master",
    "DATABASE_URL": "postgresql://u:p@db/litellm", "AWS_ACCESS_KEY_ID": "a",
    "AWS_SECRET_ACCESS_KEY": "b",
}  # fmt: skip
NOT_SUPPORTED = "is not supported and is ignored"
EXPECTED: dict[str, list[str]] = {
    "01_quickstart.yaml": [f"litellm_settings.set_verbose {NOT_SUPPORTED}"],
    "02_load_balancing.yaml": [f"router_settings.enable_pre_call_checks {NOT_SUPPORTED}"],
    "03_wildcards.yaml": [f"litellm_settings.check_provider_endpoint {NOT_SUPPORTED}"],
    "04_redis_cache.yaml": [
        "litellm_settings.cache_params.supported_call_types: only chat completions are "
        "cached, not aembedding",
        f"litellm_settings.cache_params.max_connections {NOT_SUPPORTED}",
    ],
    "05_semantic_cache.yaml": [
        f"litellm_settings.cache_params.redis_semantic_cache_embedding_model {NOT_SUPPORTED}"
    ],
    "06_s3_cache.yaml": [
        "litellm_settings.cache_params.type 's3' is not supported (local, redis and "
        "redis-semantic are); the cache is off"
    ],
    "07_budgets.yaml": [
        "general_settings.alerting_threshold is not supported (only budget alerts) and is ignored",
        "general_settings.alerting 'slack': SLACK_WEBHOOK_URL is not set, so budget alerts are "
        "log lines only",
        f"general_settings.database_url {NOT_SUPPORTED}",
    ],
    "08_logging.yaml": [  # langfuse and otel become OTLP destinations; sentry has none
        "litellm_settings.failure_callback: callback 'sentry' is not supported and is ignored "
        "(routeguard exports traces to any OTLP backend: observability.tracing)",
        f"litellm_settings.redact_user_api_key_info {NOT_SUPPORTED}",
        f"litellm_settings.turn_off_message_logging {NOT_SUPPORTED}",
    ],
    "09_compatible_providers.yaml": [],
    "10_reliability.yaml": [
        f"router_settings.retry_policy {NOT_SUPPORTED}",
        f"guardrails {NOT_SUPPORTED}",
    ],
    "11_model_info.yaml": [
        f"model_list[0].model_info.access_groups {NOT_SUPPORTED}",
        f"model_list[0].litellm_params.organization {NOT_SUPPORTED}",
        f"model_list[0].litellm_params.temperature {NOT_SUPPORTED}",
    ],
    "12_enterprise.yaml": [  # usage-based-routing-v2 maps to routing_strategy usage-based
        f"litellm_settings.default_team_settings {NOT_SUPPORTED}",
        f"litellm_settings.upperbound_key_generate_params {NOT_SUPPORTED}",
        *(
            f"general_settings.{k} {NOT_SUPPORTED}"
            for k in (
                "allowed_routes",
                "disable_spend_logs",
                "proxy_batch_write_at",
                "store_model_in_db",
            )
        ),
        f"credential_list {NOT_SUPPORTED}",
    ],
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    return ENV


def test_every_sample_config_is_covered() -> None:
    assert sorted(p.name for p in DATA.glob("*.yaml")) == sorted(EXPECTED)
    assert len(EXPECTED) >= 10


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_config_loads_it_with_exactly_the_expected_warnings(
    name: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(DATA / name)]) == 0
    out, err = capsys.readouterr()
    assert ": ok (" in out
    warnings = [line.removeprefix("warning: ") for line in err.splitlines()]
    assert warnings == EXPECTED[name]
    for secret in ("p@ss:word", "sk-master", "postgresql://u:p@db", "sk-lf-test"):
        assert secret not in out + err


def _load(name: str) -> config.Config:
    return config.load(DATA / name, env=ENV)


def test_caches_map_onto_ours() -> None:
    redis = _load("04_redis_cache.yaml").cache
    assert (redis.enabled, redis.backend, redis.threshold) == (True, "redis", 1.0)
    assert redis.redis_url == "redis://:p%40ss%3Aword@localhost:6379"  # the password quoted
    assert (redis.redis_prefix, redis.ttl) == ("litellm.caching.caching", 600)
    semantic = _load("05_semantic_cache.yaml").cache
    assert (semantic.backend, semantic.threshold) == ("redis", pytest.approx(0.8))
    assert semantic.redis_url == ENV["REDIS_URL"]
    assert not _load("06_s3_cache.yaml").cache.enabled
    local = config.load(
        {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
         "litellm_settings": {"cache": True, "cache_params": {"type": "local", "ttl": 60}}},
        env=ENV,
    )  # fmt: skip
    assert (local.cache.enabled, local.cache.backend, local.cache.ttl) == (True, "memory", 60)


def test_budgets_and_redis_usage_map_onto_ours() -> None:
    cfg = _load("07_budgets.yaml")
    (account,) = cfg.accounts
    assert (account.name, account.limit, account.period) == (PROXY_ACCOUNT, 100, "monthly")
    assert cfg.budget.proxy_account == PROXY_ACCOUNT
    assert cfg.budget.end_user is not None and cfg.budget.end_user.limit == pytest.approx(0.5)
    # alerting maps beside the budgets, not over them (SLACK_WEBHOOK_URL unset: log lines only)
    assert cfg.budget.alerts is not None and cfg.budget.alerts.webhook is None
    assert cfg.server.master_key is not None and cfg.server.master_key.get() == "sk-master"
    lb = _load("02_load_balancing.yaml")
    assert lb.budget.backend == "redis"
    assert lb.budget.redis_url == "redis://:p%40ss%3Aword@cache.internal:6379"
    assert [d.rpm for d in lb.deployments["gpt-4o-mini"]] == [480, 240]
    assert lb.deployments["gpt-4o-mini"][1].id == "eu-deployment"
    assert _load("12_enterprise.yaml").budget.redis_url == ENV["REDIS_URL"]


def test_reliability_settings_map_onto_ours() -> None:
    cfg = _load("10_reliability.yaml")
    assert [d.model for d in cfg.deployments["gpt-4"]] == ["gpt-4o"]  # model_group_alias
    assert cfg.router.default_fallbacks == ("gpt-4o-mini",)
    assert cfg.content_policy_fallbacks == {"gpt-4o": ["claude-3-5-sonnet"]}
    assert cfg.context_window_fallbacks == {"gpt-4o-mini": ["gemini-1.5-pro"]}
    assert all(d.drop_params for deps in cfg.deployments.values() for d in deps)
    wild = _load("03_wildcards.yaml")
    assert [w.pattern for w in wild.wildcards] == [
        "fo::*:static::*", "anthropic/*", "groq/*", "*"]  # fmt: skip
    assert not wild.deployments


def test_prices_come_from_the_config_else_the_list_price() -> None:
    cfg = _load("11_model_info.yaml")
    gpt = cfg.deployments["gpt-4o"][0]
    assert (gpt.id, gpt.context_window, gpt.timeout) == ("gpt4o-primary", 128000, 120)
    assert gpt.input_cost_per_mtok == pytest.approx(2.5)  # base_model's list price
    emb = cfg.deployments["text-embedding-3-large"][0]
    assert emb.input_cost_per_mtok == pytest.approx(0.13)


def test_compatible_providers_get_their_base_urls() -> None:
    deps = {a: d[0] for a, d in _load("09_compatible_providers.yaml").deployments.items()}
    assert deps["local-llama"].api_base == "http://localhost:11434/v1"  # LiteLLM's root + /v1
    assert deps["vllm-qwen"].api_base == "http://gpu-1:8000/v1"
    assert deps["llama-3.1-8b"].api_base == "https://api.groq.com/openai/v1"
    assert deps["command-r"].api_base == "https://api.cohere.ai/compatibility/v1"
    assert deps["gemini-flash"].provider == "gemini"
    assert all(d.provider in ("openai", "gemini") for d in deps.values())


def test_a_provider_we_do_not_have_names_the_key_and_the_way_out(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sagemaker.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: ok\n    litellm_params: {model: openai/gpt-4o}\n"
        "  - model_name: jumpstart\n"
        "    litellm_params: {model: sagemaker/jumpstart-llama, aws_region_name: us-west-2}\n"
    )
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "model_list[1].litellm_params.model" in err and "'sagemaker'" in err
    assert "openai/<model> with api_base" in err and "groq" in err
    assert "type" not in err.replace("content-type", "")


def test_bad_values_name_the_keys_the_user_wrote() -> None:
    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}]}
    cases = {
        "litellm_settings.budget_duration": {"litellm_settings": {
            "max_budget": 1, "budget_duration": "monthly"}},
        "litellm_settings.cache_params.similarity_threshold": {"litellm_settings": {
            "cache": True, "cache_params": {"type": "redis-semantic", "host": "h"}}},
        "litellm_settings.cache_params.host": {"litellm_settings": {
            "cache": True, "cache_params": {"type": "redis"}}},
        "router_settings.model_group_alias.gpt-4": {"router_settings": {
            "model_group_alias": {"gpt-4": "nope"}}},
        "router_settings.redis_password": {"router_settings": {
            "redis_host": "h", "redis_password": "os.environ/UNSET_PASSWORD_VAR"}},
    }  # fmt: skip
    for path, extra in cases.items():
        with pytest.raises(ConfigError) as info:
            config.load({**base, **extra}, env={"OPENAI_API_KEY": "k"})
        assert [p.path for p in info.value.problems] == [path], path


async def test_a_litellm_redis_cache_is_shared_and_exact(redis_server: str) -> None:
    """Two instances on one LiteLLM ``cache_params`` (a real redis-server): the second
    answers the first's request from the cache; a reworded request is not a hit (LiteLLM's
    redis cache matches exact requests only)."""
    import uuid

    from embedders import WordsEmbedder
    from routeguard.cache.redis_store import RedisStore
    from routeguard.gateway import Gateway
    from routeguard.mock import MockServer

    namespace = f"litellm-{uuid.uuid4().hex[:8]}"
    with MockServer() as mock:
        data = {
            "model_list": [{"model_name": "gpt-4o", "litellm_params": {
                "model": "openai/gpt-4o", "api_base": mock.url + "/v1", "api_key": "k"}}],
            "litellm_settings": {"cache": True, "cache_params": {
                "type": "redis", "url": redis_server, "namespace": namespace, "ttl": 60}},
        }  # fmt: skip
        first = Gateway.from_config(data, embedder=WordsEmbedder())
        second = Gateway.from_config(data, embedder=WordsEmbedder())
        try:
            ask = {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "please name a colour for me"}],
            }
            assert (await first.chat_result(dict(ask))).cache == "miss"
            assert first.cache is not None and second.cache is not None
            await second.start_cache()
            stores = [g.cache.cache.store for g in (first, second) if g.cache is not None]
            assert all(isinstance(s, RedisStore) for s in stores)
            await stores[0].flush()  # type: ignore[union-attr]
            await stores[1].caught_up()  # type: ignore[union-attr]
            assert (await second.chat_result(dict(ask))).cache == "hit"
            # cosine 0.93 under WordsEmbedder: a hit at our default 0.90, not at LiteLLM's exact
            reworded = {
                **ask,
                "messages": [{"role": "user", "content": "please name a colour for me now"}],
            }
            assert (await second.chat_result(reworded)).cache == "miss"
        finally:
            await first.aclose()
            await second.aclose()
