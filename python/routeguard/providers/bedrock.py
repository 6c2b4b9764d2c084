"""AWS Bedrock behind the OpenAI-shaped Provider: Converse and ConverseStream for chat (any
model Converse serves: Anthropic, Llama, Mistral, Nova...), InvokeModel for Titan and
Cohere embeddings.

Flow: an OpenAI chat request -> :func:`.converse.request_to_converse` (the translation)
-> ``POST {api_base}/model/{id}/converse``, signed with SigV4 (:mod:`.aws`) or carrying a
Bedrock API key -> :func:`.converse.response_from_converse`. A stream is the AWS event-stream
framing (:mod:`.eventstream`), each event turned into chunks by
:class:`StreamDecoder`. Errors come as ``x-amzn-ErrorType`` plus ``{"message"}``
(:func:`error_from_response`); in a stream, as exception messages.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any
from urllib.parse import quote

import msgspec

from routeguard.deployment import Deployment
from routeguard.errors import (
    ProviderError,
    StreamTruncated,
    UpstreamAuthError,
    error_for_status,
)
from routeguard.providers import blocks, http, wire
from routeguard.providers.base import CAPABILITIES, Json, check_params, refuse_unsupported
from routeguard.providers.blocks import structured_schema
from routeguard.providers.converse import (
    PARAMS,
    STOP_REASON_TO_FINISH,
    bad,
    family,
    request_to_converse,
    response_from_converse,
    usage_from_converse,
)
from routeguard.providers.eventstream import EventStreamDecoder, Message
from routeguard.providers.wire import token_count

_encoder = msgspec.json.Encoder()

# Bedrock's error types and the status each comes with (the ``x-amzn-ErrorType`` header, or
# ``:exception-type`` in a stream, where the first letter is lower-case).
ERROR_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "ExpiredTokenException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 502,  # 424 on the wire: the model failed on this request
    "ModelStreamErrorException": 502,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,  # the model is being loaded: retry after a while
    "ServiceQuotaExceededException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
# Types whose meaning the HTTP status does not carry.
_STATUS_FROM_TYPE = frozenset({"ModelErrorException", "ServiceQuotaExceededException"})
# What a ValidationException says when the prompt does not fit the model.
CONTEXT_HINTS = (
    "too long",
    "context limit",
    "context length",
    "context window",
    "maximum context",
    "exceeds the maximum",
)


# --------------------------------------------------------------------------- errors


def error_from(
    status: int | None,
    error_type: str,
    message: str,
    body: Any = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The ProviderError for a Bedrock error: by its HTTP status, or by its type when the
    status says less (an in-stream exception has none; 424 ModelErrorException; a quota
    answered as 400)."""
    kind = error_type[:1].upper() + error_type[1:]
    if status is None or kind in _STATUS_FROM_TYPE:
        status = ERROR_STATUS.get(kind, 500 if status is None else status)
    lowered = message.lower()
    ctx = status == 400 and any(h in lowered for h in CONTEXT_HINTS)
    return error_for_status(status, message, retry_after=retry_after, body=body, context_window=ctx)


def error_from_response(resp: http.HttpResponse) -> ProviderError:
    """The ProviderError for a whole Bedrock error response."""
    body = resp.json()
    kind = resp.headers.get("x-amzn-ErrorType") or resp.headers.get("x-amzn-errortype") or ""
    kind = kind.split(":", 1)[0]
    message = f"upstream status {resp.status}"
    if isinstance(body, dict):
        if not kind and isinstance(body.get("__type"), str):
            kind = body["__type"].rsplit("#", 1)[-1]
        text = body.get("message") or body.get("Message")
        if isinstance(text, str) and text:
            message = text
    return error_from(resp.status, kind, message, body, http.retry_after(resp.headers))


# --------------------------------------------------------------------------- stream


class StreamDecoder:
    """ConverseStream event-stream messages in, OpenAI ``chat.completion.chunk`` dicts out.

    ``messageStop`` completes the answer (the finish chunk); ``metadata``, which follows it,
    carries usage (the usage chunk) and ends the stream. An exception message raises its
    ProviderError.
    """

    terminator = "messageStop"

    def __init__(self, model: str, structured: bool = False) -> None:
        self.done = False
        self.complete = False
        self._out = blocks.ChunkMaker(f"chatcmpl-{uuid.uuid4().hex}", model, structured)

    def feed(self, msg: Message) -> list[Json]:
        """Translate one event-stream message into zero or more chunks."""
        kind = msg.header(":message-type") or "event"
        if kind == "exception":
            payload = _payload(msg)
            text = payload.get("message") or payload.get("Message") or "stream failed"
            raise error_from(None, msg.header(":exception-type"), str(text), payload)
        if kind == "error":
            code = msg.header(":error-code")
            raise error_from(None, code, msg.header(":error-message") or code or "stream error")
        event = msg.header(":event-type")
        payload = _payload(msg)
        out = self._out
        if event == "messageStart":
            return [out.chunk({"role": "assistant", "content": ""})]
        if event == "contentBlockStart":
            start = payload.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if not isinstance(use, dict):
                return []
            index = payload.get("contentBlockIndex")
            return out.tool_start(index, use.get("toolUseId"), use.get("name"))
        if event == "contentBlockDelta":
            delta = payload.get("delta")
            if not isinstance(delta, dict):
                return []
            if isinstance(delta.get("text"), str) and delta["text"]:
                return out.text(delta["text"])
            use = delta.get("toolUse")
            if isinstance(use, dict):
                return out.tool_input(payload.get("contentBlockIndex"), use.get("input"))
            return []  # reasoningContent, citation deltas
        if event == "messageStop":
            self.complete = True
            stop = payload.get("stopReason")
            return [
                out.chunk({}, blocks.finish_reason(stop, STOP_REASON_TO_FINISH, out.structured))
            ]
        if event == "metadata":
            self.done = True
            if not self.complete:
                raise StreamTruncated("bedrock stream sent metadata before messageStop")
            counted = usage_from_converse(payload.get("usage"))
            if counted is not None:
                return [out.usage_chunk(counted)]
        return []  # contentBlockStop, and event types added later

    def finish(self) -> list[Json]:
        """Nothing: a usage chunk, if any, went out with ``metadata``."""
        return []


class _EventStream:
    """A :class:`StreamDecoder` behind ``wire.stream``'s decoder contract: the body's raw
    bytes in, cut into event-stream messages, each translated until the stream is done."""

    def __init__(self, decoder: StreamDecoder) -> None:
        self._frames = EventStreamDecoder()
        self._decoder = decoder
        self.terminator = decoder.terminator

    @property
    def done(self) -> bool:
        """Whether the ``metadata`` event (or an error) ended the stream."""
        return self._decoder.done

    @property
    def complete(self) -> bool:
        """Whether ``messageStop`` arrived."""
        return self._decoder.complete

    def feed(self, event: str, data: bytes) -> Iterator[Json]:
        """The chunks of every whole message ``data`` completes, lazily: those before an
        exception message reach the caller before it raises."""
        for msg in self._frames.feed(data):
            yield from self._decoder.feed(msg)
            if self._decoder.done:
                return

    def finish(self) -> list[Json]:
        """The decoder's closing chunks (none: usage went out with ``metadata``)."""
        return self._decoder.finish()


class _Errors:
    """Bedrock's error responses (``x-amzn-ErrorType``), for ``wire.stream``."""

    def from_response(self, resp: http.HttpResponse) -> ProviderError:
        """The ProviderError for a whole Bedrock error response."""
        return error_from_response(resp)


ERRORS = _Errors()


def _payload(msg: Message) -> Json:
    if not msg.payload:
        return {}
    data = http.decode(msg.payload, "bedrock stream event")
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- embeddings


def _floats_b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _embed_inputs(request: Json) -> list[str]:
    raw = request.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise bad("embeddings 'input' must be a string or a list of strings", "input")
    return items


# --------------------------------------------------------------------------- provider


class BedrockProvider:
    """Provider for AWS Bedrock (Converse, ConverseStream, InvokeModel embeddings)."""

    name = "bedrock"
    capabilities = CAPABILITIES
    params = PARAMS

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming chat completion through Converse."""
        refuse_unsupported(self, "chat", request)
        request = check_params(self, request, deployment.drop_params)
        body = request_to_converse(request, deployment.model)
        data = await self._post(deployment, "converse", body, timeout)
        if not isinstance(data.get("output"), dict):
            raise ProviderError("bedrock converse: the answer has no output")
        structured = structured_schema(request) is not None
        return response_from_converse(data, deployment.model, structured)

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming chat completion through ConverseStream; usage comes last."""

        async def build() -> wire.Exchange:
            refuse_unsupported(self, "stream", request)
            req = check_params(self, request, deployment.drop_params)
            body = _encoder.encode(request_to_converse(req, deployment.model))
            url = _url(deployment, "converse-stream")
            headers = await _auth(deployment, url, body)
            headers["accept"] = "application/vnd.amazon.eventstream"
            return wire.Exchange(url, headers, body)

        decoder = StreamDecoder(deployment.model, structured_schema(request) is not None)
        return wire.stream(self.name, build, _EventStream(decoder), timeout, errors=ERRORS,
                           framing="bytes")  # fmt: skip

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Embeddings through InvokeModel: Titan (one text a call, run concurrently) or
        Cohere (up to 96 texts a call), in the OpenAI response shape."""
        refuse_unsupported(self, "embeddings")
        texts = _embed_inputs(request)
        fmt = request.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise bad(f"encoding_format must be float or base64, got {fmt!r}", "encoding_format")
        kind = family(deployment.model)
        vectors: list[list[float]]
        tokens: int | None
        if kind == "amazon":
            vectors, tokens = await self._titan(request, deployment, texts, timeout)
        elif kind == "cohere":
            vectors, tokens = await self._cohere(deployment, texts, timeout)
        else:
            raise bad(
                f"embeddings on bedrock are served for amazon.titan-embed-* and cohere.embed-* "
                f"models, not {deployment.model!r}",
                "model",
            )
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _floats_b64(v) if fmt == "base64" else v,
            }
            for i, v in enumerate(vectors)
        ]
        out: Json = {"object": "list", "data": data, "model": deployment.model}
        if tokens is not None:
            out["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return out

    async def _titan(
        self, request: Json, dep: Deployment, texts: list[str], timeout: float
    ) -> tuple[list[list[float]], int | None]:
        extra: Json = {}
        if isinstance(request.get("dimensions"), int):
            extra = {"dimensions": request["dimensions"], "normalize": True}
        answers = await _all([self._post(dep, "invoke", {"inputText": t, **extra}, timeout)
                              for t in texts])  # fmt: skip
        vectors = [_vector(a.get("embedding")) for a in answers]
        counts = [a.get("inputTextTokenCount") for a in answers]
        tokens = (
            sum(token_count(c) for c in counts) if all(isinstance(c, int) for c in counts) else None
        )
        return vectors, tokens

    async def _cohere(
        self, dep: Deployment, texts: list[str], timeout: float
    ) -> tuple[list[list[float]], int | None]:
        batches = [texts[i : i + 96] for i in range(0, len(texts), 96)]
        body = {"input_type": "search_document", "embedding_types": ["float"]}
        answers = await _all(
            [self._post(dep, "invoke", {**body, "texts": b}, timeout, counts=True) for b in batches]
        )
        vectors: list[list[float]] = []
        tokens: int | None = 0
        for a in answers:
            found = a.get("embeddings")
            if isinstance(found, dict):  # embedding_types given: {"float": [[...]]}
                found = found.get("float")
            if not isinstance(found, list):
                raise ProviderError("bedrock embeddings: the answer has no embeddings")
            vectors.extend(_vector(v) for v in found)
            count = a.get("_input_tokens")
            tokens = tokens + count if isinstance(count, int) and tokens is not None else None
        if len(vectors) != len(texts):
            raise ProviderError("bedrock embeddings: the answer has the wrong number of vectors")
        return vectors, tokens

    async def _post(
        self, dep: Deployment, action: str, body: Json, timeout: float, *, counts: bool = False
    ) -> Json:
        data = _encoder.encode(body)
        url = _url(dep, action)
        headers = await _auth(dep, url, data)
        headers["accept"] = "application/json"
        resp = await http.post_json(url, headers, data, timeout)
        if resp.status >= 400:
            raise error_from_response(resp)
        answer = http.decode(resp.body, f"bedrock {action}")
        if not isinstance(answer, dict):
            raise ProviderError(f"bedrock {action}: expected a JSON object")
        if counts:  # InvokeModel reports token counts in headers, not the body
            raw = resp.headers.get("x-amzn-bedrock-input-token-count")
            if raw is not None and raw.isdigit():
                answer["_input_tokens"] = int(raw)
        return answer


# InvokeModel calls one embeddings request may have in flight at once (Titan takes one
# text a call): enough to be quick, few enough not to trip the account's rate limit alone.
EMBED_CONCURRENCY = 8


async def _all(calls: list[Coroutine[Any, Any, Json]]) -> list[Json]:
    """Every call's answer in order, at most EMBED_CONCURRENCY at a time; the first failure
    cancels the rest and is raised."""
    gate = asyncio.Semaphore(EMBED_CONCURRENCY)

    async def one(call: Coroutine[Any, Any, Json]) -> Json:
        async with gate:
            return await call

    tasks = [asyncio.ensure_future(one(c)) for c in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _vector(value: Any) -> list[float]:
    if not isinstance(value, list) or not value:
        raise ProviderError("bedrock embeddings: the answer has no embedding")
    return [float(x) for x in value]


def _url(dep: Deployment, action: str) -> str:
    # The model id (with its ':' and, for ARNs, '/') is one path segment, percent-encoded.
    return f"{dep.api_base}/model/{quote(dep.model, safe='')}/{action}"


async def _auth(dep: Deployment, url: str, body: bytes) -> dict[str, str]:
    """The request's headers with its credentials: a Bedrock API key as a bearer token, or
    a SigV4 signature over the body."""
    headers: dict[str, str] = {**dep.headers, "content-type": "application/json"}
    if dep.api_key is not None:
        headers["authorization"] = f"Bearer {dep.api_key.get()}"
        return headers
    if dep.aws is None:
        raise UpstreamAuthError("bedrock: the deployment has no AWS region or credentials")
    from routeguard.providers import aws

    try:
        return await aws.sign(dep.aws, url, headers, body)
    except ImportError:
        raise UpstreamAuthError(
            "bedrock: SigV4 signing needs botocore: pip install 'routeguard[bedrock]'"
        ) from None
