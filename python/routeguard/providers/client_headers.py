"""Anthropic request headers a client sent (``anthropic-beta``, ``anthropic-version``),
carried from the proxy to the Claude adapters of the call that serves it.

The proxy reads them once per request (:func:`from_headers`) and sets :data:`ANTHROPIC` for
that request's task (and the tasks it starts); each Claude adapter puts them where its wire
format takes them: Anthropic's own API as the same headers, Claude on Vertex AI the
``anthropic-beta`` header (as Anthropic's Vertex SDK sends it; the version is Vertex's own,
fixed in the body), Bedrock Converse ``additionalModelRequestFields.anthropic_beta``. Other
providers never see them. A context variable rather than a request field: the chat request
is forwarded as is to OpenAI-format upstreams, which refuse fields they do not know.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AnthropicHeaders:
    """The client's beta features (in order, deduplicated) and API version."""

    betas: tuple[str, ...] = ()
    version: str | None = None


ANTHROPIC: ContextVar[AnthropicHeaders | None] = ContextVar("routeguard_anthropic", default=None)


def from_headers(headers: Iterable[tuple[bytes, bytes]]) -> AnthropicHeaders | None:
    """The Anthropic headers among raw ASGI ``headers`` (None when there are none)."""
    betas: list[str] = []
    version = None
    for name, value in headers:
        if name == b"anthropic-beta":
            for b in value.decode("latin-1").split(","):
                b = b.strip()
                if b and b not in betas:
                    betas.append(b)
        elif name == b"anthropic-version":
            version = value.decode("latin-1").strip() or None
    if not betas and version is None:
        return None
    return AnthropicHeaders(tuple(betas), version)


def betas(extra: str | None = None) -> list[str]:
    """The client's betas after those of ``extra`` (a deployment's own header value)."""
    out = [b.strip() for b in (extra or "").split(",") if b.strip()]
    sent = ANTHROPIC.get()
    if sent is not None:
        out += [b for b in sent.betas if b not in out]
    return out
