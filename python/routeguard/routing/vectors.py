"""Embedding many prompts for training and evaluation, optionally cached on disk.

Data flow: prompts -> content hash of the whole list (plus the embedder's name) -> if
``cache_dir/<name>-<hash>.npy`` exists, load it; else embed in batches (progress on stderr when
asked), save, return. Embedding a data set like RouteLLM's MMLU takes minutes on one core, so
training, ``routeguard router eval`` and the quality bench all share this cache.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from routeguard.embed.base import Embedder

F32 = npt.NDArray[np.float32]
BATCH = 256


def texts_digest(texts: Sequence[str]) -> str:
    """A short content hash of an ordered list of texts."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def embed_many(
    texts: Sequence[str],
    embedder: Embedder,
    *,
    cache_dir: str | Path | None = None,
    name: str = "minilm",
    progress: bool = False,
) -> F32:
    """``(len(texts), dim)`` float32 vectors of ``texts``, read from / written to
    ``cache_dir`` when given (keyed by ``name``, the embedder's precision unless f32, and
    the texts' content hash, so vectors of two precisions never mix)."""
    path = None
    if cache_dir is not None:
        precision = getattr(embedder, "precision", "f32")
        if precision != "f32":
            name = f"{name}-{precision}"
        path = Path(cache_dir) / f"{name}-{texts_digest(texts)}.npy"
        if path.is_file():
            cached: F32 = np.load(path).astype(np.float32, copy=False)
            if cached.shape[0] == len(texts):
                return cached
    parts = []
    started = time.monotonic()
    for i in range(0, len(texts), BATCH):
        parts.append(np.asarray(embedder.embed(list(texts[i : i + BATCH])), dtype=np.float32))
        if progress:
            done = min(i + BATCH, len(texts))
            took = time.monotonic() - started
            print(f"embedded {done}/{len(texts)} prompts ({took:.0f} s)", file=sys.stderr)
    out = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
    return out
