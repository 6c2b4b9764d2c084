"""Failure and latency modes of the simulated upstream, read from the model name and headers.

A request's behaviour is a set of tokens found in its model name (``mock-error-429``,
``gpt-4o-slow-200-flaky-50``, ``claude-ctx-100``) and in the ``x-mock-behaviour`` header
(same tokens, separated by commas, spaces or dashes). For each kind of token the header's
value wins over the model name's; the header token ``none`` drops every model-name token.
A token starts the name or follows a non-alphanumeric character, and numbers end at a
non-digit (``error-4290`` is no token).

Tokens and their exact rules:

- ``error-NNN`` (NNN in 400..599): every request answers status NNN with the format's error
  body; 429 answers also carry ``retry-after: 0`` and ``retry-after-ms: 0``.
- ``slow-MS``: sleep MS milliseconds before answering anything (headers included), so a
  client timeout shorter than MS fires. Applied before every other token.
- ``flaky-P`` (P in 0..100): answers 503 for P percent of requests, spread evenly and
  deterministically. Requests are counted per model name (the ``model`` field, or the path's
  model for Gemini) from 0 within one app instance; request number n fails iff
  ``ceil((n+1)*P/100) > ceil(n*P/100)``. So the FIRST request of a model fails whenever
  P > 0; flaky-50 fails requests 0, 2, 4...; flaky-30 fails 0, 3, 6, 10...; flaky-100
  always fails; exactly P of every 100 consecutive requests (from request 0) fail.
  Only requests that got past authentication, parsing and ``error-NNN`` are counted.
- ``midstream-error``: streams send their opening frames and 2 content chunks, then the
  format's in-stream error and close; non-streaming requests answer 500.
- ``ctx-N``: the model's context window is N tokens; a prompt over it (OpenAI and
  Anthropic: prompt plus ``max_tokens`` when given) answers 400 with the provider's real
  context-length error.
- ``truncate``: streams send their opening frames and 2 content chunks, then close the body
  without the format's terminator (OpenAI ``[DONE]``, Anthropic ``message_stop``, Gemini's
  ``finishReason``) and without an error; non-streaming requests are unaffected.
- ``no-usage``: answers carry no token usage (no OpenAI usage chunk or ``usage`` field, no
  Anthropic or Bedrock ``usage``, no Gemini ``usageMetadata``), as some OpenAI-compatible
  servers answer.
- ``content-policy``: every request answers 400 with OpenAI's content-policy refusal
  (``code: content_policy_violation``).
- ``echo-headers``: every error answer appends the request's headers (credentials included)
  to its message, as a misconfigured upstream or proxy in front of it may do.

Latency (no token needed): the app's ``ttft`` (seconds before the first chunk of a stream,
after the response headers; before the body of a non-streaming answer) and
``tokens_per_s`` (spacing of stream chunks; a non-streaming answer waits
completion_tokens / tokens_per_s more). Headers ``x-mock-ttft-ms`` and
``x-mock-tokens-per-s`` override them per request; 0 tokens/s means "no pacing".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from routeguard.mock.faults import Fault

_TOKEN = re.compile(
    r"(?<![a-z0-9])(?:(?P<midstream>midstream-error)"
    r"|error-(?P<error>\d{3})(?![0-9])"
    r"|slow-(?P<slow>\d+)(?![0-9])"
    r"|flaky-(?P<flaky>\d{1,3})(?![0-9])"
    r"|ctx-(?P<ctx>\d+)(?![0-9])"
    r"|(?P<truncate>truncate)(?![a-z0-9])"
    r"|(?P<no_usage>no-usage)(?![a-z0-9])"
    r"|(?P<echo>echo-headers)(?![a-z0-9])"
    r"|(?P<policy>content-policy)(?![a-z0-9])"
    r"|(?P<none>none)(?![a-z0-9]))"
)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What one request asks of the simulated upstream besides a normal answer."""

    error: int | None = None
    slow_ms: int = 0
    flaky: int | None = None
    midstream: bool = False
    ctx: int | None = None
    truncate: bool = False
    no_usage: bool = False
    echo_headers: bool = False
    content_policy: bool = False


NORMAL = Behaviour()


@dataclass(frozen=True, slots=True)
class _Tokens:
    error: int | None = None
    slow_ms: int | None = None
    flaky: int | None = None
    midstream: bool | None = None
    ctx: int | None = None
    none: bool = False
    flags: frozenset[str] = frozenset()  # truncate, no_usage, echo


@lru_cache(maxsize=4096)
def _scan(text: str) -> _Tokens:
    error = slow = flaky = ctx = None
    midstream = None
    none = False
    flags: set[str] = set()
    for m in _TOKEN.finditer(text.lower()):
        if m["truncate"] or m["no_usage"] or m["echo"] or m["policy"]:
            flags.add(next(k for k in ("truncate", "no_usage", "echo", "policy") if m[k]))
        elif m["midstream"]:
            midstream = True
        elif m["error"]:
            status = int(m["error"])
            if 400 <= status <= 599:
                error = status
        elif m["slow"]:
            slow = int(m["slow"])
        elif m["flaky"]:
            flaky = min(int(m["flaky"]), 100)
        elif m["ctx"]:
            ctx = int(m["ctx"])
        elif m["none"]:
            none = True
    return _Tokens(error, slow, flaky, midstream, ctx, none, frozenset(flags))


@lru_cache(maxsize=4096)
def behaviour_for(model: str, header: str | None) -> Behaviour:
    """The behaviour of a request for ``model`` with an optional ``x-mock-behaviour`` header."""
    from_model = _scan(model) if model else _Tokens()
    if header is None:
        chosen = [from_model]
    else:
        from_header = _scan(header)
        chosen = [from_header] if from_header.none else [from_header, from_model]

    error = next((t.error for t in chosen if t.error is not None), None)
    slow = next((t.slow_ms for t in chosen if t.slow_ms is not None), None)
    flaky = next((t.flaky for t in chosen if t.flaky is not None), None)
    midstream = next((t.midstream for t in chosen if t.midstream is not None), None)
    ctx = next((t.ctx for t in chosen if t.ctx is not None), None)
    flags = frozenset().union(*(t.flags for t in chosen))
    if (
        error is None
        and slow is None
        and flaky is None
        and midstream is None
        and ctx is None
        and not flags
    ):
        return NORMAL
    return Behaviour(
        error=error,
        slow_ms=slow or 0,
        flaky=flaky,
        midstream=midstream is True,
        ctx=ctx,
        truncate="truncate" in flags,
        no_usage="no_usage" in flags,
        echo_headers="echo" in flags,
        content_policy="policy" in flags,
    )


class FlakyCounters:
    """Per-model request counters deciding which ``flaky-P`` requests fail (see module doc)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def should_fail(self, model: str, pct: int) -> bool:
        """Count one request of ``model`` and say whether it is one of the failing share."""
        n = self._counts.get(model, 0)
        self._counts[model] = n + 1
        # ceil(a / 100) as -(-a // 100), in integers so the rule is exact.
        return -(-(n + 1) * pct // 100) > -(-n * pct // 100)

    def reset(self) -> None:
        """Forget every count (the next request of each model is its first again)."""
        self._counts.clear()


@dataclass(frozen=True, slots=True)
class Latency:
    """Seconds before the first chunk and chunks per second (None: send as fast as possible)."""

    ttft: float = 0.0
    tokens_per_s: float | None = None

    def with_headers(self, ttft_ms: str | None, tps: str | None) -> Latency:
        """This latency overridden by the ``x-mock-ttft-ms`` / ``x-mock-tokens-per-s`` headers."""
        if ttft_ms is None and tps is None:
            return self
        ttft, rate = self.ttft, self.tokens_per_s
        if ttft_ms is not None:
            ttft = _non_negative(ttft_ms, "x-mock-ttft-ms") / 1000.0
        if tps is not None:
            value = _non_negative(tps, "x-mock-tokens-per-s")
            rate = value or None
        return Latency(ttft, rate)


def _non_negative(raw: str, header: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0.0 or value == float("inf"):
        raise Fault(400, f"header {header} must be a non-negative number, got {raw!r}")
    return value
