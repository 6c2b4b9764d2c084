"""``observability.tracing`` at load (endpoints, protocols, headers, the OTEL_* environment,
the missing extra) and LiteLLM's logging callbacks mapped onto it."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from routeguard import config
from routeguard.config import tracing as tracing_config
from routeguard.errors import ConfigError

MODELS = [{"model_name": "m", "type": "openai", "model": "x", "api_base": "http://up/v1"}]


def _load(tracing: Any, env: dict[str, str] | None = None) -> config.Config:
    return config.load({"model_list": MODELS, "observability": {"tracing": tracing}}, env=env or {})


def test_tracing_is_off_unless_configured() -> None:
    assert config.load({"model_list": MODELS}, env={}).tracing is None
    assert _load(False).tracing is None


def test_endpoints_headers_and_destinations() -> None:
    cfg = _load(
        {
            "endpoint": "http://collector:4318",
            "headers": {"Authorization": "os.environ/OTLP_TOKEN", "x-team": "a"},
            "sample_ratio": 0.25,
            "service_name": "edge-gw",
            "exporters": [
                {"endpoint": "https://otel.example.com/api/v1/traces"},
                {"endpoint": "http://agent:4317", "protocol": "grpc"},
            ],
        },
        env={"OTLP_TOKEN": "Bearer t0ken-value"},
    )
    t = cfg.tracing
    assert t is not None and t.sample_ratio == 0.25 and t.service_name == "edge-gw"
    assert [(x.endpoint, x.protocol) for x in t.targets] == [
        ("http://collector:4318/v1/traces", "http"),  # a base URL gets the traces path
        ("https://otel.example.com/api/v1/traces", "http"),  # a full one is kept
        ("http://agent:4317", "grpc"),
    ]
    first = t.targets[0].headers
    assert first is not None
    assert {k: v.get() for k, v in first} == {"authorization": "Bearer t0ken-value", "x-team": "a"}
    assert "t0ken" not in repr(cfg)  # header values are secrets, and the raw form is not kept
    assert cfg.observability.tracing is True


def test_true_takes_everything_from_the_environment() -> None:
    cfg = _load(True, env={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert cfg.tracing is not None
    (target,) = cfg.tracing.targets
    assert target.endpoint is None and target.headers is None and target.protocol == "grpc"
    traces_env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}  # fmt: skip
    cfg = _load(True, env=traces_env)
    assert cfg.tracing is not None and cfg.tracing.targets[0].protocol == "http"


@pytest.mark.parametrize(
    ("tracing", "env", "path", "says"),
    [
        ({"sample_ratio": 1.5}, {}, "observability.tracing.sample_ratio", "[0, 1]"),
        ({"endpoint": "collector:4318"}, {}, "observability.tracing.endpoint", "http://"),
        ({"exporters": [{}]}, {}, "observability.tracing.exporters[0].endpoint", "required"),
        ({"headers": {"a": "os.environ/NOPE"}}, {}, "observability.tracing.headers.a", "NOPE"),
        (True, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "observability.tracing.protocol",
         "http/json"),
        ({"protocol": "zipkin"}, {}, "observability.tracing", "zipkin"),
    ],
)  # fmt: skip
def test_bad_tracing_settings_name_their_key(
    tracing: Any, env: dict[str, str], path: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tracing, env)
    assert any(p.path.startswith(path) and says in p.message for p in info.value.problems), [
        (p.path, p.message) for p in info.value.problems
    ]


def test_a_missing_extra_fails_at_load_with_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing_config, "_importable", lambda module: "grpc" not in module)
    assert _load({"endpoint": "http://c:4318"}).tracing is not None  # http's extra is here
    with pytest.raises(ConfigError, match=r"pip install 'routeguard\[otel-grpc\]'"):
        _load({"endpoint": "http://c:4317", "protocol": "grpc"})
    monkeypatch.setattr(tracing_config, "_importable", lambda module: False)
    with pytest.raises(ConfigError, match=r"pip install 'routeguard\[otel\]'"):
        _load(True)


def _litellm(settings: dict[str, Any], env: dict[str, str]) -> config.Config:
    data = {
        "model_list": [
            {"model_name": "m", "litellm_params": {"model": "openai/gpt-4o", "api_key": "k"}}
        ],
        "litellm_settings": settings,
    }
    return config.load(data, env=env)


def test_litellm_prometheus_and_otel_callbacks() -> None:
    cfg = _litellm({"callbacks": ["prometheus", "otel"]}, env={})
    assert cfg.observability.metrics
    assert cfg.tracing is not None
    assert [(t.endpoint, t.protocol) for t in cfg.tracing.targets] == [(None, "http")]
    assert not any("callback" in w for w in cfg.warnings)
    # LiteLLM's own OTEL_* variables
    env = {"OTEL_EXPORTER": "otlp_grpc", "OTEL_ENDPOINT": "http://collector:4317",
           "OTEL_HEADERS": "api-key=abc%20def,x-b=2"}  # fmt: skip
    cfg = _litellm({"callbacks": ["otel"]}, env=env)
    assert cfg.tracing is not None
    (target,) = cfg.tracing.targets
    assert (target.endpoint, target.protocol) == ("http://collector:4317", "grpc")
    assert target.headers is not None
    assert {k: v.get() for k, v in target.headers} == {"api-key": "abc def", "x-b": "2"}


def test_litellm_langfuse_and_datadog_go_through_otlp() -> None:
    env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-2",
           "LANGFUSE_HOST": "https://langfuse.internal/", "DD_AGENT_HOST": "dd-agent"}  # fmt: skip
    cfg = _litellm(
        {"success_callback": ["langfuse", "datadog"], "failure_callback": ["langfuse"]}, env
    )
    assert cfg.tracing is not None
    langfuse, datadog = cfg.tracing.targets
    assert langfuse.endpoint == "https://langfuse.internal/api/public/otel/v1/traces"
    assert langfuse.headers is not None
    auth = dict((k, v.get()) for k, v in langfuse.headers)["authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")).decode() == "pk-lf-1:sk-lf-2"
    assert (datadog.endpoint, datadog.protocol) == ("http://dd-agent:4318/v1/traces", "http")
    assert "sk-lf-2" not in repr(cfg)


def test_litellm_callbacks_without_an_equivalent_are_named_once() -> None:
    cfg = _litellm(
        {"success_callback": ["langfuse", "s3", "s3"], "failure_callback": ["sentry"]}, env={}
    )
    assert cfg.tracing is None  # langfuse without its keys: warned, not configured
    warned = [w for w in cfg.warnings if "callback" in w]
    assert len(warned) == 3, warned
    assert any("'s3'" in w for w in warned) and any("'sentry'" in w for w in warned)
    assert any("LANGFUSE_PUBLIC_KEY" in w for w in warned)
