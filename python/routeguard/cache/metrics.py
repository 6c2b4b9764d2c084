"""Cache counters: hits (exact and semantic), misses, near-misses, the histogram of best
scores seen on lookups, and lookup latency. Updated under the cache's lock; read with
:meth:`CacheMetrics.snapshot` for the monitoring layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_BINS = 20


@dataclass
class CacheMetrics:
    """Counters of one SemanticCache."""

    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    near_misses: int = 0  # a candidate scored within `near_margin` below the threshold
    rejected: int = 0  # a candidate passed the threshold but the verifier refused it
    puts: int = 0
    evictions: int = 0
    expirations: int = 0
    errors: int = 0  # requests that bypassed the cache: its shared store was unreachable
    lookup_seconds: float = 0.0
    lookups: int = 0
    score_histogram: list[int] = field(default_factory=lambda: [0] * _BINS)

    @property
    def hits(self) -> int:
        """All hits, exact and semantic."""
        return self.exact_hits + self.semantic_hits

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def observe_score(self, score: float) -> None:
        """Add a lookup's best candidate score to the histogram."""
        i = int(np.clip(score, 0.0, 0.999999) * _BINS)
        self.score_histogram[i] += 1

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of every counter, plus hit rate and mean lookup latency."""
        return {
            "exact_hits": self.exact_hits,
            "semantic_hits": self.semantic_hits,
            "hits": self.hits,
            "misses": self.misses,
            "near_misses": self.near_misses,
            "rejected": self.rejected,
            "puts": self.puts,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "errors": self.errors,
            "lookups": self.lookups,
            "hit_rate": self.hit_rate,
            "mean_lookup_ms": (self.lookup_seconds / self.lookups * 1000) if self.lookups else 0.0,
            "score_histogram": list(self.score_histogram),
        }
