"""OpenAI Chat Completions and Embeddings (and any server that speaks them).

Our internal shape *is* OpenAI's, so translation is small: swap in the deployment's model
name, ask for usage on streams (cost needs it), and map error bodies onto ProviderErrors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from routeguard.deployment import Deployment
from routeguard.providers import http, wire
from routeguard.providers.base import CAPABILITIES, OPENAI_CHAT_PARAMS, Json, refuse_unsupported

ERRORS = wire.ErrorFormat(
    context_hints=("context_length_exceeded", "maximum context length", "context window"),
    context_codes=frozenset({"context_length_exceeded"}),
)


def _headers(dep: Deployment) -> dict[str, str]:
    h = dict(dep.headers)
    if dep.api_key is not None:
        h["authorization"] = f"Bearer {dep.api_key.get()}"
    return h


class ChunkDecoder:
    """OpenAI SSE events in, the same chunks out: ``[DONE]`` ends the stream, and an
    ``{"error": ...}`` event raises its ProviderError."""

    terminator = "[DONE]"

    def __init__(self) -> None:
        self.done = False

    @property
    def complete(self) -> bool:
        """Whether ``[DONE]`` arrived."""
        return self.done

    def feed(self, event: str, data: bytes) -> list[Json]:
        """The event's chunk (none for ``[DONE]``)."""
        if data == b"[DONE]":
            self.done = True
            return []
        chunk = http.decode(data, "stream chunk")
        if isinstance(chunk, dict) and "error" in chunk:
            err = chunk["error"]
            status = err.get("status") if isinstance(err, dict) else None
            raise ERRORS.from_body(status if isinstance(status, int) else 500, chunk)
        return [chunk]

    def finish(self) -> list[Json]:
        """Nothing: the usage chunk came before ``[DONE]``."""
        return []


class OpenAIProvider:
    """Provider for the OpenAI wire format."""

    name = "openai"
    capabilities = CAPABILITIES
    params = OPENAI_CHAT_PARAMS  # its own wire format: every field passes through

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming chat completion."""
        refuse_unsupported(self, "chat", request)
        body = {**request, "model": deployment.model}
        body.pop("stream", None)
        body.pop("stream_options", None)
        url = f"{deployment.api_base}/chat/completions"
        return await wire.post(
            url,
            _headers(deployment),
            body,
            timeout,
            errors=ERRORS,
            what="chat completion",
            require=("choices", list),
        )

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming chat completion; the last chunk carries usage."""

        def build() -> wire.Exchange:
            refuse_unsupported(self, "stream", request)
            body = {
                **request,
                "model": deployment.model,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            url = f"{deployment.api_base}/chat/completions"
            return wire.Exchange(url, _headers(deployment), body)

        return wire.stream(self.name, build, ChunkDecoder(), timeout, errors=ERRORS)

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Embeddings through ``/embeddings``."""
        refuse_unsupported(self, "embeddings")
        body = {**request, "model": deployment.model}
        url = f"{deployment.api_base}/embeddings"
        return await wire.post(
            url,
            _headers(deployment),
            body,
            timeout,
            errors=ERRORS,
            what="embeddings",
            require=("data", list),
        )
