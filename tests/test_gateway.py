"""Gateway used as a library inside an async program (no proxy in between)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import routeguard
from routeguard.gateway import Gateway
from routeguard.mock import MockServer


def _cfg(url: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "fast",
                "type": "openai",
                "model": "sim-fast",
                "api_base": url + "/v1",
                "api_key": "k",
                "input_cost_per_mtok": 1.0,
                "output_cost_per_mtok": 3.0,
            },
            {"model_name": "claude", "type": "anthropic", "model": "sim-c", "api_base": url},
        ]
    }


MSG = [{"role": "user", "content": "hello there"}]


async def test_chat_returns_openai_shape_and_cost(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        resp = await gw.chat({"model": "fast", "messages": MSG})
        assert isinstance(resp, dict)
        assert resp["object"] == "chat.completion" and resp["choices"][0]["message"]["content"]
        result = await gw.chat_result({"model": "fast", "messages": MSG})
        u = result.usage
        assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
        assert result.cost == pytest.approx(
            (u["prompt_tokens"] * 1.0 + u["completion_tokens"] * 3.0) / 1e6
        )
        assert result.attempts == 1 and result.deployment.id == "fast#0"
    finally:
        await gw.aclose()


async def test_stream_is_an_async_iterator_of_chunks(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        full = await gw.chat({"model": "claude", "messages": MSG})
        stream = await gw.chat({"model": "claude", "messages": MSG, "stream": True})
        assert isinstance(stream, AsyncIterator)
        text = ""
        async for chunk in stream:
            assert chunk["object"] == "chat.completion.chunk"
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
        assert isinstance(full, dict)
        assert text == full["choices"][0]["message"]["content"]
    finally:
        await gw.aclose()


async def test_errors_are_routeguard_exceptions(mock: MockServer) -> None:
    gw = Gateway.from_config(_cfg(mock.url))
    try:
        with pytest.raises(routeguard.ModelNotFound):
            await gw.chat({"model": "missing", "messages": MSG})
        with pytest.raises(routeguard.InvalidRequest):
            await gw.chat({"model": "fast", "messages": []})
    finally:
        await gw.aclose()


async def test_from_config_file(tmp_path: Path, mock: MockServer) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "model_list:\n  - model_name: m\n    type: openai\n    model: sim\n"
        f"    api_base: {mock.url}/v1\n"
    )
    gw = Gateway.from_config(f)
    try:
        resp = await gw.embeddings({"model": "m", "input": "hi"})
        assert resp["data"][0]["embedding"]
    finally:
        await gw.aclose()
