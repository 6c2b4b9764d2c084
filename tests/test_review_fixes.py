"""Regression tests for an adversarial review of this session's changes: each failed on the
code before its fix (LiteLLM settings lost on merge, request-log leaks and torn lines, shadow
calls past a key's scope, body limits on the new endpoints, credentials sent to the wrong
server, 500s on bad input, non-finite config values)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from embedders import WideWordsEmbedder
from routeguard import config
from routeguard.budget.keys import KeySpec
from routeguard.errors import ConfigError
from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

MASTER = "sk-master-1234"


def _litellm(**extra: Any) -> dict[str, Any]:
    entry = {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "k"}}
    return {"model_list": [entry], **extra}


def test_litellm_master_key_survives_a_server_section() -> None:
    cfg = config.load(
        _litellm(general_settings={"master_key": MASTER}, server={"max_body_bytes": 1_000_000}),
        env={},
    )
    assert cfg.server.master_key is not None and cfg.server.master_key.get() == MASTER
    assert cfg.server.max_body_bytes == 1_000_000
    with pytest.raises(ConfigError) as info:  # set twice, differently: say so
        config.load(_litellm(general_settings={"master_key": MASTER},
                             server={"master_key": "sk-other"}), env={})  # fmt: skip
    assert [p.path for p in info.value.problems] == ["server.master_key"]


def test_litellm_and_top_level_fallbacks_merge() -> None:
    entries = [{"model_name": n, "litellm_params": {"model": f"openai/{n}", "api_key": "k"}}
               for n in ("a", "b", "c")]  # fmt: skip
    cfg = config.load({"model_list": entries, "router_settings": {"fallbacks": [{"a": ["b"]}]},
                       "fallbacks": {"b": ["c"]}}, env={})  # fmt: skip
    assert cfg.fallbacks == {"a": ["b"], "b": ["c"]}


@pytest.mark.parametrize(
    "bad",
    [
        {"litellm_params": "openai/x"},
        {"model_info": ["id"], "litellm_params": {"model": "openai/x", "api_key": "k"}},
    ],
)
def test_malformed_litellm_sections_are_config_problems(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        config.load({"model_list": [{"model_name": "a", **bad}]}, env={})
    cfg = config.load(_litellm(router_settings={"routing_strategy": ["x"]}), env={})
    assert any("routing_strategy" in w for w in cfg.warnings)


def test_openai_key_is_not_sent_to_another_server() -> None:
    data = {"model_list": [{"model_name": "x", "litellm_params": {
        "model": "openai/llama", "api_base": "http://third-party.example/v1"}}]}  # fmt: skip
    cfg = config.load(data, env={"OPENAI_API_KEY": "sk-REAL-OPENAI"})
    assert cfg.deployments["x"][0].api_key is None
    assert any("without one" in w for w in cfg.warnings)
    own = config.load(_litellm_no_key(), env={"OPENAI_API_KEY": "sk-REAL-OPENAI"})
    key = own.deployments["a"][0].api_key
    assert key is not None and key.get() == "sk-REAL-OPENAI"  # api.openai.com still gets it


def _litellm_no_key() -> dict[str, Any]:
    return {"model_list": [{"model_name": "a", "litellm_params": {"model": "openai/gpt-4o"}}]}


def test_a_null_environment_variable_is_not_the_string_none() -> None:
    data = {**_litellm(general_settings={"master_key": "os.environ/LITELLM_MASTER_KEY"}),
            "environment_variables": {"LITELLM_MASTER_KEY": None}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        config.load(data, env={})
    assert "LITELLM_MASTER_KEY is not set" in str(info.value)


@pytest.mark.parametrize(
    ("where", "patch"),
    [
        ("model_list[0].input_cost_per_mtok", {"input_cost_per_mtok": float("nan")}),
        ("model_list[0].weight", {"weight": float("inf")}),
        ("model_list[0].headers.x-a", {"headers": {"x-a": "ok\r\nx-evil: 1"}}),
    ],
)
def test_non_finite_numbers_and_control_characters_are_refused(
    where: str, patch: dict[str, Any]
) -> None:
    dep = {"model_name": "a", "type": "openai", "model": "m", "api_key": "k", **patch}
    with pytest.raises(ConfigError) as info:
        config.load({"model_list": [dep]}, env={})
    assert where in [p.path for p in info.value.problems]
    with pytest.raises(ConfigError) as info:
        config.load({"model_list": [{**dep, **{k: 1 for k in patch if k != "headers"}}],
                     "router_settings": {"timeout": float("nan")}}, env={})  # fmt: skip
    assert "router_settings.timeout" in [p.path for p in info.value.problems]


def test_the_request_log_keeps_settings_not_text(mock: MockServer, tmp_path: Path) -> None:
    for content in (False, True):
        log = tmp_path / f"r{content}.jsonl"
        cfg = {"model_list": [{"model_name": "m", "type": "openai", "model": "sim-m",
                               "api_base": mock.url + "/v1", "api_key": "k"}],
               "observability": {"request_log": str(log), "log_content": content}}  # fmt: skip
        app = create_app(Gateway.from_config(cfg))
        body = {"model": "m", "messages": [{"role": "user", "content": "hi sk-proj-" + "A" * 40}],
                "stop": ["SECRET-STOP"], "prediction": {"type": "content",
                "content": "SECRET-PREDICTION"}, "temperature": 0.5}  # fmt: skip
        with ServerThread(app) as srv:
            req = urllib.request.Request(srv.url + "/v1/chat/completions",
                                         data=json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=10):
                pass
        assert app.request_log is not None
        app.request_log.flush()
        text = log.read_text()
        line = json.loads(text)
        assert line["request"]["temperature"] == 0.5
        for never in ("SECRET-STOP", "SECRET-PREDICTION", "A" * 40):
            assert never not in text


async def test_shadow_calls_never_reach_a_fallback_outside_the_key(mock: MockServer) -> None:
    dep = {"type": "openai", "api_base": mock.url + "/v1", "api_key": "k"}
    cfg = {"model_list": [{**dep, "model_name": "cheap-m", "model": "sim-cheap"},
                          {**dep, "model_name": "strong-m", "model": "sim-strong-error-500"},
                          {**dep, "model_name": "secret-m", "model": "sim-secret-internal"},
                          {**dep, "model_name": "judge-m", "model": "sim-judge"}],
           "fallbacks": {"strong-m": ["secret-m"]},
           "router_settings": {"num_retries": 0},
           "routes": {"auto": {"cheap": "cheap-m", "strong": "strong-m", "threshold": 1.0,
                               "shadow": {"share": 1.0, "judge": "judge-m"}}}}  # fmt: skip
    gw = Gateway(config.load(cfg, env={}), embedder=WideWordsEmbedder())
    _, rec = gw.keys.create(KeySpec(models=["auto", "cheap-m", "strong-m", "judge-m"]))
    try:
        seen = len(mock.requests)
        msgs = [{"role": "user", "content": "a prompt of a scoped key"}]
        assert (await gw.chat_result({"model": "auto", "messages": msgs}, key=rec)).response
        assert gw.shadows is not None
        await gw.shadows.drain()
        models = [q.model for q in mock.requests[seen:]]
        assert "sim-strong-error-500" in models  # the shadow did run
        assert "sim-secret-internal" not in models
    finally:
        await gw.aclose()


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"content-type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_new_endpoints_have_body_limits_and_no_500s(mock: MockServer) -> None:
    cfg = {"model_list": [{"model_name": "m", "type": "openai", "model": "sim-m",
                           "api_base": mock.url + "/v1", "api_key": "k"}],
           "server": {"max_body_bytes_per_endpoint": {"/v1/chat/completions": 2048,
                                                      "/v1/messages": 2048}}}  # fmt: skip
    big = json.dumps({"model": "m", "input": "x" * 4000, "prompt": "x" * 4000,
                      "messages": [{"role": "user", "content": "x" * 4000}]}).encode()  # fmt: skip
    with ServerThread(create_app(Gateway.from_config(cfg))) as srv:
        for path in ("/v1/responses", "/v1/completions", "/v1/messages/count_tokens"):
            assert _post(srv.url + path, big) == 413, path
        assert _post(srv.url + "/v1/completions", b'{"prompt": "hi"}') == 400
        assert _post(srv.url + "/v1/feedback", b"{" + b" " * 70_000 + b"}") == 413


def test_a_full_disk_leaves_no_torn_line(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from routeguard.observe.requestlog import RequestLog
        log = RequestLog({str(tmp_path / "r.jsonl")!r}, max_bytes=10**6)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        for i in range(20):
            log.record({{"i": i, "pad": "x" * 80}})
            log.flush()
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        log.record({{"i": "after"}})
        log.flush()
        log.close()
        print(log.written, log.dropped)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env=os.environ.copy())  # fmt: skip
    assert out.returncode == 0, out.stderr
    written, dropped = map(int, out.stdout.split())
    lines = [x for x in (tmp_path / "r.jsonl").read_text().splitlines() if x.strip()]
    parsed = [json.loads(x) for x in lines]  # every line whole
    assert parsed[-1] == {"i": "after"} and dropped > 0 and written == len(parsed)
    assert oct((tmp_path / "r.jsonl.lock").stat().st_mode & 0o777) == "0o600"


def test_feedback_uses_its_own_small_limit() -> None:
    assert config.DEFAULT_ENDPOINT_BODY_BYTES["/v1/feedback"] == 64 * 1024
