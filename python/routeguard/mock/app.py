"""The ASGI app of the simulated upstream: routing and the life of one request.

A request flows: route (which wire format, which endpoint) → read and decode the body →
record it in the journal → ``slow-MS`` sleep → auth (``bad-key`` → 401) → JSON and field
validation → injected ``error-NNN`` → ``flaky-P`` → ``midstream-error`` on a non-stream
(500) → ``ctx-N`` window check → the deterministic answer, sent whole after ``ttft`` or
streamed with pacing. Every failure on the way is a :class:`Fault`, rendered in the
endpoint's own error shape. Token counting (``/v1/messages/count_tokens``, Vertex's
``count-tokens:rawPredict``, ``:countTokens``) honours ``slow-MS`` and ``bad-key`` (Claude's
also ``error-NNN``) but no other token; ``GET /v1/models`` only ``bad-key``.
Vertex AI paths (``/v1/projects/...``) also need a live bearer token from ``POST /token``,
the simulated Google OAuth endpoint, which is not journaled (:mod:`.vertex_wire`).
Raw ASGI and msgspec only: no framework, no per-request logging.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from routeguard.mock import (
    anthropic_wire,
    azure_wire,
    bedrock_wire,
    gemini_wire,
    openai_wire,
    responses_wire,
    vertex_wire,
)
from routeguard.mock.answers import Answer, Prompt, answer, new_id
from routeguard.mock.behaviour import Behaviour, FlakyCounters, Latency, behaviour_for
from routeguard.mock.faults import Fault
from routeguard.mock.journal import (
    Journal,
    RecordedRequest,
    recorded_headers,
)
from routeguard.mock.meanings import Meanings
from routeguard.mock.transport import (
    JSON_HEADERS,
    BodyTooLarge,
    Headers,
    Pacer,
    Receive,
    Scope,
    Send,
    StreamPlan,
    read_body,
    send_body,
    send_stream,
)

_decode = msgspec.json.decode

BAD_KEY = "bad-key"
"""The one API key the mock refuses (401), in any of the places a key can travel."""


@dataclass(frozen=True, slots=True)
class _Wire:
    render_fault: Callable[[Fault, str | None], tuple[int, Headers, bytes]]
    context_fault: Callable[[int, int, int | None], Fault | None]
    invalid_json: str
    id_header: bytes | None


_OPENAI = _Wire(
    openai_wire.render_fault,
    openai_wire.context_fault,
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)",
    b"x-request-id",
)
_ANTHROPIC = _Wire(
    anthropic_wire.render_fault,
    anthropic_wire.context_fault,
    "There was an issue with your request body: invalid JSON",
    b"request-id",
)
_GEMINI = _Wire(
    gemini_wire.render_fault,
    gemini_wire.context_fault,
    "Invalid JSON payload received. Unexpected token.",
    None,
)

# Vertex AI: Gemini and Claude behind Google's errors and OAuth (routeguard.mock.vertex_wire).
_VERTEX_GEMINI = _Wire(
    vertex_wire.render_gemini_fault,
    gemini_wire.context_fault,
    "Invalid JSON payload received. Unexpected token.",
    None,
)
_VERTEX_CLAUDE = _Wire(
    vertex_wire.render_claude_fault,
    vertex_wire.claude_context_fault,
    "There was an issue with your request body: invalid JSON",
    None,
)
_VERTEX = (_VERTEX_GEMINI, _VERTEX_CLAUDE)
_AZURE = _Wire(
    azure_wire.render_fault,
    openai_wire.context_fault,
    _OPENAI.invalid_json,
    b"x-request-id",
)
_BEDROCK = _Wire(
    bedrock_wire.render_fault,
    bedrock_wire.context_fault,
    "Malformed input request, please reformat your input and try again.",
    b"x-amzn-requestid",
)

_GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/", "/v1alpha/models/")
_GEMINI_ACTIONS = frozenset(
    (
        "generateContent",
        "streamGenerateContent",
        "embedContent",
        "batchEmbedContents",
        "countTokens",
    )
)


@dataclass(slots=True)
class _Request:
    """What the handlers need of one HTTP request."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: Any
    model: str | None
    wire: _Wire
    # The Gemini action (``generateContent``...) or the endpoint path for the others.
    endpoint: str
    raw: bytes = b""  # the body as received (a SigV4 signature covers it)
    raw_path: str = ""  # the path as sent, escapes kept (likewise)
    query_string: bytes = b""


class MockApp:
    """The simulated upstream as an ASGI app (``create_mock_app`` builds one).

    ``journal`` records the requests received; ``reset()`` clears it and the flaky counters.
    """

    def __init__(
        self,
        *,
        ttft: float = 0.0,
        tokens_per_s: float | None = None,
        meanings: Meanings | None = None,
    ) -> None:
        if ttft < 0 or (tokens_per_s is not None and tokens_per_s < 0):
            raise ValueError(
                f"mock upstream latency must be non-negative: ttft={ttft}, "
                f"tokens_per_s={tokens_per_s}"
            )
        self.latency = Latency(ttft, tokens_per_s or None)
        self.journal = Journal()
        self.flaky = FlakyCounters()
        self.oauth = vertex_wire.GoogleOAuth()  # Vertex's token endpoint and its tokens
        # access key id -> secret: the simulated Bedrock verifies SigV4 signatures with it
        self.aws_credentials = dict(bedrock_wire.SIM_AWS_CREDENTIALS)
        self.meanings = meanings  # answer by meaning (one answer per cluster of questions)
        self.responses = responses_wire.ResponseStore()  # for previous_response_id

    def reset(self) -> None:
        """Forget recorded requests and flaky counters (as if the server had just started)."""
        self.journal.clear()
        self.flaky.reset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (``http`` and ``lifespan`` scopes)."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/health":
            await send_body(send, 200, JSON_HEADERS, b'{"status":"ok"}')
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if path == vertex_wire.TOKEN_PATH and method == "POST":  # not journaled: no API call
            url = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}{path}"
            form = await read_body(receive)
            if self.oauth.delay > 0:
                await asyncio.sleep(self.oauth.delay)
            await send_body(send, *self.oauth.grant(form, url))
            return
        query: dict[str, str] = {}
        if scope.get("query_string"):
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        pacer = Pacer(receive)
        model: str | None = None
        wire = _AZURE if path.startswith("/openai/") else _OPENAI
        try:
            wire, endpoint, model = _route(path, headers, query)
            try:
                raw = await read_body(receive)
            except BodyTooLarge:
                raise Fault(413, "request body is over the mock upstream's 64 MiB limit") from None
            body: Any = None
            bad_json = False
            if raw:
                try:
                    body = _decode(raw)
                except msgspec.DecodeError:
                    bad_json = True
            if wire is _AZURE and model is not None and isinstance(body, dict):
                body.setdefault("model", model)  # the deployment named in the path
            if model is None and isinstance(body, dict) and isinstance(body.get("model"), str):
                model = body["model"]
            stream = isinstance(body, dict) and body.get("stream") is True
            if endpoint in ("streamGenerateContent", "streamRawPredict", "converse-stream"):
                stream = True
            self.journal.add(
                RecordedRequest(method, path, query, model, stream, recorded_headers(headers), body)
            )
            raw_path = scope.get("raw_path") or path.encode()
            request = _Request(
                method, path, headers, query, body, model, wire, endpoint, raw,
                raw_path.decode("latin-1"), scope.get("query_string") or b"",
            )  # fmt: skip
            await self._handle(request, bad_json, send, pacer)
        except Fault as fault:
            if behaviour_for(model or "", headers.get("x-mock-behaviour")).echo_headers:
                fault.echo = ", ".join(f"{k}: {v}" for k, v in headers.items())
            await _send_fault(send, wire, fault, model)
        except Exception as exc:  # a bug in the mock: say so in the format, never a traceback
            bug = Fault(500, f"mock upstream bug: {exc!r}")
            await _send_fault(send, wire, bug, model)
        finally:
            pacer.close()

    async def _handle(self, req: _Request, bad_json: bool, send: Send, pacer: Pacer) -> None:
        if req.endpoint == "":
            raise Fault(404, f"Invalid URL ({req.method} {req.path})")
        if req.method == "GET":
            if req.endpoint != "/v1/models":
                raise Fault(405, f"Method GET is not allowed for {req.path}")
            _check_key(req)
            body = (
                anthropic_wire.models_body()
                if "anthropic-version" in req.headers
                else openai_wire.models_body()
            )
            await send_body(send, 200, _ok_headers(req.wire), body)
            return
        if req.method != "POST" or req.endpoint == "/v1/models":
            raise Fault(405, f"Method {req.method} is not allowed for {req.path}")

        behaviour = behaviour_for(req.model or "", req.headers.get("x-mock-behaviour"))
        latency = self.latency.with_headers(
            req.headers.get("x-mock-ttft-ms"), req.headers.get("x-mock-tokens-per-s")
        )
        if behaviour.slow_ms and not await pacer.sleep(behaviour.slow_ms / 1000.0):
            return  # the client gave up (timed out): nobody to answer
        self._check_key(req)
        if req.wire in _VERTEX:
            self.oauth.check_bearer(req.headers)
        if bad_json or not isinstance(req.body, dict):
            raise Fault(400, req.wire.invalid_json)
        if req.wire is _AZURE and azure_wire.CONTENT_FILTER_TOKEN in (req.model or ""):
            raise azure_wire.content_filter_fault()
        if req.endpoint == "invoke":
            self._inject(behaviour, req.model, stream=False)
            body, extra = bedrock_wire.invoke_embeddings(req.body, req.model or "", behaviour.ctx)
            if latency.ttft > 0 and not await pacer.sleep(latency.ttft):
                return
            await send_body(send, 200, [*_ok_headers(req.wire), *extra], body)
            return

        if req.endpoint in ("/v1/embeddings", "embedContent", "batchEmbedContents", "predict"):
            self._inject(behaviour, req.model, stream=False)
            body = _embed(req, behaviour.ctx)
            await _answer_after(pacer, latency.ttft, send, req.wire, body)
            return
        if req.endpoint in ("/v1/messages/count_tokens", "count-tokens"):
            asked = req.body if req.wire is _ANTHROPIC else vertex_wire.claude_count_body(req.body)
            prompt = anthropic_wire.parse_messages(asked)
            if behaviour.error is not None:  # a proxy's fallback to its own count is tested
                raise Fault(behaviour.error, injected=f"error-{behaviour.error}")
            await send_body(
                send, 200, _ok_headers(req.wire), anthropic_wire.count_tokens_body(prompt)
            )
            return
        if req.endpoint == "countTokens":
            body = gemini_wire.count_tokens_body(req.body, req.model or "")
            await send_body(send, 200, _ok_headers(req.wire), body)
            return

        # A chat request: parse it in its format, then decide and render.
        prompt, render, stream_plan = _parse_chat(req, self.meanings, self.responses)
        self._inject(behaviour, req.model, stream=prompt.stream)
        if behaviour.ctx is not None:
            fault = req.wire.context_fault(prompt.prompt_tokens, behaviour.ctx, prompt.max_tokens)
            if fault is not None:
                raise fault
        if prompt.stream:
            plan = stream_plan(not behaviour.no_usage)
            finished = await send_stream(
                send,
                pacer,
                plan,
                latency,
                midstream_error=behaviour.midstream,
                extra_headers=_id_header(req.wire),
                truncate=behaviour.truncate,
            )
            if not finished:
                self.journal.abandon()
            return
        body, tokens = render()
        if behaviour.no_usage:
            body = _without_usage(body)
        delay = latency.ttft
        if latency.tokens_per_s:
            delay += tokens / latency.tokens_per_s
        await _answer_after(pacer, delay, send, req.wire, body)

    def _check_key(self, req: _Request) -> None:
        if req.wire is _BEDROCK:
            bedrock_wire.check_auth(
                req.method, req.raw_path, req.query_string, req.headers, req.raw,
                self.aws_credentials, BAD_KEY,
            )  # fmt: skip
        elif req.wire is _AZURE:
            azure_wire.check_auth(req.headers, BAD_KEY)
        else:
            _check_key(req)

    def _inject(self, behaviour: Behaviour, model: str | None, *, stream: bool) -> None:
        if behaviour.error is not None:
            raise Fault(behaviour.error, injected=f"error-{behaviour.error}")
        if behaviour.content_policy:
            raise Fault(
                400,
                "Your request was rejected as a result of our safety system.",
                code="content_policy_violation",
                injected="content-policy",
            )
        if behaviour.flaky and self.flaky.should_fail(model or "", behaviour.flaky):
            raise Fault(503, injected=f"flaky-{behaviour.flaky}")
        if behaviour.midstream and not stream:
            raise Fault(500, injected="midstream-error")


def create_mock_app(
    *, ttft: float = 0.0, tokens_per_s: float | None = None, meanings: Meanings | None = None
) -> MockApp:
    """The simulated upstream as an ASGI app, with default latency ``ttft`` / ``tokens_per_s``
    (and answering by meaning with ``meanings``)."""
    return MockApp(ttft=ttft, tokens_per_s=tokens_per_s, meanings=meanings)


# --- routing and helpers -----------------------------------------------------------------------


def _route(
    path: str, headers: dict[str, str], query: dict[str, str]
) -> tuple[_Wire, str, str | None]:
    """(wire format, endpoint, model from the path) for a request path; endpoint "" if unknown
    (a malformed Azure path raises Azure's own answer)."""
    if path.startswith("/openai/"):
        endpoint, deployment = azure_wire.route(path, query)
        return _AZURE, endpoint, deployment
    if path.startswith("/model/"):
        action, model = bedrock_wire.route(path)
        return _BEDROCK, action, model
    if path in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses"):
        return _OPENAI, path, None
    if path.startswith("/v1/projects/"):
        vp = vertex_wire.parse_path(path)
        if vp is None:
            return _VERTEX_GEMINI, "", None
        if vp.publisher == "anthropic":
            if vp.model == vertex_wire.COUNT_TOKENS_MODEL and vp.method == "rawPredict":
                return _VERTEX_CLAUDE, "count-tokens", None  # the model is in the body
            known = vp.method in vertex_wire.CLAUDE_METHODS
            return _VERTEX_CLAUDE, vp.method if known else "", vp.model
        return (
            _VERTEX_GEMINI,
            vp.method if vp.method in vertex_wire.GEMINI_METHODS else "",
            vp.model,
        )
    if path in ("/v1/messages", "/v1/messages/count_tokens"):
        return _ANTHROPIC, path, None
    if path == "/v1/models":
        return (_ANTHROPIC if "anthropic-version" in headers else _OPENAI), path, None
    for prefix in _GEMINI_PREFIXES:
        if path.startswith(prefix):
            model, sep, action = path[len(prefix) :].rpartition(":")
            if sep and model and action in _GEMINI_ACTIONS:
                return _GEMINI, action, model
            return _GEMINI, "", model or None
    if path.startswith("/v1beta"):
        return _GEMINI, "", None
    if "anthropic-version" in headers:
        return _ANTHROPIC, "", None
    return _OPENAI, "", None


def _check_key(req: _Request) -> None:
    h = req.headers
    if (
        h.get("authorization") == f"Bearer {BAD_KEY}"
        or h.get("x-api-key") == BAD_KEY
        or h.get("x-goog-api-key") == BAD_KEY
        or req.query.get("key") == BAD_KEY
    ):
        raise Fault(401, code="invalid_api_key")


def _parse_chat(
    req: _Request,
    meanings: Meanings | None = None,
    store: responses_wire.ResponseStore | None = None,
) -> tuple[Prompt, Callable[[], tuple[bytes, int]], Callable[[bool], StreamPlan]]:
    """The prompt of a chat request, and how to render its answer whole or as a stream
    (with or without token usage); with ``meanings``, answered by the question's cluster;
    ``store`` keeps Responses conversations for ``previous_response_id``."""

    def meaning(p: Prompt) -> str | None:
        return None if meanings is None else meanings.of(p.last_user_text)

    if req.endpoint == "/v1/chat/completions":
        chat = openai_wire.parse_chat(req.body)
        answers = [answer(chat.prompt, i, meaning=meaning(chat.prompt)) for i in range(chat.n)]

        def whole() -> tuple[bytes, int]:
            tokens = sum(a.completion_tokens for a in answers)
            return openai_wire.chat_body(chat, answers), tokens

        def plan(usage: bool) -> StreamPlan:
            out = openai_wire.chat_stream(chat, answers, usage)
            return azure_wire.with_prompt_filter(out) if req.wire is _AZURE else out

        return chat.prompt, whole, plan
    if req.endpoint == "/v1/responses":
        kept = store if store is not None else responses_wire.ResponseStore()
        rr = responses_wire.parse_responses(req.body, kept)
        return (
            rr.prompt,
            lambda: responses_wire.response_body(rr, kept),
            lambda usage: responses_wire.response_stream(rr, kept, usage),
        )
    if req.endpoint in ("converse", "converse-stream"):
        stream = req.endpoint == "converse-stream"
        prompt = bedrock_wire.parse_converse(req.body, req.model or "", stream)
        ans = answer(prompt, tool_id_prefix="tooluse_", meaning=meaning(prompt))
        return (
            prompt,
            lambda: (bedrock_wire.converse_body(prompt, ans), ans.completion_tokens),
            lambda usage: bedrock_wire.converse_stream(prompt, ans, usage),
        )
    if req.endpoint in ("/v1/messages", "rawPredict", "streamRawPredict"):
        body = req.body
        if req.endpoint != "/v1/messages":  # Claude on Vertex: model in the path
            body = vertex_wire.claude_body(body, req.model or "")
            if req.endpoint == "streamRawPredict":
                body["stream"] = True
        anthropic_wire.require_max_tokens(body)
        prompt = anthropic_wire.parse_messages(body)
        ans = answer(prompt, tool_id_prefix="toolu_", meaning=meaning(prompt))
        return (
            prompt,
            lambda: (anthropic_wire.message_body(prompt, ans), ans.completion_tokens),
            lambda usage: anthropic_wire.message_stream(prompt, ans, usage),
        )
    stream = req.endpoint == "streamGenerateContent"
    prompt = gemini_wire.parse_generate(req.body, req.model or "", stream=stream)
    gem: Answer = answer(prompt, meaning=meaning(prompt))
    sse = req.query.get("alt") == "sse"
    return (
        prompt,
        lambda: (gemini_wire.generate_body(prompt, gem), gem.completion_tokens),
        lambda usage: gemini_wire.generate_stream(prompt, gem, sse=sse, usage=usage),
    )


def _embed(req: _Request, ctx: int | None) -> bytes:
    if req.endpoint == "/v1/embeddings":
        return openai_wire.embeddings_body(req.body, ctx)
    if req.endpoint == "predict":
        return vertex_wire.predict_body(req.body, req.model or "", ctx)
    if req.endpoint == "embedContent":
        return gemini_wire.embed_body(req.body, req.model or "", ctx)
    return gemini_wire.batch_embed_body(req.body, req.model or "", ctx)


def _id_header(wire: _Wire) -> Headers:
    if wire.id_header is None:
        return []
    return [(wire.id_header, new_id("req_").encode())]


def _ok_headers(wire: _Wire) -> Headers:
    return [*JSON_HEADERS, *_id_header(wire)]


def _without_usage(body: bytes) -> bytes:
    """A JSON answer without its token usage, wherever its wire format puts it."""
    answer = msgspec.json.decode(body)
    if isinstance(answer, dict):
        for name in ("usage", "usageMetadata"):
            answer.pop(name, None)
    return msgspec.json.encode(answer)


async def _answer_after(pacer: Pacer, delay: float, send: Send, wire: _Wire, body: bytes) -> None:
    if delay > 0 and not await pacer.sleep(delay):
        return
    await send_body(send, 200, _ok_headers(wire), body)


async def _send_fault(send: Send, wire: _Wire, fault: Fault, model: str | None) -> None:
    status, headers, body = wire.render_fault(fault, model)
    if status == 429:
        headers = [*headers, (b"retry-after", b"0"), (b"retry-after-ms", b"0")]
    # If the response had already started or the client is gone, there is nothing to tell.
    with contextlib.suppress(OSError, RuntimeError):
        await send_body(send, status, headers, body)
