"""Suite ``cache``: a semantic hit end to end on one core (embed the prompt, search the
partition, return the stored answer) in the default ``SemanticCache`` (local MiniLM at the
gateway's ``auto`` precision, threshold 0.90, no verifier) holding a few thousand entries,
against a numpy cache written the obvious way (MiniLM's numpy backend, a normalised matrix,
``argmax``, a dict)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import numpy.typing as npt

from routeguard.bench.report import Row
from routeguard.bench.suite import Options, Skip, one_core
from routeguard.bench.timing import summarize, time_each
from routeguard.cache.semantic import DEFAULT_THRESHOLD, SemanticCache
from routeguard.embed import MiniLMEmbedder, default_embedder
from routeguard.embed.blas import single_threaded
from routeguard.embed.minilm import PrecisionChoice
from routeguard.errors import RouteguardError

F32 = npt.NDArray[np.float32]
# (stored prompt, a rewording that should hit it)
PAIRS = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "What's the capital city of France?"),
    ("How do I make a list in Python?", "How can I create a list in Python?"),
    ("What is the weather like in Paris today?", "What's the weather in Paris today?"),
    ("Translate good morning into Spanish", "Translate 'good morning' to Spanish"),
    ("How do I delete my account?", "How can I delete my account?"),
    ("What are the symptoms of the flu?", "What are flu symptoms?"),
    ("Explain what a hash table is", "Explain what hash tables are"),
]


class NumpyCache:
    """The peer: embed with numpy, score every stored vector, answer above the threshold."""

    def __init__(self, embedder: MiniLMEmbedder, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.matrix = np.zeros((0, embedder.dim), np.float32)
        self.answers: list[Any] = []

    def put_vectors(self, vectors: F32, answers: list[Any]) -> None:
        """Store already-embedded entries."""
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self.matrix = np.vstack([self.matrix, unit.astype(np.float32)])
        self.answers += answers

    def get(self, prompt: str) -> Any:
        """The stored answer of the nearest entry if it is near enough, else None."""
        q = self.embedder.embed([prompt])[0]
        scores = self.matrix @ (q / np.linalg.norm(q))
        best = int(np.argmax(scores))
        return self.answers[best] if scores[best] >= self.threshold else None


def run(opts: Options) -> list[Row]:
    """p50 of a hit through SemanticCache.get against the numpy cache, same entries."""
    size = opts.n(20_000, 2_000)
    try:
        ours_e = default_embedder(cast(PrecisionChoice, opts.precision))
        peer_e = MiniLMEmbedder(backend="numpy")
    except RouteguardError as exc:
        raise Skip(str(exc)) from None
    rng = np.random.default_rng(size)
    filler = rng.standard_normal((size - len(PAIRS), ours_e.dim), dtype=np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    stored = ours_e.embed([a for a, _ in PAIRS])
    opts.progress.step(f"filling both caches with {size:,} entries")
    cache = SemanticCache(ours_e)
    for i, (prompt, _) in enumerate(PAIRS):
        cache.put(prompt, {"answer": i}, vector=stored[i])
    for i, v in enumerate(filler):
        cache.put(f"filler {i}", {"answer": -1}, vector=v)
    peer_cache = NumpyCache(peer_e)
    peer_cache.put_vectors(np.vstack([stored, filler]), [{"answer": i} for i in range(size)])
    lookups = [b for _, b in PAIRS]
    hits = [q for q in lookups if cache.get(q) is not None and peer_cache.get(q) is not None]
    if not hits:
        raise Skip("no rewording hit at the default threshold: nothing to time")
    rounds = opts.n(40, 5)
    with one_core(), single_threaded():
        opts.progress.step(f"SemanticCache.get, {len(hits) * rounds} hits")
        ours = summarize(time_each(cache.get, hits, rounds, len(hits))).scaled(1e-6)
        opts.progress.step(f"numpy cache, {len(hits) * rounds} hits")
        peer = summarize(time_each(peer_cache.get, hits, rounds, len(hits))).scaled(1e-6)
    return [
        Row("cache", f"semantic hit, {size:,} entries, MiniLM {ours_e.precision}", ours.p50,
            peer.p50, "numpy cache (numpy MiniLM + matrix scan)", unit="ms",
            detail={"ours": ours.as_dict(), "peer": peer.as_dict(), "hits": len(hits),
                    "lookups": len(lookups)})
    ]  # fmt: skip
