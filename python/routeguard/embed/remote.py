"""An embedder backed by any OpenAI-compatible ``POST /v1/embeddings`` endpoint.

Data flow: texts -> chunks of at most ``batch_size`` -> one JSON request each through the
shared HTTP client (:func:`routeguard.providers.http.post_json`) -> error statuses mapped
onto :mod:`routeguard.errors` exactly as the OpenAI provider maps them -> rows put back in
input order by their ``index`` -> float32, L2-normalised (OpenAI's vectors already are;
other servers' may not be).

This module never retries: a failed call raises a ProviderError that says whether a retry
could help, and retrying is ``routeguard.fallback``'s job.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from routeguard.embed.base import F32, as_texts, normalize_rows
from routeguard.errors import ProviderError, RouteguardError
from routeguard.providers import http
from routeguard.providers.openai import ERRORS

# Output sizes of well-known models, so ``dim`` is known before the first call.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible endpoint (OpenAI, Azure-style proxies, vLLM, ...).

    ``base_url`` is the API root including ``/v1`` (``https://api.openai.com/v1``);
    ``dimensions`` is sent to models that can shorten their output (text-embedding-3-*).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        dimensions: int | None = None,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        batch_size: int = 2048,
    ) -> None:
        if dimensions is not None and dimensions <= 0:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.dimensions = dimensions
        self.timeout = timeout
        self.batch_size = batch_size
        self._headers = dict(headers or {})
        if api_key is not None:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._dim = dimensions or KNOWN_DIMENSIONS.get(model)

    def __repr__(self) -> str:  # no headers: they hold the key
        return f"OpenAIEmbedder({self.url!r}, model={self.model!r}, dim={self._dim})"

    @property
    def dim(self) -> int:
        """``dimensions`` if given, else the model's known size, else what the server sent."""
        if self._dim is None:
            raise RouteguardError(
                f"the vector size of embedding model '{self.model}' is unknown until the "
                "first call: pass OpenAIEmbedder(..., dimensions=N) or embed once first"
            )
        return self._dim

    def embed(self, texts: Sequence[str]) -> F32:
        """Embed ``texts`` from synchronous code (runs a private event loop for the call)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "OpenAIEmbedder.embed() would block the running event loop: use "
                "`await embedder.aembed(texts)` in async code"
            )
        return asyncio.run(self._embed_then_close(as_texts(texts)))

    async def _embed_then_close(self, texts: list[str]) -> F32:
        try:
            return await self.aembed(texts)
        finally:
            await http.close_session()  # the session belongs to this throwaway loop

    async def aembed(self, texts: Sequence[str]) -> F32:
        """Embed ``texts`` with one request per ``batch_size`` texts, in order."""
        batch = as_texts(texts)
        if not batch:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        parts = [
            await self._request(batch[i : i + self.batch_size])
            for i in range(0, len(batch), self.batch_size)
        ]
        return normalize_rows(parts[0] if len(parts) == 1 else np.concatenate(parts))

    async def _request(self, texts: list[str]) -> F32:
        body: dict[str, Any] = {
            "model": self.model,
            # OpenAI rejects "" as an input; a lone space embeds "nothing" the same way.
            "input": [t or " " for t in texts],
            "encoding_format": "float",
        }
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        resp = await http.post_json(self.url, self._headers, body, self.timeout)
        if resp.status >= 400:
            raise ERRORS.from_response(resp)
        return self._parse(http.decode(resp.body, "embeddings"), len(texts))

    def _parse(self, payload: Any, n: int) -> F32:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or len(data) != n:
            got = len(data) if isinstance(data, list) else "no"
            raise ProviderError(f"embeddings: asked for {n} vectors, upstream sent {got}")
        rows: list[Any] = [None] * n
        for pos, item in enumerate(data):
            index = item.get("index", pos) if isinstance(item, dict) else None
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < n or rows[index] is not None:
                raise ProviderError(f"embeddings: item {pos} has a bad or repeated index")
            if isinstance(vector, str):  # base64 of little-endian float32, if a server insists
                rows[index] = np.frombuffer(base64.b64decode(vector), dtype="<f4")
            elif isinstance(vector, list):
                rows[index] = vector
            else:
                raise ProviderError(f"embeddings: item {pos} has no embedding")
        try:
            out = np.array(rows, dtype=np.float32)
        except (ValueError, TypeError):
            out = np.zeros((0,), dtype=np.float32)
        if out.ndim != 2 or out.shape[1] == 0:
            raise ProviderError("embeddings: upstream vectors are not equal-length number lists")
        dim = self._dim
        if dim is None:
            self._dim = dim = int(out.shape[1])
        if out.shape[1] != dim:
            raise ProviderError(
                f"embeddings: model '{self.model}' returned {out.shape[1]} dimensions, "
                f"expected {dim}"
            )
        return out
