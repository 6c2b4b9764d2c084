"""The one Protocol every provider module implements, and the shapes that cross it.

The gateway speaks OpenAI Chat Completions internally: a request is the client's JSON
object (a dict) and a response is an OpenAI ``chat.completion`` dict; a stream yields
OpenAI ``chat.completion.chunk`` dicts. Each provider module translates to and from its own
wire format and raises :mod:`routeguard.errors` ProviderError subclasses on failure, so
``routeguard.fallback`` can decide on retries without knowing any provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from routeguard.config import Deployment

Json = dict[str, Any]


class Provider(Protocol):
    """One wire format (OpenAI, Anthropic, Gemini). Stateless but for its HTTP client."""

    name: str

    async def chat(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """One non-streaming completion, returned in the OpenAI chat.completion shape."""
        ...

    def stream(self, request: Json, deployment: Deployment, timeout: float) -> AsyncIterator[Json]:
        """A streaming completion as OpenAI chat.completion.chunk dicts (usage in the last)."""
        ...

    async def embed(self, request: Json, deployment: Deployment, timeout: float) -> Json:
        """Embeddings in the OpenAI ``/v1/embeddings`` response shape."""
        ...
