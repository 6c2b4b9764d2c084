"""LiteLLM proxy configs as people write them load unchanged: OpenAI-compatible providers by
prefix with their default base URLs and key variables, ``environment_variables``, sections we
do not implement warned about (never rejected), and a provider we do not serve named with
the key the user wrote and the list of prefixes we do."""

from __future__ import annotations

from pathlib import Path

import pytest

from routeguard import config
from routeguard.config.litellm import OPENAI_COMPATIBLE, SUPPORTED_PREFIXES
from routeguard.errors import ConfigError

CONFIG = """
model_list:
  - model_name: llama
    litellm_params: {model: groq/llama-3.1-8b-instant}
  - model_name: local
    litellm_params: {model: ollama_chat/llama3.2}
  - model_name: vllm
    litellm_params: {model: hosted_vllm/qwen, api_base: "http://gpu-box:8000/v1"}
  - model_name: router
    litellm_params: {model: openrouter/anthropic/claude-3.5-sonnet, api_key: os.environ/OR_KEY}
  - model_name: any
    litellm_params: {model: "openai/*"}
environment_variables:
  OR_KEY: sk-or-from-config
guardrails:
  - guardrail_name: pii
    litellm_params: {guardrail: presidio, mode: pre_call}
litellm_settings:
  drop_params: true
"""


def test_a_realistic_litellm_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "litellm.yaml"
    path.write_text(CONFIG)
    cfg = config.load(path, env={"GROQ_API_KEY": "gsk-test"})
    llama, local, vllm, router = (
        cfg.deployments[a][0] for a in ("llama", "local", "vllm", "router")
    )
    assert (llama.provider, llama.api_base, llama.model) == (
        "openai", "https://api.groq.com/openai/v1", "llama-3.1-8b-instant")  # fmt: skip
    assert llama.api_key is not None and llama.api_key.get() == "gsk-test"
    assert (local.api_base, local.api_key) == ("http://localhost:11434/v1", None)
    assert vllm.api_base == "http://gpu-box:8000/v1"
    assert router.model == "anthropic/claude-3.5-sonnet"
    assert router.api_key is not None and router.api_key.get() == "sk-or-from-config"
    assert "any" not in cfg.deployments  # a wildcard is not served, and says so
    text = "\n".join(cfg.warnings)
    for said in ("wildcard", "guardrails is not supported"):
        assert said in text
    assert llama.drop_params  # litellm_settings.drop_params is honoured


def test_the_process_environment_wins_over_environment_variables() -> None:
    data = {"model_list": [{"model_name": "r", "litellm_params": {
        "model": "openrouter/x", "api_key": "os.environ/OR_KEY"}}],
        "environment_variables": {"OR_KEY": "from-config"}}  # fmt: skip
    cfg = config.load(data, env={"OR_KEY": "from-process"})
    key = cfg.deployments["r"][0].api_key
    assert key is not None and key.get() == "from-process"


def test_a_missing_provider_key_is_a_warning_not_a_secret_in_the_config() -> None:
    data = {"model_list": [{"model_name": "m", "litellm_params": {"model": "mistral/small"}}]}
    cfg = config.load(data, env={})
    assert cfg.deployments["m"][0].api_key is None
    assert any("MISTRAL_API_KEY is not set" in w for w in cfg.warnings)


@pytest.mark.parametrize("model", ["sagemaker/my-endpoint", "watsonx/granite"])
def test_an_unsupported_provider_names_the_key_the_user_wrote(model: str) -> None:
    ok = {"model_name": "ok", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "k"}}
    data = {"model_list": [{"model_name": "m", "litellm_params": {"model": model}}, ok]}
    with pytest.raises(ConfigError) as info:
        config.load(data, env={})
    (problem,) = info.value.problems
    assert problem.path == "model_list[0].litellm_params.model"
    assert (
        model.split("/")[0] in problem.message and "openai/<model> with api_base" in problem.message
    )
    assert "type" not in problem.path


def test_a_server_without_a_default_url_needs_its_api_base() -> None:
    data = {"model_list": [{"model_name": "m", "litellm_params": {"model": "hosted_vllm/q"}}]}
    with pytest.raises(ConfigError) as info:
        config.load(data, env={})
    assert [p.path for p in info.value.problems] == ["model_list[0].litellm_params.api_base"]


def test_every_compatible_prefix_is_listed_as_supported() -> None:
    assert set(OPENAI_COMPATIBLE) <= set(SUPPORTED_PREFIXES)
    for prefix, (base, _) in OPENAI_COMPATIBLE.items():
        assert base is None or base.startswith(("http://", "https://")), prefix


async def test_a_compatible_server_serves_through_the_openai_adapter() -> None:
    from routeguard.gateway import Gateway
    from routeguard.mock import MockServer

    with MockServer() as mock:
        data = {"model_list": [{"model_name": "local", "litellm_params": {
            "model": "hosted_vllm/sim-qwen", "api_base": mock.url + "/v1"}}]}  # fmt: skip
        gw = Gateway.from_config(data)
        try:
            out = await gw.chat({"model": "local", "messages": [{"role": "user", "content": "hi"}]})
            assert isinstance(out, dict) and out["choices"][0]["message"]["content"]
            assert mock.requests[-1].path == "/v1/chat/completions"
        finally:
            await gw.aclose()


@pytest.mark.parametrize("prefix", sorted(OPENAI_COMPATIBLE))
async def test_each_compatible_prefix_speaks_openai_with_its_key(prefix: str) -> None:
    """Every OpenAI-compatible prefix, pointed at the simulated upstream: the OpenAI wire
    format, the prefix stripped from the model, and the key LiteLLM reads for the provider
    (from its variable) as a bearer token; keyless servers send none."""
    from routeguard.gateway import Gateway
    from routeguard.mock import MockServer

    _, var = OPENAI_COMPATIBLE[prefix]
    env = {var: f"key-for-{prefix}"} if var else {}
    with MockServer() as mock:
        data = {"model_list": [{"model_name": "m", "litellm_params": {
            "model": f"{prefix}/org/sim-model", "api_base": mock.url + "/v1"}}]}  # fmt: skip
        gw = Gateway(config.load(data, env=env))
        try:
            out = await gw.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            assert isinstance(out, dict) and out["choices"][0]["message"]["content"]
            req = mock.requests[-1]
            assert (req.path, req.model) == ("/v1/chat/completions", "org/sim-model")
            expected = f"Bearer key-for-{prefix}" if var else None
            assert req.headers.get("authorization") == expected
        finally:
            await gw.aclose()
