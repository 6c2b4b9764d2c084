"""Test embedders: small, deterministic, with similarities a test can reason about."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


class WordsEmbedder:
    """Unit vectors from hashed lower-case words: same words, same vector; the cosine of two
    texts grows with the words they share."""

    dim = 64

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed each text."""
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-9)
        return out


class WideWordsEmbedder(WordsEmbedder):
    """:class:`WordsEmbedder` at MiniLM's 384 dimensions, so a learned router can score its
    vectors (the proxy's startup checks that it can)."""

    dim = 384
