"""The contract every provider adapter keeps, and the shapes that cross it.

The gateway speaks OpenAI Chat Completions internally; each adapter translates to and from
its wire format, declares what it can do (:data:`CAPABILITIES`), and refuses the rest with
a 400 naming the field (:func:`refuse_unsupported`). ``tests/test_provider_contract.py``
runs every adapter through one matrix built from these declarations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, runtime_checkable

from routeguard.deployment import Deployment
from routeguard.errors import UpstreamBadRequest

Json = dict[str, Any]

# What an adapter can declare, and what a request asking for it looks like:
#   chat             non-streaming completions (``chat``)
#   stream           streaming completions (``stream``)
#   tools            function tools in, ``tool_calls`` out, tool results back (``tools``)
#   embeddings       ``embed``
#   vision           ``image_url`` content parts
#   json_mode        ``response_format`` of type ``json_object`` / ``json_schema``
#   usage_in_stream  a stream's last chunk carries usage (without it: no usage chunk at all)
CAPABILITIES: frozenset[str] = frozenset(
    {"chat", "stream", "tools", "embeddings", "vision", "json_mode", "usage_in_stream"}
)
# The capabilities a request's fields can ask for (checked by refuse_unsupported).
_REQUESTED = frozenset({"tools", "vision", "json_mode"})
_REFUSAL = {
    "chat": "chat completions",
    "stream": "streaming ('stream': true)",
    "tools": "tool calling ('tools')",
    "embeddings": "embeddings (no embeddings endpoint)",
    "vision": "image input ('image_url' content parts)",
    "json_mode": "JSON output ('response_format')",
}
# The request field a refusal names as the error's ``param``.
_FIELD = {
    "stream": "stream",
    "tools": "tools",
    "vision": "messages",
    "json_mode": "response_format",
}


# Every OpenAI chat-completions request field a provider must translate or refuse. An adapter
# lists those it translates (``params``); any other present field is refused with a 400
# naming it, or dropped when the deployment has ``drop_params`` (see :func:`check_params`).
OPENAI_CHAT_PARAMS: frozenset[str] = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty",
        "logit_bias", "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "reasoning_effort", "modalities", "audio",
        "prediction", "web_search_options", "verbosity", "functions", "function_call",
        "metadata", "store", "service_tier",
    }
)  # fmt: skip
# Fields that never change the answer (bookkeeping for OpenAI's own platform): ignored.
HARMLESS_PARAMS: frozenset[str] = frozenset({"metadata", "store", "service_tier"})


def unhandled_params(request: Json, handled: frozenset[str]) -> list[str]:
    """The fields of ``request`` that are set and that an adapter handling ``handled`` would
    neither translate nor safely ignore, in request order."""
    return [
        k
        for k, v in request.items()
        if v is not None and k in OPENAI_CHAT_PARAMS and k not in handled
        and k not in HARMLESS_PARAMS
    ]  # fmt: skip


def check_params(provider: Provider, request: Json, drop: bool) -> Json:
    """``request`` for ``provider``: a 400 naming the first field it cannot honour, or,
    with ``drop`` (the deployment's ``drop_params``), the request without those fields."""
    extra = unhandled_params(request, provider.params)
    if not extra:
        return request
    if not drop:
        err = UpstreamBadRequest(
            f"{provider.name} does not support the parameter '{extra[0]}': remove it, send the "
            "request to a deployment whose provider does, or set drop_params: true on this "
            "deployment to drop such parameters"
        )
        err.param = extra[0]
        raise err
    return {k: v for k, v in request.items() if k not in extra}


# reasoning_effort -> thinking tokens for providers that budget thinking in tokens (Anthropic's
# extended thinking, Gemini's thinkingBudget); "none" and "minimal" turn thinking off.
THINKING_BUDGETS = {"none": 0, "minimal": 0, "low": 1024, "medium": 2048, "high": 4096}


def thinking_budget(effort: Any, provider: str) -> int:
    """The thinking tokens a ``reasoning_effort`` asks for (0: none); 400 if unknown."""
    if effort not in THINKING_BUDGETS:
        err = UpstreamBadRequest(
            f"{provider}: reasoning_effort must be one of {', '.join(THINKING_BUDGETS)}, "
            f"got {effort!r}"
        )
        err.param = "reasoning_effort"
        raise err
    return THINKING_BUDGETS[effort]


class Provider(Protocol):
    """One wire format (OpenAI, Anthropic, Gemini), stateless but for the shared HTTP client.

    The contract, for every method:

    - **Shapes.** Requests are the client's OpenAI-shaped JSON object; answers are OpenAI
      ``chat.completion`` / ``chat.completion.chunk`` / embeddings dicts (the openai SDK's
      types validate them). The deployment's ``model`` replaces the request's.
    - **Errors.** Every upstream failure raises a :class:`routeguard.errors.ProviderError`:
      statuses through ``errors.error_for_status`` (via ``wire.ErrorFormat``), so the class
      says whether retrying or falling back can help; transport failures as timeouts or
      connection errors (``http``). Upstream text is scrubbed of secrets and upstream hosts
      (``routeguard.scrub``) before a caller can read it. No adapter retries.
    - **Capabilities.** ``capabilities`` lists what the adapter does (names from
      :data:`CAPABILITIES`); a request for anything else raises UpstreamBadRequest naming the
      field, never an answer that quietly ignores it. Likewise ``params`` lists the OpenAI
      request fields the adapter translates; any other field that would change the answer
      is refused with a 400 naming it, or dropped where the deployment sets ``drop_params``
      (:func:`check_params`).
    - **Usage and cost.** Answers carry OpenAI ``usage`` (``prompt_tokens``,
      ``completion_tokens``, ``total_tokens``; cached prompt tokens under
      ``prompt_tokens_details``) as the upstream reported it; the gateway prices it with the
      deployment's per-token costs. What the upstream did not report is left out, never
      made up as zero: the gateway then charges an estimate.
    """

    name: str
    capabilities: frozenset[str]
    params: frozenset[str]  # the OpenAI request fields it translates (see check_params)

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming completion in the OpenAI ``chat.completion`` shape."""
        ...

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming completion as OpenAI ``chat.completion.chunk`` dicts.

        Nothing is sent before the first iteration (a stream closed unread costs nothing).
        The iterator ends only after the wire format's terminator (OpenAI ``[DONE]``,
        Anthropic ``message_stop``, a Gemini ``finishReason`` for every candidate), with the
        usage chunk (``choices: []``) last when the upstream reported usage; a body that
        ends before it raises StreamTruncated, an in-stream error its ProviderError.
        Closing the iterator early drops the upstream connection at once.
        """
        ...

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Embeddings in the OpenAI ``/v1/embeddings`` response shape, in input order."""
        ...


class StreamDecoder(Protocol):
    """One stream's SSE events in one wire format in, OpenAI chunks out (``wire.stream``)."""

    # What ends a complete stream, for the StreamTruncated message ("[DONE]").
    terminator: str

    @property
    def done(self) -> bool:
        """Nothing more to read: the format's last event arrived."""
        ...

    @property
    def complete(self) -> bool:
        """The whole answer arrived (its terminator was seen)."""
        ...

    def feed(self, event: str, data: bytes) -> Iterable[Json]:
        """Translate one SSE event (``event`` is "" when the server named none); chunks
        yielded lazily reach the client before a later one raises."""
        ...

    def finish(self) -> list[Json]:
        """The chunks that close a complete stream (the usage chunk, when not yet sent)."""
        ...


def wants(request: Json) -> frozenset[str]:
    """The capabilities a chat request's fields ask for (tools, vision, json_mode)."""
    wanted: set[str] = set()
    if request.get("tools"):
        wanted.add("tools")
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        wanted.add("json_mode")
    for m in request.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in content
        ):
            wanted.add("vision")
            break
    return frozenset(wanted)


def unsupported(provider: Provider, *capabilities: str) -> UpstreamBadRequest:
    """The 400 for a request that needs ``capabilities`` ``provider`` does not declare."""
    what = " and ".join(_REFUSAL[c] for c in capabilities)
    err = UpstreamBadRequest(
        f"{provider.name} does not support {what}; send it to a deployment whose provider does"
    )
    err.param = _FIELD.get(capabilities[0]) if len(capabilities) == 1 else None
    return err


def refuse_unsupported(provider: Provider, call: str, request: Json | None = None) -> None:
    """Raise :func:`unsupported` if ``call`` ("chat", "stream", "embeddings") or a field of
    ``request`` needs a capability ``provider`` does not declare."""
    have = provider.capabilities
    missing = [call] if call not in have else []
    if request is not None and not have >= _REQUESTED:
        missing += sorted(wants(request) - have)
    if missing:
        raise unsupported(provider, *missing)


@runtime_checkable
class ResponsesProvider(Protocol):
    """A provider that serves OpenAI's Responses API itself (OpenAI, Azure OpenAI): the
    gateway passes a Responses request through to it rather than translating it to chat."""

    async def responses(self, body: Json, deployment: Deployment, timeout: float) -> Json:
        """One Responses call: the client's body (the deployment's model), the ``response``."""
        ...

    def responses_stream(
        self, body: Json, deployment: Deployment, timeout: float
    ) -> AsyncIterator[Json]:
        """A streamed Responses call: its event objects, as the upstream sent them."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """A provider whose upstream counts a Messages-shaped request's input tokens itself
    (Anthropic's ``/v1/messages/count_tokens``, Claude on Vertex AI's
    ``count-tokens:rawPredict``): the proxy's ``count_tokens`` passes through to it."""

    async def count_tokens(self, body: Json, deployment: Deployment, timeout: float) -> int:
        """The upstream's ``input_tokens`` for ``body`` (an Anthropic Messages request)."""
        ...


def serves_responses(provider: object) -> TypeGuard[ResponsesProvider]:
    """Whether ``provider`` has both calls of :class:`ResponsesProvider`: what ``isinstance``
    against the protocol answers, without its cost (typing's walk over the protocol's
    members on every call), since it is asked on every Responses request."""
    return callable(getattr(provider, "responses", None)) and callable(
        getattr(provider, "responses_stream", None)
    )


def counts_tokens(provider: object) -> TypeGuard[TokenCounter]:
    """Whether ``provider`` is a :class:`TokenCounter` (as :func:`serves_responses`)."""
    return callable(getattr(provider, "count_tokens", None))


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """A request made in an API some providers serve natively (``api``: "responses"), beside
    the chat translation the gateway's stages read. ``untranslatable`` says what the chat
    translation had to leave out (``previous_response_id``, built-in tools...): a chat-only
    deployment then refuses the request with a 400 saying so, never silently drops it."""

    api: str
    body: Json
    untranslatable: str | None = None
    param: str | None = None  # the request field the 400 names
