"""The one Protocol every embedder implements, and the embedder that wraps a user callable.

An embedder turns texts into one float32, L2-normalised row each, so that a dot product is
the cosine similarity the router and the semantic cache compare. ``embed`` blocks;
:func:`embed_off_loop` keeps the event loop free (on the embedder's ``aembed`` when it has
one: local models run on a worker thread, remote ones await the HTTP call).
Implementations: :class:`~routeguard.embed.minilm.MiniLMEmbedder` (local, the default),
:class:`~routeguard.embed.remote.OpenAIEmbedder` (any ``/v1/embeddings`` endpoint) and
:class:`CallableEmbedder` (bring your own function).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Texts in, one L2-normalised float32 row of ``dim`` values per text out: what the
    cache, the routers and the analysis use. An embedder may also have ``aembed`` (an async
    ``embed`` on its own worker); :func:`embed_off_loop` uses it when it is there."""

    @property
    def dim(self) -> int:
        """Length of every vector this embedder returns."""
        ...

    def embed(self, texts: Sequence[str]) -> F32:
        """Embed ``texts`` (blocking): an ``(len(texts), dim)`` float32 array, rows unit-norm."""
        ...


async def embed_off_loop(embedder: Embedder, texts: Sequence[str]) -> F32:
    """``embedder.embed(texts)`` without blocking the event loop: on the embedder's own
    worker when it has one (``aembed``), else on a worker thread."""
    aembed = getattr(embedder, "aembed", None)
    out = await (aembed(texts) if aembed is not None else asyncio.to_thread(embedder.embed, texts))
    return np.asarray(out, dtype=np.float32)


def as_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, refusing a bare string (a ``str`` is a sequence of characters)."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts: wrap a single text in a list")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


def normalize_rows(vectors: F32) -> F32:
    """Scale each row to unit L2 norm, in place (an all-zero row stays zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    np.maximum(norms, np.float32(1e-12), out=norms)
    vectors /= norms
    return vectors


class CallableEmbedder:
    """An embedder around your own function ``fn(texts) -> array (len(texts), dim)``.

    The result is cast to float32 and L2-normalised; ``aembed`` runs ``fn`` on the event
    loop's default thread pool, so ``fn`` must be safe to call from another thread.
    """

    def __init__(self, fn: Callable[[list[str]], npt.ArrayLike], dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self._fn = fn
        self._dim = dim

    @property
    def dim(self) -> int:
        """Length of every vector (as declared when constructed)."""
        return self._dim

    def embed(self, texts: Sequence[str]) -> F32:
        """Call ``fn`` and check, cast and normalise what it returns."""
        batch = as_texts(texts)
        if not batch:
            return np.zeros((0, self._dim), dtype=np.float32)
        out = np.array(self._fn(batch), dtype=np.float32)  # a copy: normalised in place
        if out.shape != (len(batch), self._dim):
            raise ValueError(
                f"embedding function returned shape {out.shape} for {len(batch)} texts; "
                f"expected ({len(batch)}, {self._dim})"
            )
        return normalize_rows(out)

    async def aembed(self, texts: Sequence[str]) -> F32:
        """:meth:`embed` on a worker thread."""
        batch = as_texts(texts)
        return await asyncio.to_thread(self.embed, batch)
