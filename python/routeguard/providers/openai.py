"""OpenAI Chat Completions and Embeddings (and any server that speaks them).

Our internal shape *is* OpenAI's, so translation is small: swap in the deployment's model
name, ask for usage on streams (cost needs it), and map error bodies onto ProviderErrors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from routeguard.config import Deployment
from routeguard.errors import ProviderError, StreamTruncated, error_for_status
from routeguard.providers import http
from routeguard.providers.base import Json

_CONTEXT_HINTS = ("context_length_exceeded", "maximum context length", "context window")


def _headers(dep: Deployment) -> dict[str, str]:
    h = dict(dep.headers)
    if dep.api_key is not None:
        h["authorization"] = f"Bearer {dep.api_key.get()}"
    return h


def error_from_response(resp: http.HttpResponse) -> ProviderError:
    """Map an OpenAI-style error response onto a ProviderError."""
    return error_from_body(resp.status, resp.json(), http.retry_after(resp.headers))


def error_from_body(status: int, body: Any, retry_after: float | None = None) -> ProviderError:
    """Map an OpenAI error body (``{"error": {"message", "type", "code"}}``) and status."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or f"upstream status {status}")
        code = str(err.get("code") or "")
    else:
        message, code = f"upstream status {status}", ""
    ctx = code == "context_length_exceeded" or any(h in message.lower() for h in _CONTEXT_HINTS)
    return error_for_status(status, message, retry_after=retry_after, body=body, context_window=ctx)


class OpenAIProvider:
    """Provider for the OpenAI wire format."""

    name = "openai"

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming chat completion."""
        body = {**request, "model": deployment.model}
        body.pop("stream", None)
        body.pop("stream_options", None)
        resp = await http.post_json(
            f"{deployment.api_base}/chat/completions", _headers(deployment), body, timeout
        )
        if resp.status >= 400:
            raise error_from_response(resp)
        data = http.decode(resp.body, "chat completion")
        if not isinstance(data, dict) or "choices" not in data:
            raise ProviderError("chat completion: upstream response has no 'choices'")
        return data

    async def stream(
        self, request: Json, deployment: Deployment, timeout: float
    ) -> AsyncIterator[Json]:
        """A streaming chat completion; the last chunk carries usage."""
        body = {
            **request,
            "model": deployment.model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        sse = await http.open_sse(
            f"{deployment.api_base}/chat/completions", _headers(deployment), body, timeout
        )
        if sse.status >= 400:
            raise error_from_response(await sse.body())
        try:
            async for _event, data in sse.events():
                if data == b"[DONE]":
                    return
                chunk = http.decode(data, "stream chunk")
                if isinstance(chunk, dict) and "error" in chunk:
                    status = (
                        chunk["error"].get("status") if isinstance(chunk["error"], dict) else None
                    )
                    raise error_from_body(status if isinstance(status, int) else 500, chunk)
                yield chunk
            # The body ended without [DONE]: what came may be any prefix of the answer.
            raise StreamTruncated("openai stream ended before [DONE]")
        finally:
            sse.close()

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Embeddings through ``/embeddings``."""
        body = {**request, "model": deployment.model}
        resp = await http.post_json(
            f"{deployment.api_base}/embeddings", _headers(deployment), body, timeout
        )
        if resp.status >= 400:
            raise error_from_response(resp)
        data = http.decode(resp.body, "embeddings")
        if not isinstance(data, dict) or "data" not in data:
            raise ProviderError("embeddings: upstream response has no 'data'")
        return data
