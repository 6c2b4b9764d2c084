"""What every provider adapter does the same way on the wire, written once.

An adapter builds the URL, headers and body of its wire format; :func:`post` sends it,
maps an error status through the adapter's :class:`ErrorFormat` and decodes the answer,
and :func:`stream` opens an SSE response, feeds each event to the adapter's
:class:`~routeguard.providers.base.StreamDecoder` and raises StreamTruncated when the body
ends before the format's terminator. Transport errors come from :mod:`.http`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard

from routeguard.errors import ProviderError, StreamTruncated, error_for_status
from routeguard.providers import http
from routeguard.providers.base import Json, StreamDecoder

# Gemini-style refinement of an error: (status, the body's "error" object, Retry-After) in,
# (status, Retry-After) out.
Refine = Callable[[int, Json, float | None], tuple[int, float | None]]
# How every format says "refused on content policy": OpenAI's and Azure's error codes, and
# the phrases of their messages (a provider that says it only in words).
POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
POLICY_HINTS = ("content management policy", "content policy", "safety system")


def token_count(value: Any) -> int:
    """A token count read from upstream JSON: the integer, or 0 if absent or not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def is_count(value: Any) -> TypeGuard[int]:
    """Whether ``value``, read from upstream JSON, is a token count: an int (not a bool) of
    at least 0."""
    return type(value) is int and value >= 0


class ErrorMapping(Protocol):
    """Whatever turns a whole error response into its ProviderError (an :class:`ErrorFormat`,
    or a format whose errors are not ``{"error": ...}`` bodies, such as Bedrock's)."""

    def from_response(self, resp: http.HttpResponse) -> ProviderError:
        """The ProviderError for an error response."""
        ...


@dataclass(frozen=True, slots=True)
class ErrorFormat:
    """How one wire format spells an error body (``{"error": {"message", ...}}`` in all
    three), mapped onto our ProviderError hierarchy by :func:`errors.error_for_status`,
    which scrubs secrets from the message, the detail and the kept body."""

    # Lower-case phrases of the upstream's message that mean "the prompt is too long".
    context_hints: tuple[str, ...]
    # ``error.code`` values that mean the same (OpenAI's ``context_length_exceeded``).
    context_codes: frozenset[str] = frozenset()
    # The body may come wrapped in a one-element JSON array (Gemini's streaming endpoint).
    unwrap_list: bool = False
    refine: Refine | None = None

    def from_body(self, status: int, body: Any, retry_after: float | None = None) -> ProviderError:
        """The ProviderError for an upstream status and its (decoded) error body."""
        if self.unwrap_list and isinstance(body, list) and body:
            body = body[0]
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            err = None
        message = f"upstream status {status}"
        code = ""
        if err is not None:
            if err.get("message"):
                message = str(err["message"])
            code = str(err.get("code") or "")
            if self.refine is not None:
                status, retry_after = self.refine(status, err, retry_after)
        lowered = message.lower()
        ctx = code in self.context_codes or any(h in lowered for h in self.context_hints)
        policy = 400 <= status < 500 and (
            code in POLICY_CODES or any(h in lowered for h in POLICY_HINTS)
        )
        return error_for_status(
            status,
            message,
            retry_after=retry_after,
            body=body,
            context_window=ctx,
            content_policy=policy,
        )

    def from_response(self, resp: http.HttpResponse) -> ProviderError:
        """The ProviderError for a whole error response (its Retry-After header included)."""
        return self.from_body(resp.status, resp.json(), http.retry_after(resp.headers))


async def post(
    url: str,
    headers: Mapping[str, str],
    body: Json,
    timeout: float,
    *,
    errors: ErrorMapping,
    what: str,
    require: tuple[str, type] | None = None,
) -> Json:
    """POST a JSON body and return the decoded JSON object; an error status raises the
    mapped ProviderError, and an answer that is not an object (or lacks ``require``, a
    key and the type of its value) raises ProviderError naming ``what`` was expected."""
    resp = await http.post_json(url, headers, body, timeout)
    if resp.status >= 400:
        raise errors.from_response(resp)
    data = http.decode(resp.body, what)
    if not isinstance(data, dict):
        raise ProviderError(f"{what}: expected a JSON object")
    if require is not None and not isinstance(data.get(require[0]), require[1]):
        raise ProviderError(f"{what}: upstream response has no {require[0]!r}")
    return data


@dataclass(frozen=True, slots=True)
class Exchange:
    """One upstream call as its adapter builds it: where, with which headers, what body
    (bytes when already encoded, as a signature over them needs)."""

    url: str
    headers: Mapping[str, str]
    body: Json | bytes


async def stream(
    provider: str,
    build: Callable[[], Exchange | Awaitable[Exchange]],
    decoder: StreamDecoder,
    timeout: float,
    *,
    errors: ErrorMapping,
    framing: Literal["sse", "bytes"] = "sse",
) -> AsyncIterator[Json]:
    """The stream of OpenAI chunks one SSE call yields, complete or raising.

    ``build`` (a function or a coroutine function, for auth that awaits a token) runs at
    the first iteration, so a stream closed before it is read sends nothing and a request
    the adapter cannot translate raises there, as a call would. An
    error status raises the mapped ProviderError; events go through ``decoder`` until it is
    ``done``; a body that ends before the decoder is ``complete`` raises StreamTruncated
    (what came may be any prefix of the answer); the connection is dropped on every exit.
    With ``framing="bytes"`` the decoder is fed the body's raw bytes as they arrive (event
    ""), for binary framings (AWS event-stream).
    """
    built = build()
    call = built if isinstance(built, Exchange) else await built
    sse = await http.open_sse(call.url, call.headers, call.body, timeout)
    if sse.status >= 400:
        raise errors.from_response(await sse.body())
    try:
        events = sse.events() if framing == "sse" else (("", c) async for c in sse.chunks())
        async for event, data in events:
            for chunk in decoder.feed(event, data):
                yield chunk
            if decoder.done:
                break
        if not decoder.complete:
            raise StreamTruncated(f"{provider} stream ended before {decoder.terminator}")
        for chunk in decoder.finish():
            yield chunk
    finally:
        sse.close()
