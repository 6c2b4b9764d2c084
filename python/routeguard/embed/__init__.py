"""routeguard.embed: one vector per request, shared by routing/ and cache/ (see DESIGN.md).

Every embedder follows the :class:`Embedder` Protocol (``dim``, ``embed``, ``aembed``) and
returns float32 rows of unit L2 norm, so a dot product is a cosine similarity.

- :class:`MiniLMEmbedder`: local all-MiniLM-L6-v2 (384 dims), Rust forward pass (numpy as a
  fallback, ``backend="numpy"``), no torch;
  :func:`default_embedder` is the process-wide shared instance (``precision="auto"``:
  bf16 where the CPU has AVX-512 BF16, else the fastest of f32, f16 and int8 measured here;
  :func:`resolve_precision` says which).
- :class:`OpenAIEmbedder`: any OpenAI-compatible ``/v1/embeddings`` endpoint.
- :class:`CallableEmbedder`: your own function.
"""

from __future__ import annotations

from routeguard.embed.base import CallableEmbedder, Embedder
from routeguard.embed.minilm import (
    MiniLMEmbedder,
    default_embedder,
    resolve_backend,
    resolve_precision,
)
from routeguard.embed.remote import OpenAIEmbedder

__all__ = [
    "CallableEmbedder",
    "Embedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "default_embedder",
    "resolve_backend",
    "resolve_precision",
]
