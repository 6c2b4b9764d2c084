"""Google Vertex AI behind the OpenAI-shaped Provider: Gemini (``publishers/google``) and
Claude (``publishers/anthropic``), with OAuth bearer tokens from :mod:`.gcp_auth`.

Only the URL, the auth and a few body fields differ from the direct APIs, so the
translations are theirs: Gemini's ``generateContent`` / ``streamGenerateContent?alt=sse``
bodies and answers come from :mod:`.gemini`, Claude's Messages bodies and SSE events from
:mod:`.anthropic` (the body without ``model``, with ``anthropic_version``, sent to
``:rawPredict`` / ``:streamRawPredict``; token counts to ``count-tokens:rawPredict``, the
model in the body). Embeddings use ``:predict`` with ``instances`` /
``predictions``. URLs are
``{api_base}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}``,
``api_base`` being ``https://{location}-aiplatform.googleapis.com`` (``aiplatform.googleapis.com``
for ``global``) unless configured. A 401 drops the cached token, so the next attempt gets
a new one.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

from routeguard.deployment import Deployment
from routeguard.errors import ProviderError, UpstreamAuthError, UpstreamBadRequest
from routeguard.providers import anthropic, blocks, client_headers, gcp_auth, gemini, wire
from routeguard.providers.base import (
    CAPABILITIES,
    Json,
    StreamDecoder,
    check_params,
    refuse_unsupported,
    unsupported,
)
from routeguard.providers.wire import token_count

# Claude on Vertex takes the API version in the body, not in a header.
ANTHROPIC_VERSION = "vertex-2023-10-16"
# Instances per :predict call: 250 for the text-embedding models, one for gemini-embedding.
PREDICT_BATCH = 250
# Vertex answers Claude's model errors in Anthropic's shape and its own (quota, auth) in
# Google's: both are {"error": {"message", ...}}, so one format reads them, with both
# families' context-window phrases and Google's RetryInfo.
CLAUDE_ERRORS = wire.ErrorFormat(
    context_hints=anthropic.ERRORS.context_hints + gemini.ERRORS.context_hints,
    unwrap_list=True,
    refine=gemini.ERRORS.refine,
)


def default_api_base(location: str) -> str:
    """Vertex AI's endpoint for ``location`` (the global one has no region prefix)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def publisher_of(model: str) -> str:
    """The Model Garden publisher serving ``model`` on Vertex (Claude: anthropic)."""
    return "anthropic" if model.startswith("claude") else "google"


async def _auth(
    dep: Deployment, timeout: float
) -> tuple[str, gcp_auth.TokenSource, dict[str, str]]:
    """(project, token source, auth headers) for one call of ``dep``."""
    target = dep.vertex
    if target is None:  # built by hand without vertex settings: a bug, said plainly
        raise ProviderError(f"deployment {dep.id} has no vertex settings")
    source = gcp_auth.source_for(target)
    token = await source.token(timeout)
    project = target.project or await source.project()
    if not project:
        raise UpstreamAuthError(
            "vertex_ai: no project: set vertex_project on the deployment (or VERTEXAI_PROJECT)"
        )
    headers = {"authorization": f"Bearer {token}"}
    if source.quota_project:  # user credentials bill their quota project, as gcloud does
        headers["x-goog-user-project"] = source.quota_project
    return project, source, headers


def _url(dep: Deployment, project: str, publisher: str, method: str, model: str = "") -> str:
    assert dep.vertex is not None
    location = dep.vertex.location
    return (
        f"{dep.api_base}/v1/projects/{project}/locations/{location}"
        f"/publishers/{publisher}/models/{model or dep.model}:{method}"
    )


def _forget_refused(err: ProviderError, source: gcp_auth.TokenSource, auth: dict[str, str]) -> None:
    """Drop the call's token when the upstream said it is not (or no longer) valid."""
    if not isinstance(err, UpstreamAuthError):
        return
    body = err.body[0] if isinstance(err.body, list) and err.body else err.body
    e = body.get("error") if isinstance(body, dict) else None
    if isinstance(e, dict) and (
        e.get("code") == 401 or e.get("status") == "UNAUTHENTICATED"
        or e.get("type") == "authentication_error"
    ):  # fmt: skip
        source.invalidate(auth["authorization"].removeprefix("Bearer "))


def _headers(dep: Deployment, publisher: str, auth: dict[str, str]) -> dict[str, str]:
    """The call's headers: the deployment's, the token, and for Claude the client's
    ``anthropic-beta`` (a header on Vertex too, as Anthropic's Vertex SDK sends it)."""
    h = {**dep.headers, **auth}
    if publisher == "anthropic":
        betas = client_headers.betas(h.pop("anthropic-beta", None))
        if betas:
            h["anthropic-beta"] = ",".join(betas)
    return h


async def _post(
    dep: Deployment,
    publisher: str,
    method: str,
    body: Json,
    timeout: float,
    *,
    model: str = "",
    **kw: Any,
) -> Json:
    """POST to the deployment's model (or ``model``: a pseudo-model such as
    ``count-tokens``) with a bearer token, dropping the token if Vertex refuses it."""
    project, source, auth = await _auth(dep, timeout)
    try:
        return await wire.post(
            _url(dep, project, publisher, method, model), _headers(dep, publisher, auth), body,
            timeout, **kw,
        )  # fmt: skip
    except ProviderError as err:
        _forget_refused(err, source, auth)
        raise


async def _stream(
    name: str,
    dep: Deployment,
    publisher: str,
    method: str,
    make_body: Callable[[], Json],
    decoder: StreamDecoder,
    timeout: float,
    errors: wire.ErrorFormat,
) -> AsyncIterator[Json]:
    """wire.stream with a token fetched first; nothing runs before the first iteration."""
    body = make_body()  # a request we cannot translate fails before any token is fetched
    project, source, auth = await _auth(dep, timeout)
    url = _url(dep, project, publisher, method)
    exchange = wire.Exchange(url, _headers(dep, publisher, auth), body)
    try:
        chunks = wire.stream(name, lambda: exchange, decoder, timeout, errors=errors)
        try:
            async for chunk in chunks:
                yield chunk
        finally:  # closing early drops the upstream connection at once
            await chunks.aclose()  # type: ignore[attr-defined]
    except ProviderError as err:
        _forget_refused(err, source, auth)
        raise


# --------------------------------------------------------------------------- Gemini


class VertexGeminiProvider:
    """Gemini models on Vertex AI (``publishers/google``), embeddings through ``:predict``."""

    name = "vertex_ai"
    capabilities = CAPABILITIES
    params = gemini.PARAMS

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming chat completion (``:generateContent``)."""
        refuse_unsupported(self, "chat", request)
        request = check_params(self, request, deployment.drop_params)
        body = gemini.request_to_gemini(request)
        data = await _post(
            deployment, "google", "generateContent", body, timeout,
            errors=gemini.ERRORS, what="vertex_ai response",
        )  # fmt: skip
        return gemini.response_from_gemini(data, deployment.model)

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming chat completion (``:streamGenerateContent?alt=sse``), usage last."""

        def body() -> Json:
            refuse_unsupported(self, "stream", request)
            return gemini.request_to_gemini(check_params(self, request, deployment.drop_params))

        return _stream(
            self.name, deployment, "google", "streamGenerateContent?alt=sse", body,
            gemini.StreamDecoder(deployment.model), timeout, gemini.ERRORS,
        )  # fmt: skip

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Embeddings through ``:predict``, in OpenAI's response shape and input order."""
        refuse_unsupported(self, "embeddings")
        calls = [
            _post(
                deployment, "google", "predict", body, timeout, errors=gemini.ERRORS,
                what="vertex_ai embeddings", require=("predictions", list),
            )
            for body in predict_requests(request, deployment.model)
        ]  # fmt: skip
        answers = await asyncio.gather(*calls)
        return predictions_to_openai(list(answers), request, deployment.model)


def predict_requests(request: Json, model: str) -> list[Json]:
    """The ``:predict`` bodies for an OpenAI embeddings request (PREDICT_BATCH inputs each;
    one for gemini-embedding models, which take a single instance)."""
    raw = request.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise _bad("embeddings 'input' must be a string or a non-empty list of strings", "input")
    if not all(isinstance(x, str) and x for x in inputs):
        raise _bad("embeddings take non-empty text; token-id arrays are not supported", "input")
    size = 1 if model.startswith("gemini-embedding") else PREDICT_BATCH
    parameters: Json = {}
    if isinstance(request.get("dimensions"), int):
        parameters["outputDimensionality"] = request["dimensions"]
    bodies = []
    for i in range(0, len(inputs), size):
        body: Json = {"instances": [{"content": text} for text in inputs[i : i + size]]}
        if parameters:
            body["parameters"] = parameters
        bodies.append(body)
    return bodies


def predictions_to_openai(answers: list[Json], request: Json, model: str) -> Json:
    """OpenAI's embeddings response from the ``:predict`` answers, in input order; usage is
    the sum of the predictions' token counts when every one reports it."""
    as_base64 = request.get("encoding_format") == "base64"
    data: list[Json] = []
    tokens, reported = 0, True
    for answer in answers:
        for p in answer["predictions"]:
            emb = p.get("embeddings") if isinstance(p, dict) else None
            values = emb.get("values") if isinstance(emb, dict) else None
            if not isinstance(values, list):
                raise ProviderError("vertex_ai embeddings: a prediction has no embeddings.values")
            assert isinstance(emb, dict)
            stats = emb.get("statistics")
            count = stats.get("token_count") if isinstance(stats, dict) else None
            if isinstance(count, int | float) and not isinstance(count, bool):
                tokens += int(count)
            else:
                reported = False
            vector: Any = values
            if as_base64:  # OpenAI's base64 format: little-endian float32
                vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append({"object": "embedding", "index": len(data), "embedding": vector})
    out: Json = {"object": "list", "data": data, "model": model}
    if reported and data:
        out["usage"] = {"prompt_tokens": token_count(tokens), "total_tokens": token_count(tokens)}
    return out


def _bad(message: str, param: str | None = None) -> UpstreamBadRequest:
    err = UpstreamBadRequest(f"vertex_ai: {message}")
    err.param = param
    return err


# --------------------------------------------------------------------------- Claude


def request_to_vertex_claude(request: Json, model: str) -> Json:
    """An Anthropic Messages body as Vertex takes it: no ``model`` (it is in the URL) and
    ``anthropic_version`` in the body."""
    body = anthropic.request_to_anthropic(request, model)
    del body["model"]
    return {"anthropic_version": ANTHROPIC_VERSION, **body}


class VertexAnthropicProvider:
    """Claude models on Vertex AI (``publishers/anthropic``, ``:rawPredict``)."""

    name = "vertex_ai_anthropic"
    capabilities = CAPABILITIES - {"embeddings"}
    params = anthropic.PARAMS

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming chat completion (``:rawPredict``)."""
        refuse_unsupported(self, "chat", request)
        request = check_params(self, request, deployment.drop_params)
        body = request_to_vertex_claude(request, deployment.model)
        data = await _post(
            deployment, "anthropic", "rawPredict", body, timeout,
            errors=CLAUDE_ERRORS, what="vertex_ai claude message", require=("content", list),
        )  # fmt: skip
        return anthropic.response_from_anthropic(
            data, blocks.structured_schema(request) is not None
        )

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming chat completion (``:streamRawPredict``, Anthropic's SSE events)."""

        def body() -> Json:
            refuse_unsupported(self, "stream", request)
            req = check_params(self, request, deployment.drop_params)
            return {**request_to_vertex_claude(req, deployment.model), "stream": True}

        decoder = anthropic.StreamDecoder(blocks.structured_schema(request) is not None)
        return _stream(
            self.name, deployment, "anthropic", "streamRawPredict", body, decoder, timeout,
            CLAUDE_ERRORS,
        )  # fmt: skip

    async def count_tokens(self, body: Json, deployment: Deployment, timeout: float) -> int:
        """Vertex's Claude token count (``publishers/anthropic/models/count-tokens:rawPredict``,
        the model in the body, as Anthropic's Vertex SDK sends it): its ``input_tokens``."""
        sent = {"anthropic_version": ANTHROPIC_VERSION, **body, "model": deployment.model}
        data = await _post(
            deployment, "anthropic", "rawPredict", sent, timeout, model="count-tokens",
            errors=CLAUDE_ERRORS, what="vertex_ai claude token count",
            require=("input_tokens", int),
        )  # fmt: skip
        return int(data["input_tokens"])

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Claude has no embeddings: always raises UpstreamBadRequest."""
        raise unsupported(self, "embeddings")
