"""Rows only one wire format has, against the simulated upstream over real HTTP: Anthropic's
529 overloaded and its prompt-plus-max_tokens context error, the wire details of each
request (paths, auth headers, system prompt placement, the Gemini key kept out of URLs), and
Gemini's embeddings batching. Everything every provider owes is in test_provider_contract.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from routeguard.config import Deployment, Secret
from routeguard.errors import ContextWindowExceeded, UpstreamServerError
from routeguard.mock import MockServer
from routeguard.providers import get_provider, http

KEY = "sk-live-test-key"
HELLO = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
}


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


async def test_anthropic_529_overloaded_is_retryable(mock: MockServer) -> None:
    with pytest.raises(UpstreamServerError) as info:
        await get_provider("anthropic").chat(HELLO, _dep(mock, "anthropic", "error-529"), 10.0)
    assert info.value.retryable
    assert info.value.detail.startswith("Overloaded")


async def test_anthropic_prompt_plus_max_tokens_over_the_window(mock: MockServer) -> None:
    request = {"messages": [{"role": "user", "content": "word " * 60}], "max_tokens": 90}
    with pytest.raises(ContextWindowExceeded, match="exceed context limit"):
        await get_provider("anthropic").chat(request, _dep(mock, "anthropic", "ctx-100"), 10.0)


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


async def test_gemini_embeddings_over_one_batch(mock: MockServer) -> None:
    mock.reset()
    texts = [f"text number {i}" for i in range(150)]
    out = await get_provider("gemini").embed(
        {"input": texts, "dimensions": 64}, _dep(mock, "gemini"), 10.0
    )
    assert len(out["data"]) == 150
    assert {len(d["embedding"]) for d in out["data"]} == {64}
    assert [len(r.body["requests"]) for r in mock.requests] == [100, 50]
