"""OpenAI Chat Completions, Responses and Embeddings (and any server that speaks them).

Our internal shape *is* OpenAI's, so translation is small: swap in the deployment's model
name, ask for usage on streams (cost needs it), and map error bodies onto ProviderErrors.
The Responses API passes through (``responses``, ``responses_stream``): the client's body with
the deployment's model, the ``response`` object or its events back unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from routeguard.deployment import Deployment
from routeguard.errors import ProviderError
from routeguard.providers import http, wire
from routeguard.providers.base import (
    CAPABILITIES,
    OPENAI_CHAT_PARAMS,
    Json,
    StreamDecoder,
    refuse_unsupported,
)

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


# Events that end a Responses stream (an ``error`` event ends it too).
RESPONSES_END = frozenset({"response.completed", "response.incomplete", "response.failed"})
# A Responses ``error`` event's code -> the HTTP status the same failure gets as a whole answer.
_EVENT_STATUS = {"rate_limit_exceeded": 429, "server_error": 500, "insufficient_quota": 429,
                 "invalid_prompt": 400, "context_length_exceeded": 400}  # fmt: skip


class ResponsesEventDecoder:
    """Responses API SSE events in, the same event objects out. A terminal event (or an
    ``error`` event) ends the stream; an ``error`` event before any other raises its
    ProviderError (so the gateway can still retry or fall back), later it is relayed."""

    terminator = "response.completed"

    def __init__(self, errors: wire.ErrorFormat) -> None:
        self._errors = errors
        self._seen = 0
        self.done = False

    @property
    def complete(self) -> bool:
        """Whether a terminal event arrived."""
        return self.done

    def feed(self, event: str, data: bytes) -> list[Json]:
        """The event's object."""
        obj = http.decode(data, "responses event")
        if not isinstance(obj, dict):
            raise ProviderError("responses event: expected a JSON object")
        kind = obj.get("type") or event
        if kind == "error":
            if self._seen == 0:
                inner = obj.get("error")
                err: Json = inner if isinstance(inner, dict) else obj
                code = str(err.get("code") or "")
                status = err.get("status") if isinstance(err.get("status"), int) else None
                raise self._errors.from_body(status or _EVENT_STATUS.get(code, 500), {"error": err})
            self.done = True
        elif kind in RESPONSES_END:
            self.done = True
        self._seen += 1
        return [obj]

    def finish(self) -> list[Json]:
        """Nothing: the terminal event closed the stream."""
        return []


def responses_body(body: Json, deployment: Deployment, stream: bool) -> Json:
    """The client's Responses body for ``deployment``: its model, ``stream`` as asked."""
    out = {**body, "model": deployment.model}
    if stream:
        out["stream"] = True
    else:
        out.pop("stream", None)
        out.pop("stream_options", None)
    return out


class OpenAIProvider:
    """Provider for the OpenAI wire format.

    A server that speaks it at other addresses or with other auth (Azure OpenAI) subclasses
    this and overrides :meth:`url`, :meth:`responses_url`, :meth:`auth_headers`,
    :attr:`errors` and :meth:`chunk_decoder`; the calls themselves are written once, here.
    """

    name = "openai"
    capabilities = CAPABILITIES
    params = OPENAI_CHAT_PARAMS  # its own wire format: every field passes through
    errors: wire.ErrorFormat = ERRORS

    def url(self, deployment: Deployment, endpoint: str) -> str:
        """Where ``endpoint`` (``chat/completions``, ``embeddings``) of ``deployment`` is."""
        return f"{deployment.api_base}/{endpoint}"

    def responses_url(self, deployment: Deployment) -> str:
        """Where the Responses API of ``deployment`` is."""
        return self.url(deployment, "responses")

    async def auth_headers(self, deployment: Deployment) -> dict[str, str]:
        """The call's headers: the deployment's, and its key as a bearer token."""
        return _headers(deployment)

    def chunk_decoder(self) -> StreamDecoder:
        """A decoder for one chat stream's events."""
        return ChunkDecoder()

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming chat completion."""
        refuse_unsupported(self, "chat", request)
        body = {**request, "model": deployment.model}
        body.pop("stream", None)
        body.pop("stream_options", None)
        return await self._post(deployment, "chat/completions", body, timeout, "chat completion",
                                "choices")  # fmt: skip

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming chat completion; the last chunk carries usage."""

        async def build() -> wire.Exchange:
            refuse_unsupported(self, "stream", request)
            headers = await self.auth_headers(deployment)
            body = {
                **request,
                "model": deployment.model,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            return wire.Exchange(self.url(deployment, "chat/completions"), headers, body)

        return wire.stream(self.name, build, self.chunk_decoder(), timeout, errors=self.errors)

    async def responses(self, body: Json, deployment: Deployment, timeout: float) -> Json:
        """One Responses API call passed through: the ``response`` object as sent."""
        return await wire.post(
            self.responses_url(deployment),
            await self.auth_headers(deployment),
            responses_body(body, deployment, stream=False),
            timeout,
            errors=self.errors,
            what="response",
            require=("output", list),
        )

    def responses_stream(
        self, body: Json, deployment: Deployment, timeout: float
    ) -> AsyncIterator[Json]:
        """A streamed Responses API call passed through: its events as sent."""

        async def build() -> wire.Exchange:
            headers = await self.auth_headers(deployment)
            sent = responses_body(body, deployment, stream=True)
            return wire.Exchange(self.responses_url(deployment), headers, sent)

        decoder = ResponsesEventDecoder(self.errors)
        return wire.stream(self.name, build, decoder, timeout, errors=self.errors)

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Embeddings through ``/embeddings``."""
        refuse_unsupported(self, "embeddings")
        body = {**request, "model": deployment.model}
        return await self._post(deployment, "embeddings", body, timeout, "embeddings", "data")

    async def _post(
        self, deployment: Deployment, endpoint: str, body: Json, timeout: float, what: str,
        require: str,
    ) -> Json:  # fmt: skip
        return await wire.post(
            self.url(deployment, endpoint),
            await self.auth_headers(deployment),
            body,
            timeout,
            errors=self.errors,
            what=what,
            require=(require, list),
        )
