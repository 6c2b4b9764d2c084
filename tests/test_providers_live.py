"""Every provider adapter against the simulated upstream, over real HTTP: one shared matrix
(non-stream, stream, tool call, embeddings, 429/500/401, context window, mid-stream error,
stream without terminator, stream without usage, stream abandoned before the first read)
applied to the OpenAI, Anthropic and Gemini wire formats."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from embedders import WordsEmbedder
from routeguard.config import Deployment, Secret
from routeguard.errors import (
    ContextWindowExceeded,
    MidStreamError,
    ProviderError,
    StreamTruncated,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamServerError,
)
from routeguard.gateway import Gateway
from routeguard.providers import get_provider, http
from routeguard.providers.mock import BAD_KEY, MockServer
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

KINDS = ["openai", "anthropic", "gemini"]
KEY = "sk-live-test-key"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
HELLO = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockServer]:
    with MockServer() as m:
        yield m


@pytest.fixture(autouse=True)
async def _close_http_session() -> AsyncIterator[None]:
    yield
    await http.close_session()


def _dep(mock: MockServer, kind: str, model: str = "sim-model", key: str = KEY) -> Deployment:
    return Deployment(
        id=f"{kind}-{model}",
        alias="alias",
        provider=kind,
        model=model,
        api_base=mock.url + ("/v1" if kind == "openai" else ""),
        api_key=Secret(key),
    )


async def _collect(kind: str, dep: Deployment, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [c async for c in get_provider(kind).stream(request, dep, 10.0)]


@pytest.mark.parametrize("kind", KINDS)
async def test_chat(mock: MockServer, kind: str) -> None:
    out = await get_provider(kind).chat(HELLO, _dep(mock, kind), 10.0)
    ChatCompletion.model_validate(out)
    choice = out["choices"][0]
    assert choice["message"]["content"].startswith("Simulated answer from")
    assert choice["finish_reason"] == "stop"
    usage = out["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("kind", KINDS)
async def test_stream(mock: MockServer, kind: str) -> None:
    whole = await get_provider(kind).chat(HELLO, _dep(mock, kind), 10.0)
    chunks = await _collect(kind, _dep(mock, kind), HELLO)
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {**whole["usage"], **chunks[-1]["usage"]}


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_call_and_result(mock: MockServer, kind: str) -> None:
    dep = _dep(mock, kind)
    request = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS}
    out = await get_provider(kind).chat({**request, "tool_choice": "required"}, dep, 10.0)
    ChatCompletion.model_validate(out)
    message = out["choices"][0]["message"]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "example"}

    follow_up = {
        **request,
        "messages": [
            *request["messages"],
            message,
            {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"},
        ],
    }
    answer = await get_provider(kind).chat(follow_up, dep, 10.0)
    assert "18C and sunny" in answer["choices"][0]["message"]["content"]
    assert "get_weather" in answer["choices"][0]["message"]["content"]


@pytest.mark.parametrize("kind", KINDS)
async def test_streamed_tool_call(mock: MockServer, kind: str) -> None:
    request = {
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": TOOLS,
        "tool_choice": "required",
    }
    chunks = await _collect(kind, _dep(mock, kind), request)
    calls = [
        tc
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert calls[0]["id"] and calls[0]["function"]["name"] == "get_weather"
    args = "".join(tc["function"].get("arguments") or "" for tc in calls)
    assert json.loads(args) == {"city": "example"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("model", "cls", "retryable"),
    [
        ("error-429", UpstreamRateLimited, True),
        ("error-500", UpstreamServerError, True),
        ("error-503", UpstreamServerError, True),
        ("error-400", UpstreamBadRequest, False),
        ("error-401", UpstreamAuthError, False),
    ],
)
async def test_error_statuses(
    mock: MockServer, kind: str, model: str, cls: type[ProviderError], retryable: bool
) -> None:
    for call in ("chat", "stream"):
        with pytest.raises(cls) as info:
            if call == "chat":
                await get_provider(kind).chat(HELLO, _dep(mock, kind, model), 10.0)
            else:
                await _collect(kind, _dep(mock, kind, model), HELLO)
        assert type(info.value) is cls
        assert info.value.retryable is retryable
        assert info.value.detail  # the upstream's own message (for logs), not a placeholder
        assert not info.value.detail.startswith("upstream status")
        if cls is not UpstreamBadRequest:  # a fixed message: no upstream words for callers
            assert info.value.message.endswith(f"(status {model[-3:]})")


async def test_anthropic_529_overloaded_is_retryable(mock: MockServer) -> None:
    with pytest.raises(UpstreamServerError) as info:
        await get_provider("anthropic").chat(HELLO, _dep(mock, "anthropic", "error-529"), 10.0)
    assert info.value.retryable
    assert info.value.detail.startswith("Overloaded")


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limit_carries_retry_after(mock: MockServer, kind: str) -> None:
    with pytest.raises(UpstreamRateLimited) as info:
        await get_provider(kind).chat(HELLO, _dep(mock, kind, "error-429"), 10.0)
    assert info.value.retry_after == 0.0


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_key(mock: MockServer, kind: str) -> None:
    with pytest.raises(UpstreamAuthError):
        await get_provider(kind).chat(HELLO, _dep(mock, kind, key=BAD_KEY), 10.0)


@pytest.mark.parametrize("kind", KINDS)
async def test_context_window(mock: MockServer, kind: str) -> None:
    long = {"messages": [{"role": "user", "content": "word " * 400}]}
    with pytest.raises(ContextWindowExceeded) as info:
        await get_provider(kind).chat(long, _dep(mock, kind, "ctx-100"), 10.0)
    assert info.value.fallback_ok is False
    with pytest.raises(ContextWindowExceeded):
        await _collect(kind, _dep(mock, kind, "ctx-100"), long)


async def test_anthropic_prompt_plus_max_tokens_over_the_window(mock: MockServer) -> None:
    request = {"messages": [{"role": "user", "content": "word " * 60}], "max_tokens": 90}
    with pytest.raises(ContextWindowExceeded, match="exceed context limit"):
        await get_provider("anthropic").chat(request, _dep(mock, "anthropic", "ctx-100"), 10.0)


@pytest.mark.parametrize("kind", KINDS)
async def test_midstream_error_raises_after_chunks(mock: MockServer, kind: str) -> None:
    received: list[dict[str, Any]] = []
    with pytest.raises(UpstreamServerError) as info:
        async for chunk in get_provider(kind).stream(
            HELLO, _dep(mock, kind, "midstream-error"), 10.0
        ):
            received.append(chunk)
    assert info.value.retryable
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in received)


async def test_wire_details_of_each_provider(mock: MockServer) -> None:
    mock.reset()
    await get_provider("anthropic").chat(HELLO, _dep(mock, "anthropic", "claude-sim"), 10.0)
    await get_provider("gemini").chat(HELLO, _dep(mock, "gemini", "gemini-sim"), 10.0)
    await _collect("gemini", _dep(mock, "gemini", "gemini-sim"), HELLO)
    an, ge, ge_stream = mock.requests
    assert an.path == "/v1/messages"
    assert an.headers["x-api-key"] == KEY
    assert an.headers["anthropic-version"] == "2023-06-01"
    assert an.body["system"] == "Be brief." and an.body["max_tokens"] == 4096
    assert ge.path == "/v1beta/models/gemini-sim:generateContent"
    assert ge_stream.path == "/v1beta/models/gemini-sim:streamGenerateContent"
    assert ge_stream.query == {"alt": "sse"}  # the key never travels in the URL
    assert ge.headers["x-goog-api-key"] == KEY
    assert ge.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


@pytest.mark.parametrize("kind", ["openai", "gemini"])
@pytest.mark.parametrize("fmt", ["float", "base64"])
async def test_embeddings(mock: MockServer, kind: str, fmt: str) -> None:
    request = {
        "model": "alias",
        "input": ["the cat sat", "the cat sat", "quantum flux"],
        "encoding_format": fmt,
    }
    out = await get_provider(kind).embed(request, _dep(mock, kind, "text-embedding-004"), 10.0)
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    assert out["data"][0]["embedding"] == out["data"][1]["embedding"]
    assert out["data"][0]["embedding"] != out["data"][2]["embedding"]
    if fmt == "float":  # the SDK's model types the decoded list; base64 is decoded client-side
        CreateEmbeddingResponse.model_validate(out)
        assert len(out["data"][0]["embedding"]) == 768
    else:
        floats = await get_provider(kind).embed(
            {**request, "encoding_format": "float"}, _dep(mock, kind, "text-embedding-004"), 10.0
        )
        raw = base64.b64decode(out["data"][2]["embedding"])
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert decoded == pytest.approx(floats["data"][2]["embedding"])


async def test_gemini_embeddings_over_one_batch(mock: MockServer) -> None:
    mock.reset()
    texts = [f"text number {i}" for i in range(150)]
    out = await get_provider("gemini").embed(
        {"input": texts, "dimensions": 64}, _dep(mock, "gemini"), 10.0
    )
    assert len(out["data"]) == 150
    assert {len(d["embedding"]) for d in out["data"]} == {64}
    assert [len(r.body["requests"]) for r in mock.requests] == [100, 50]


async def test_anthropic_has_no_embeddings(mock: MockServer) -> None:
    with pytest.raises(UpstreamBadRequest, match="no embeddings endpoint"):
        await get_provider("anthropic").embed({"input": "x"}, _dep(mock, "anthropic"), 10.0)


# --------------------------------------------------------------------------- stream failure rows
# A stream is complete only when its wire format's terminator arrived (OpenAI [DONE],
# Anthropic message_stop, Gemini finishReason). The gateway rows run each adapter behind a
# Gateway with a cache and a budget: what a client, the cache and the ledger see.


def _gateway(mock: MockServer, model: str) -> Gateway:
    """One cached, budgeted alias per wire format (named after it), served by ``model``."""
    deps = [
        {
            "model_name": kind,
            "type": kind,
            "model": model,
            "api_key": KEY,
            "api_base": mock.url + ("/v1" if kind == "openai" else ""),
            "input_cost_per_mtok": 1000.0,
            "output_cost_per_mtok": 1000.0,
        }
        for kind in KINDS
    ]
    cfg = {
        "model_list": deps,
        "router_settings": {"num_retries": 0},
        "budgets": [{"name": "acct", "limit": 100.0}],
        "routes": {kind: {"cache": {"enabled": True}} for kind in KINDS},
    }
    return Gateway.from_config(cfg, embedder=WordsEmbedder())


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


def _finishes(chunks: list[dict[str, Any]]) -> list[Any]:
    return [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]


@pytest.mark.parametrize("kind", KINDS)
async def test_stream_without_terminator_is_a_midstream_error(mock: MockServer, kind: str) -> None:
    received: list[dict[str, Any]] = []
    with pytest.raises(StreamTruncated):
        async for chunk in get_provider(kind).stream(HELLO, _dep(mock, kind, "sim-truncate"), 10.0):
            received.append(chunk)
    assert _text(received)  # the prefix arrived...
    assert not any(_finishes(received))  # ...and nothing claims it is finished
    assert not any(c.get("usage") for c in received)

    gw = _gateway(mock, "sim-truncate")
    assert gw.budget is not None
    try:
        request = {"model": kind, "messages": HELLO["messages"], "stream": True}
        for _ in range(2):  # the second is no cache hit on the partial answer
            result = await gw.chat_result(dict(request), accounts=["acct"])
            assert result.cache == "miss" and result.stream is not None
            sent: list[dict[str, Any]] = []
            with pytest.raises(MidStreamError):
                async for chunk in result.stream:
                    sent.append(chunk)
            assert _text(sent) and not any(_finishes(sent))
        assert await gw.budget.backend.reserved("acct") == 0
        assert await gw.budget.backend.spent("acct") > 0  # charged for what was sent
    finally:
        await gw.aclose()


def test_stream_without_terminator_reaches_sdk_clients_as_an_error(mock: MockServer) -> None:
    gw = _gateway(mock, "sim-truncate")
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        for kind in KINDS:
            pieces: list[str] = []
            with pytest.raises(openai.APIError, match="stream"):
                for chunk in client.chat.completions.create(
                    model=kind,
                    messages=HELLO["messages"],  # type: ignore[arg-type]
                    stream=True,
                ):
                    assert chunk.choices[0].finish_reason is None
                    pieces.append(chunk.choices[0].delta.content or "")
            assert "".join(pieces)


@pytest.mark.parametrize("kind", KINDS)
async def test_stream_without_usage_is_charged_for_what_was_sent(
    mock: MockServer, kind: str
) -> None:
    chunks = await _collect(kind, _dep(mock, kind, "sim-no-usage"), HELLO)
    whole = await get_provider(kind).chat(HELLO, _dep(mock, kind, "sim-no-usage"), 10.0)
    assert _text(chunks) == whole["choices"][0]["message"]["content"]
    assert _finishes(chunks)[-1] == "stop"
    assert not any(c.get("usage") for c in chunks)  # no made-up usage

    gw = _gateway(mock, "sim-no-usage")
    assert gw.budget is not None
    try:
        request = {"model": kind, "messages": HELLO["messages"], "stream": True}
        result = await gw.chat_result(dict(request), accounts=["acct"])
        assert result.stream is not None
        sent = [c async for c in result.stream]
        assert _text(sent) == whole["choices"][0]["message"]["content"]
        assert await gw.budget.backend.reserved("acct") == 0
        assert await gw.budget.backend.spent("acct") > 0  # estimated, never free
    finally:
        await gw.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_stream_abandoned_before_the_first_read(mock: MockServer, kind: str) -> None:
    mock.reset()
    slow = Deployment(
        id=f"{kind}-slow",
        alias="alias",
        provider=kind,
        model="sim-slow-stream",
        api_base=mock.url + ("/v1" if kind == "openai" else ""),
        api_key=Secret(KEY),
        headers={"x-mock-tokens-per-s": "5"},
    )
    # Closed before its first read: nothing was sent upstream.
    unread = get_provider(kind).stream(HELLO, slow, 10.0)
    await unread.aclose()  # type: ignore[attr-defined]
    assert mock.request_count == 0
    # The gateway reads the first chunk itself; a client leaving then must drop the
    # upstream connection at once (the simulated upstream sees the stream abandoned).
    started = get_provider(kind).stream(HELLO, slow, 10.0)
    first = await anext(started)
    assert first["choices"]
    await started.aclose()  # type: ignore[attr-defined]
    for _ in range(200):
        if mock.abandoned_streams:
            break
        await asyncio.sleep(0.01)
    assert mock.request_count == 1 and mock.abandoned_streams == 1
