"""The provider contract (``routeguard.providers.base``) as one matrix every adapter runs.

Each provider has a named capability list below; every row is parametrised from those
lists, against the simulated upstream over real HTTP. A capability a provider declares gets
the rows that exercise it; one it does not declare gets a row proving a request for it is
refused with a 400 naming the field (nothing sent upstream) instead of a quiet wrong answer.
The failure rows every chat/stream provider owes a gateway run for all: error statuses
mapped to the right class with no secret or upstream host in what a caller reads,
Retry-After, bad key, context window, mid-stream error, a stream without its terminator,
a stream without usage, a stream abandoned before its first read.

A new provider adds its list to ``PROVIDERS`` (and, if its mock needs one, an API path).
Vertex AI (Gemini and Claude) runs the same rows with service-account credentials whose
tokens come from the simulated upstream's OAuth endpoint (``tests/gcp.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from embedders import WordsEmbedder
from gcp import PROJECT, service_account
from routeguard.config import Deployment, Secret
from routeguard.deployment import AwsSettings, AzureSettings, VertexTarget
from routeguard.errors import (
    ContextWindowExceeded,
    MidStreamError,
    ProviderError,
    StreamTruncated,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamServerError,
)
from routeguard.gateway import Gateway
from routeguard.mock import BAD_KEY, MockServer
from routeguard.providers import get_provider, http
from routeguard.providers.base import (
    CAPABILITIES,
    ResponsesProvider,
    TokenCounter,
    counts_tokens,
    serves_responses,
)
from routeguard.server import create_app
from routeguard.server.thread import ServerThread

# --------------------------------------------------------------------------- the lists

OPENAI = ["chat", "stream", "tools", "embeddings", "vision", "json_mode", "usage_in_stream"]
ANTHROPIC = ["chat", "stream", "tools", "vision", "json_mode", "usage_in_stream"]
GEMINI = ["chat", "stream", "tools", "embeddings", "vision", "json_mode", "usage_in_stream"]
AZURE = OPENAI
BEDROCK = ["chat", "stream", "tools", "embeddings", "vision", "json_mode", "usage_in_stream"]

VERTEX_GEMINI = GEMINI
VERTEX_ANTHROPIC = ANTHROPIC

PROVIDERS: dict[str, list[str]] = {
    "openai": OPENAI,
    "anthropic": ANTHROPIC,
    "gemini": GEMINI,
    "vertex_ai": VERTEX_GEMINI,
    "vertex_ai_anthropic": VERTEX_ANTHROPIC,
    "azure": AZURE,
    "bedrock": BEDROCK,
}
# Where the simulated upstream serves each wire format, below its root.
API_PATH: dict[str, str] = {"openai": "/v1"}
# Vertex AI picks the publisher by model name: Claude models are claude-*.
MODEL_PREFIX: dict[str, str] = {"vertex_ai_anthropic": "claude-"}
VERTEX = ("vertex_ai", "vertex_ai_anthropic")
# Service-account files for the module's mock: trusted, and one the token endpoint refuses.
CREDENTIALS: dict[str, Path] = {}
# The embeddings model each provider is asked for, and the size of its vectors.
EMBED_MODEL: dict[str, tuple[str, int]] = {"bedrock": ("amazon.titan-embed-text-v2:0", 1024)}

# Configured (so registered for scrubbing) but not key-shaped: only registration masks it.
# For bedrock it is the AWS secret access key (the simulated Bedrock verifies signatures
# made with it), which never travels: only signatures do.
KEY = "configured-contract-credential-7"
AWS_KEY_ID = "AKIACONTRACTTEST0007"
_COVERED: set[str] = set()


def having(*caps: str) -> list[Any]:
    """The providers that declare every one of ``caps`` (a row's parameters)."""
    _COVERED.update(caps)
    return [pytest.param(k, id=k) for k, have in PROVIDERS.items() if set(caps) <= set(have)]


def lacking() -> list[Any]:
    """Every (provider, capability) pair the provider does not declare."""
    return [
        pytest.param(k, cap, id=f"{k}-{cap}")
        for k, have in PROVIDERS.items()
        for cap in sorted(CAPABILITIES - set(have))
    ]


# --------------------------------------------------------------------------- fixtures

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
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"  # a distinctive base64 payload
LOOK = {
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
            ],
        }
    ]
}
JSON_MODE = {**HELLO, "response_format": {"type": "json_object"}}


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    with MockServer() as m:
        keys = tmp_path_factory.mktemp("gcp")
        CREDENTIALS["good"] = service_account(m, keys)
        CREDENTIALS["bad"] = service_account(m, keys, trusted=False)
        m.app.aws_credentials[AWS_KEY_ID] = KEY
        yield m


@pytest.fixture(autouse=True)
async def _close_http_session() -> AsyncIterator[None]:
    yield
    await http.close_session()


def _dep(mock: MockServer, kind: str, model: str = "sim-model", **extra: Any) -> Deployment:
    key = extra.pop("key", KEY)
    api_key: Secret | None = Secret(key)
    if kind in VERTEX:  # Google credentials instead of a key; BAD_KEY: refused ones
        creds = CREDENTIALS["bad" if key == BAD_KEY else "good"]
        extra["vertex"] = VertexTarget(PROJECT, "us-central1", str(creds))
        api_key = None
    elif kind == "bedrock":  # SigV4 with the key as the secret (the API key is a bearer token)
        extra["aws"] = AwsSettings("us-east-1", Secret(AWS_KEY_ID), Secret(key))
        api_key = None
    elif kind == "azure":
        extra["azure"] = AzureSettings(api_version="2024-10-21")
    return Deployment(
        id=f"{kind}-{model}",
        alias="alias",
        provider=kind,
        model=MODEL_PREFIX.get(kind, "") + model,
        api_base=mock.url + API_PATH.get(kind, ""),
        api_key=api_key,
        **extra,
    )


def _entry(mock: MockServer, kind: str, model: str, **fields: Any) -> dict[str, Any]:
    """A model_list entry of ``kind`` on the simulated upstream (the config's view of _dep)."""
    entry: dict[str, Any] = {
        "type": "vertex_ai" if kind in VERTEX else kind,
        "model": MODEL_PREFIX.get(kind, "") + model,
        "api_base": mock.url + API_PATH.get(kind, ""),
        **fields,
    }
    if kind in VERTEX:
        entry |= {"vertex_project": PROJECT, "vertex_credentials": str(CREDENTIALS["good"])}
    elif kind == "bedrock":  # SigV4 keys
        entry |= {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": KEY,
                  "aws_region_name": "us-east-1"}  # fmt: skip
    else:
        entry["api_key"] = KEY
    return entry


async def _collect(kind: str, dep: Deployment, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [c async for c in get_provider(kind).stream(request, dep, 10.0)]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


def _finishes(chunks: list[dict[str, Any]]) -> list[Any]:
    return [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]


def _wire_body(mock: MockServer) -> str:
    """The last request's body as the upstream received it, as JSON text."""
    return json.dumps(mock.requests[-1].body)


def test_each_adapter_declares_its_list() -> None:
    for kind, caps in PROVIDERS.items():
        assert get_provider(kind).capabilities == frozenset(caps), kind
        assert set(caps) <= CAPABILITIES
    # every capability has rows that exercise it (the having() calls of this module)
    assert _COVERED == CAPABILITIES


# --------------------------------------------------------------------------- chat


@pytest.mark.parametrize("kind", having("chat"))
async def test_chat(mock: MockServer, kind: str) -> None:
    out = await get_provider(kind).chat(HELLO, _dep(mock, kind), 10.0)
    ChatCompletion.model_validate(out)
    choice = out["choices"][0]
    assert choice["message"]["content"].startswith("Simulated answer from")
    assert choice["finish_reason"] == "stop"
    usage = out["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


# --------------------------------------------------------------------------- stream


@pytest.mark.parametrize("kind", having("chat", "stream"))
async def test_stream_ends_after_its_terminator(mock: MockServer, kind: str) -> None:
    whole = await get_provider(kind).chat(HELLO, _dep(mock, kind), 10.0)
    chunks = await _collect(kind, _dep(mock, kind), HELLO)  # ended without raising
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert _text(chunks) == whole["choices"][0]["message"]["content"]
    assert _finishes(chunks)[-1] == "stop"
    assert all(f is None for f in _finishes(chunks)[:-1])


@pytest.mark.parametrize("kind", having("stream"))
async def test_stream_without_terminator_raises(mock: MockServer, kind: str) -> None:
    received: list[dict[str, Any]] = []
    with pytest.raises(StreamTruncated):
        async for chunk in get_provider(kind).stream(HELLO, _dep(mock, kind, "sim-truncate"), 10.0):
            received.append(chunk)
    assert _text(received)  # the prefix arrived...
    assert not any(_finishes(received))  # ...and nothing claims it is finished
    assert not any(c.get("usage") for c in received)


@pytest.mark.parametrize("kind", having("stream"))
async def test_midstream_error_raises_after_chunks(mock: MockServer, kind: str) -> None:
    received: list[dict[str, Any]] = []
    with pytest.raises(UpstreamServerError) as info:
        async for chunk in get_provider(kind).stream(
            HELLO, _dep(mock, kind, "midstream-error"), 10.0
        ):
            received.append(chunk)
    assert info.value.retryable
    assert _text(received)


@pytest.mark.parametrize("kind", having("stream"))
async def test_stream_abandoned_before_the_first_read(mock: MockServer, kind: str) -> None:
    mock.reset()
    slow = _dep(mock, kind, "sim-slow-stream", headers={"x-mock-tokens-per-s": "5"})
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


# Behind a Gateway with a cache and a budget: what a client, the cache and the ledger see.


def _gateway(mock: MockServer, model: str, kinds: list[str]) -> Gateway:
    """One cached, budgeted alias per wire format (named after it), served by ``model``."""
    deps = [
        _entry(
            mock, kind, model,
            model_name=kind, input_cost_per_mtok=1000.0, output_cost_per_mtok=1000.0,
        )
        for kind in kinds
    ]  # fmt: skip
    cfg = {
        "model_list": deps,
        "router_settings": {"num_retries": 0},
        "budgets": [{"name": "acct", "limit": 100.0}],
        "routes": {kind: {"cache": {"enabled": True}} for kind in kinds},
    }
    return Gateway.from_config(cfg, embedder=WordsEmbedder())


@pytest.mark.parametrize("kind", having("stream"))
async def test_truncated_stream_through_the_gateway(mock: MockServer, kind: str) -> None:
    gw = _gateway(mock, "sim-truncate", [kind])
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


def test_truncated_stream_reaches_sdk_clients_as_an_error(mock: MockServer) -> None:
    kinds = [p.values[0] for p in having("stream")]
    gw = _gateway(mock, "sim-truncate", kinds)
    with (
        ServerThread(create_app(gw)) as srv,
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        for kind in kinds:
            pieces: list[str] = []
            with pytest.raises(openai.APIError, match="stream"):
                for chunk in client.chat.completions.create(
                    model=kind,
                    messages=HELLO["messages"],  # type: ignore[arg-type]
                    stream=True,
                ):
                    assert chunk.choices[0].finish_reason is None
                    pieces.append(chunk.choices[0].delta.content or "")
            assert "".join(pieces), kind


# --------------------------------------------------------------------------- usage_in_stream


@pytest.mark.parametrize("kind", having("chat", "stream", "usage_in_stream"))
async def test_stream_usage_comes_last(mock: MockServer, kind: str) -> None:
    whole = await get_provider(kind).chat(HELLO, _dep(mock, kind), 10.0)
    chunks = await _collect(kind, _dep(mock, kind), HELLO)
    assert [c for c in chunks if c.get("usage")] == chunks[-1:]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {**whole["usage"], **chunks[-1]["usage"]}


@pytest.mark.parametrize("kind", having("chat", "stream", "usage_in_stream"))
async def test_stream_without_usage_makes_none_up(mock: MockServer, kind: str) -> None:
    chunks = await _collect(kind, _dep(mock, kind, "sim-no-usage"), HELLO)
    whole = await get_provider(kind).chat(HELLO, _dep(mock, kind, "sim-no-usage"), 10.0)
    assert _text(chunks) == whole["choices"][0]["message"]["content"]
    assert _finishes(chunks)[-1] == "stop"
    assert not any(c.get("usage") for c in chunks)  # no made-up zero usage

    gw = _gateway(mock, "sim-no-usage", [kind])
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


# --------------------------------------------------------------------------- tools


@pytest.mark.parametrize("kind", having("chat", "tools"))
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


@pytest.mark.parametrize("kind", having("stream", "tools"))
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
    assert _finishes(chunks)[-1] == "tool_calls"


# --------------------------------------------------------------------------- embeddings


def _embed_config(mock: MockServer, kind: str) -> dict[str, Any]:
    """A gateway with one ``kind`` embeddings model ``e`` and a budget account ``team``."""
    entry = _entry(mock, kind, _embed_model(kind)[0], model_name="e", input_cost_per_mtok=1000.0)
    return {"model_list": [entry], "budgets": [{"name": "team", "limit": 10.0}]}


def _embed_model(kind: str) -> tuple[str, int]:
    return EMBED_MODEL.get(kind, ("text-embedding-004", 768))


@pytest.mark.parametrize("kind", having("embeddings"))
@pytest.mark.parametrize("fmt", ["float", "base64"])
async def test_embeddings(mock: MockServer, kind: str, fmt: str) -> None:
    model, dims = _embed_model(kind)
    dep = _dep(mock, kind, model)
    request = {
        "model": "alias",
        "input": ["the cat sat", "the cat sat", "quantum flux"],
        "encoding_format": fmt,
    }
    out = await get_provider(kind).embed(request, dep, 10.0)
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    assert out["data"][0]["embedding"] == out["data"][1]["embedding"]
    assert out["data"][0]["embedding"] != out["data"][2]["embedding"]
    if fmt == "float":  # the SDK's model types the decoded list; base64 is decoded client-side
        gw = Gateway.from_config(_embed_config(mock, kind))
        try:  # what clients read: the gateway reports usage where the upstream gave none
            CreateEmbeddingResponse.model_validate(await gw.embeddings({**request, "model": "e"}))
        finally:
            await gw.aclose()
        assert len(out["data"][0]["embedding"]) == dims
    else:
        floats = await get_provider(kind).embed({**request, "encoding_format": "float"}, dep, 10.0)
        raw = base64.b64decode(out["data"][2]["embedding"])
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert decoded == pytest.approx(floats["data"][2]["embedding"])


@pytest.mark.parametrize("kind", having("embeddings"))
async def test_embeddings_usage_is_reported_not_made_up(mock: MockServer, kind: str) -> None:
    dep = _dep(mock, kind, _embed_model(kind)[0])
    out = await get_provider(kind).embed({"input": ["the cat sat"]}, dep, 10.0)
    usage = out.get("usage") or {}
    assert usage.get("prompt_tokens", 1) > 0  # absent (the gateway estimates) or real
    # Through the gateway the answer always carries usage, and a budget is charged for it.
    gw = Gateway.from_config(_embed_config(mock, kind))
    try:
        answer = await gw.embeddings({"model": "e", "input": ["the cat sat"]}, accounts=["team"])
        assert answer["usage"]["prompt_tokens"] > 0
        assert gw.budget is not None
        assert await gw.budget.backend.spent("team") > 0  # micro-dollars charged
    finally:
        await gw.aclose()


# --------------------------------------------------------------------------- vision, json_mode


@pytest.mark.parametrize("kind", having("chat", "vision"))
async def test_image_input_reaches_the_upstream(mock: MockServer, kind: str) -> None:
    out = await get_provider(kind).chat(LOOK, _dep(mock, kind), 10.0)
    ChatCompletion.model_validate(out)
    assert PIXEL in _wire_body(mock)  # translated into the wire format, not dropped


@pytest.mark.parametrize("kind", having("chat", "json_mode"))
async def test_json_mode_reaches_the_upstream(mock: MockServer, kind: str) -> None:
    await get_provider(kind).chat(HELLO, _dep(mock, kind), 10.0)
    plain = _wire_body(mock).lower()
    out = await get_provider(kind).chat(JSON_MODE, _dep(mock, kind), 10.0)
    ChatCompletion.model_validate(out)
    assert "json" in _wire_body(mock).lower() and "json" not in plain


# --------------------------------------------------------------------------- undeclared


async def _chat(kind: str, dep: Deployment, request: dict[str, Any]) -> Any:
    return await get_provider(kind).chat(request, dep, 10.0)


# How a client asks for each capability; the field a refusal must name.
USES: dict[str, tuple[Callable[[str, Deployment], Awaitable[Any]], str]] = {
    "chat": (lambda k, d: _chat(k, d, HELLO), "chat"),
    "stream": (lambda k, d: _collect(k, d, HELLO), "stream"),
    "tools": (lambda k, d: _chat(k, d, {**HELLO, "tools": TOOLS}), "'tools'"),
    "embeddings": (lambda k, d: get_provider(k).embed({"input": "x"}, d, 10.0), "embeddings"),
    "vision": (lambda k, d: _chat(k, d, LOOK), "image_url"),
    "json_mode": (lambda k, d: _chat(k, d, JSON_MODE), "response_format"),
}


# The request field a refusal names as its ``param`` (none for a whole call).
FIELDS = {
    "stream": "stream",
    "tools": "tools",
    "vision": "messages",
    "json_mode": "response_format",
}


@pytest.mark.parametrize(("kind", "cap"), lacking())
async def test_undeclared_capability_is_refused(mock: MockServer, kind: str, cap: str) -> None:
    mock.reset()
    if cap == "usage_in_stream":  # nothing to refuse: the stream reports no usage at all
        if "stream" in PROVIDERS[kind]:
            assert not any(c.get("usage") for c in await _collect(kind, _dep(mock, kind), HELLO))
        return
    use, field = USES[cap]
    with pytest.raises(UpstreamBadRequest) as info:
        await use(kind, _dep(mock, kind))
    assert field in info.value.message and kind in info.value.message
    assert info.value.status_code == 400 and not info.value.fallback_ok
    assert info.value.to_openai()["error"]["param"] == FIELDS.get(cap)
    assert mock.request_count == 0  # refused here, not sent for the upstream to guess


def test_every_capability_has_a_refusal_row() -> None:
    assert set(USES) | {"usage_in_stream"} == CAPABILITIES


# --------------------------------------------------------------------------- errors


def _calls(*caps: str) -> list[Any]:
    return [
        pytest.param(k, call, id=f"{k}-{call}")
        for k in (p.values[0] for p in having(*caps))
        for call in ("chat", "stream")
        if call in PROVIDERS[k]
    ]


@pytest.mark.parametrize(("kind", "call"), _calls("chat"))
@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, UpstreamBadRequest, False),
        (401, UpstreamAuthError, False),
        (403, UpstreamAuthError, False),
        (404, UpstreamNotFound, False),
        (429, UpstreamRateLimited, True),
        (500, UpstreamServerError, True),
        (503, UpstreamServerError, True),
    ],
)
async def test_error_status_is_mapped_and_leaks_nothing(
    mock: MockServer,
    kind: str,
    call: str,
    status: int,
    cls: type[ProviderError],
    retryable: bool,
) -> None:
    # echo-headers: the upstream repeats our request headers (the key, its own host) in
    # its error message, as a careless upstream or a proxy in front of it does.
    dep = _dep(mock, kind, f"sim-error-{status}-echo-headers")
    with pytest.raises(cls) as info:
        if call == "chat":
            await get_provider(kind).chat(HELLO, dep, 10.0)
        else:
            await _collect(kind, dep, HELLO)
    err = info.value
    assert type(err) is cls and err.retryable is retryable
    assert err.detail and not err.detail.startswith("upstream status")  # upstream's words
    if cls is not UpstreamBadRequest:  # a fixed message: no upstream words for callers
        assert err.message.endswith(f"(status {status})")
    assert "[request headers:" in err.detail  # the echo came, so the checks below mean something
    for text in (err.message, err.detail, json.dumps(err.body)):
        for secret in (KEY, *mock.app.oauth.issued):  # our key, or a Google access token
            assert secret not in text
    assert f":{mock.port}" not in err.message and "127.0.0.1" not in err.message


@pytest.mark.parametrize("kind", having("chat"))
async def test_rate_limit_carries_retry_after(mock: MockServer, kind: str) -> None:
    with pytest.raises(UpstreamRateLimited) as info:
        await get_provider(kind).chat(HELLO, _dep(mock, kind, "error-429"), 10.0)
    assert info.value.retry_after == 0.0


@pytest.mark.parametrize("kind", having("chat"))
async def test_bad_key_is_a_deployment_fault(mock: MockServer, kind: str) -> None:
    with pytest.raises(UpstreamAuthError) as info:
        await get_provider(kind).chat(HELLO, _dep(mock, kind, key=BAD_KEY), 10.0)
    assert info.value.fallback_ok and not info.value.retryable


@pytest.mark.parametrize(("kind", "call"), _calls("chat"))
async def test_context_window(mock: MockServer, kind: str, call: str) -> None:
    long = {"messages": [{"role": "user", "content": "word " * 400}]}
    dep = _dep(mock, kind, "ctx-100")
    with pytest.raises(ContextWindowExceeded) as info:
        if call == "chat":
            await get_provider(kind).chat(long, dep, 10.0)
        else:
            await _collect(kind, dep, long)
    assert info.value.fallback_ok is False


@pytest.mark.parametrize("kind", list(PROVIDERS))
def test_the_fast_api_checks_agree_with_the_protocols(kind: str) -> None:
    """serves_responses/counts_tokens (asked per request) answer as isinstance against the
    runtime-checkable protocols; an object missing either Responses call is not one."""
    provider = get_provider(kind)
    assert serves_responses(provider) is isinstance(provider, ResponsesProvider)
    assert counts_tokens(provider) is isinstance(provider, TokenCounter)
    expected = {"openai": True, "azure": True}.get(kind, False)
    assert serves_responses(provider) is expected

    class Half:
        async def responses(self, body: Any, deployment: Any, timeout: float) -> Any:
            """Only one of the two calls."""

    class NotCallable:
        responses = responses_stream = count_tokens = None

    for thing in (Half(), NotCallable(), object()):
        assert not serves_responses(thing)
        assert not counts_tokens(thing)
