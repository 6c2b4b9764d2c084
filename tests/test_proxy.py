"""The proxy end to end: official SDKs -> routeguard proxy -> simulated upstream (all three
wire formats), including streaming, tool calls, errors, retries, fallback and cooldowns."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from routeguard.gateway import Gateway
from routeguard.mock import MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

FORMATS = ["oa", "an", "ge"]  # alias suffix per upstream wire format
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


def _dep(alias: str, kind: str, model: str, base: str, **kw: Any) -> dict[str, Any]:
    return {
        "model_name": alias,
        "type": kind,
        "model": model,
        "api_base": base + ("/v1" if kind == "openai" else ""),
        "api_key": "sk-upstream-secret-123",
        "input_cost_per_mtok": 1.0,
        "output_cost_per_mtok": 2.0,
        **kw,
    }


def _config(base: str) -> dict[str, Any]:
    kinds = {"oa": "openai", "an": "anthropic", "ge": "gemini"}
    models: list[dict[str, Any]] = []
    for suffix, kind in kinds.items():
        models.append(_dep(f"chat-{suffix}", kind, f"sim-{suffix}", base))
        models.append(_dep(f"broken-{suffix}", kind, "error-500", base))
        models.append(_dep(f"midstream-{suffix}", kind, "midstream-error", base))
    models += [
        _dep("flaky", "openai", "flaky-50-a", base),
        _dep("limited", "openai", "error-429", base),
        _dep("reject", "openai", "error-400", base),
        _dep("slow", "openai", "slow-3000", base, timeout=0.3),
        _dep("tiny", "openai", "ctx-40", base),
        _dep("roomy", "openai", "sim-roomy", base),
        _dep("pool", "openai", "error-503", base),
        _dep("pool", "openai", "sim-pool", base),
        _dep("down", "openai", "error-503", base),
    ]
    return {
        "model_list": models,
        "fallbacks": {
            "broken-oa": ["chat-an"],
            "broken-an": ["chat-ge"],
            "broken-ge": ["chat-oa"],
            "slow": ["chat-oa"],
        },
        "context_window_fallbacks": {"tiny": ["roomy"]},
        "router_settings": {
            "num_retries": 1,
            "retry_backoff": 0.001,
            "retry_backoff_max": 0.005,
            "allowed_fails": 2,
            "cooldown_time": 60,
            "timeout": 10,
        },
    }


@pytest.fixture(scope="module")
def proxy(mock: MockServer) -> Iterator[str]:
    gw = Gateway.from_config(_config(mock.url))
    with ServerThread(create_app(gw)) as server:
        yield server.url


@pytest.fixture
def oai(proxy: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy + "/v1", api_key="any", max_retries=0) as c:
        yield c


@pytest.fixture
def ant(proxy: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=proxy, api_key="any", max_retries=0) as c:
        yield c


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


MSG = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.parametrize("fmt", FORMATS)
def test_chat_non_stream_each_wire_format(oai: openai.OpenAI, fmt: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=f"chat-{fmt}", messages=MSG)  # type: ignore[arg-type]
    resp = raw.parse()
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens > 0
    assert resp.usage.completion_tokens > 0
    assert raw.headers["x-routeguard-model"] == f"chat-{fmt}"
    assert raw.headers["x-routeguard-attempts"] == "1"
    assert float(raw.headers["x-routeguard-overhead-ms"]) >= 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_stream_matches_non_stream(oai: openai.OpenAI, fmt: str) -> None:
    full = oai.chat.completions.create(model=f"chat-{fmt}", messages=MSG)  # type: ignore[arg-type]
    chunks = list(
        oai.chat.completions.create(
            model=f"chat-{fmt}",
            messages=MSG,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert len([c for c in chunks if c.choices]) > 2
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]


def test_stream_without_include_usage_sends_no_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="chat-an", messages=MSG, stream=True))  # type: ignore[arg-type]
    assert chunks and all(c.choices for c in chunks)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tool_calls_each_wire_format(oai: openai.OpenAI, fmt: str) -> None:
    msgs: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    resp = oai.chat.completions.create(model=f"chat-{fmt}", messages=msgs, tools=TOOLS)  # type: ignore[arg-type]
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    args = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    assert "city" in args
    # Send the tool result back: the model answers in text.
    msgs += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21C"},
    ]
    final = oai.chat.completions.create(model=f"chat-{fmt}", messages=msgs, tools=TOOLS)  # type: ignore[arg-type]
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content


@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_tool_calls(oai: openai.OpenAI, fmt: str) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=f"chat-{fmt}",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
        )
    )
    name = "".join(
        tc.function.name or ""
        for c in chunks
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function
    )
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function
    )
    assert name == "get_weather"
    assert "city" in json.loads(args)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fallback_across_providers(oai: openai.OpenAI, fmt: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=f"broken-{fmt}", messages=MSG)  # type: ignore[arg-type]
    nxt = {"oa": "chat-an", "an": "chat-ge", "ge": "chat-oa"}[fmt]
    assert raw.headers["x-routeguard-model"] == nxt
    assert raw.headers["x-routeguard-attempts"] == "3"  # two tries on the broken one, then one
    assert raw.parse().choices[0].message.content


def test_stream_falls_back_before_first_chunk(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="broken-oa", messages=MSG, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("fmt", FORMATS)
def test_midstream_error_reaches_the_client(oai: openai.OpenAI, fmt: str) -> None:
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for c in oai.chat.completions.create(model=f"midstream-{fmt}", messages=MSG, stream=True):  # type: ignore[arg-type]
            if c.choices and c.choices[0].delta.content:
                got.append(c.choices[0].delta.content)
    assert got  # some content arrived before the failure
    assert "stream" in str(info.value).lower()


def test_retry_on_flaky_upstream(oai: openai.OpenAI, mock: MockServer) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="flaky", messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-routeguard-attempts"] == "2"  # first call fails, the retry works


def test_rate_limited_everywhere_is_429_with_attempts(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="limited", messages=MSG)  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict) and len(body["attempts"]) == 2


def test_upstream_bad_request_passes_through(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="reject", messages=MSG)  # type: ignore[arg-type]


def test_timeout_then_fallback(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="slow", messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-routeguard-model"] == "chat-oa"


def test_context_window_fallback(oai: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "tell me about it " * 40}]
    raw = oai.chat.completions.with_raw_response.create(model="tiny", messages=long)  # type: ignore[arg-type]
    assert raw.headers["x-routeguard-model"] == "roomy"
    short = oai.chat.completions.with_raw_response.create(model="tiny", messages=MSG)  # type: ignore[arg-type]
    assert short.headers["x-routeguard-model"] == "tiny"


def test_cooldown_skips_a_failing_deployment(oai: openai.OpenAI, mock: MockServer) -> None:
    # The balancer picks at random; send until the failing one was hit allowed_fails times.
    for _ in range(200):
        if _count(mock, "error-503") >= 2:
            break
        oai.chat.completions.create(model="pool", messages=MSG)  # type: ignore[arg-type]
    before = _count(mock, "error-503")
    assert before == 2
    for _ in range(10):
        raw = oai.chat.completions.with_raw_response.create(model="pool", messages=MSG)  # type: ignore[arg-type]
        assert raw.headers["x-routeguard-attempts"] == "1"
    assert _count(mock, "error-503") == before  # its circuit is open: never called


def _count(mock: MockServer, model: str) -> int:
    return sum(1 for r in list(mock.requests) if r.get("model") == model)


def test_all_down_is_503_listing_attempts(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="down", messages=MSG)  # type: ignore[arg-type]
    assert info.value.status_code == 503
    assert "down#0" in str(info.value)


def test_unknown_model_is_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="nope", messages=MSG)  # type: ignore[arg-type]
    assert "nope" in str(info.value)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (b'{"model": "chat-oa"}', 400),
        (b'{"model": "chat-oa", "messages": [{"role": "user", "content": 5}]}', 400),
        (b'{"model": "chat-oa", "messages": [], "stream": true}', 400),
    ],
)
def test_bad_input_is_openai_style_4xx(proxy: str, body: bytes, status: int) -> None:
    code, data = _post(proxy + "/v1/chat/completions", body)
    assert code == status
    assert data["error"]["type"] == "invalid_request_error" and data["error"]["message"]


def test_body_over_limit_is_413(proxy: str) -> None:
    big = json.dumps(
        {"model": "chat-oa", "messages": [{"role": "user", "content": "x" * 9_000_000}]}
    )
    code, data = _post(proxy + "/v1/chat/completions", big.encode())
    assert code == 413 and data["error"]["code"] == "request_too_large"


def test_models_and_health(oai: openai.OpenAI, proxy: str) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"chat-oa", "chat-an", "chat-ge", "pool"} <= ids
    with urllib.request.urlopen(proxy + "/health", timeout=5) as r:
        assert json.loads(r.read()) == {"status": "ok"}


def test_embeddings(oai: openai.OpenAI) -> None:
    resp = oai.embeddings.create(model="chat-oa", input=["hello", "world"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) > 10


# ---------------------------------------------------------------- Anthropic SDK inbound


@pytest.mark.parametrize("fmt", FORMATS)
def test_anthropic_sdk_messages(ant: anthropic.Anthropic, fmt: str) -> None:
    msg = ant.messages.create(
        model=f"chat-{fmt}", max_tokens=200, messages=[{"role": "user", "content": "Hello"}]
    )
    assert msg.role == "assistant" and msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_anthropic_sdk_stream(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="chat-oa", max_tokens=200, messages=[{"role": "user", "content": "Hello"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"


def test_anthropic_sdk_tool_use(ant: anthropic.Anthropic) -> None:
    msg = ant.messages.create(
        model="chat-ge",
        max_tokens=200,
        tools=[
            {
                "name": "get_weather",
                "description": "Weather",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    )
    assert msg.stop_reason == "tool_use"
    block = next(b for b in msg.content if b.type == "tool_use")
    assert block.name == "get_weather" and "city" in block.input  # type: ignore[operator]


def test_anthropic_sdk_errors(ant: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.create(
            model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.create(model="chat-oa", max_tokens=10, messages=[])


# ---------------------------------------------------------------- auth and secrets


def test_master_key_is_enforced(mock: MockServer) -> None:
    cfg = _config(mock.url)
    cfg["server"] = {"master_key": "sk-master-1"}
    with ServerThread(create_app(Gateway.from_config(cfg))) as server:
        with (
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0) as bad,
            pytest.raises(openai.AuthenticationError),
        ):
            bad.chat.completions.create(model="chat-oa", messages=MSG)  # type: ignore[arg-type]
        with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-master-1", max_retries=0) as ok:
            assert ok.chat.completions.create(model="chat-oa", messages=MSG).choices  # type: ignore[arg-type]
        with anthropic.Anthropic(base_url=server.url, api_key="sk-master-1", max_retries=0) as a:
            assert a.messages.create(
                model="chat-oa", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            ).content


def test_upstream_keys_never_logged(oai: openai.OpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for model in ("down", "limited", "broken-ge"):
        try:
            oai.chat.completions.create(model=model, messages=MSG)  # type: ignore[arg-type]
        except openai.APIError as exc:
            assert "sk-upstream-secret-123" not in str(exc)
    assert "sk-upstream-secret-123" not in caplog.text
