"""Semantic routes: named routes described by example utterances, matched on the shared embedding.

Data flow: at construction, every route's utterances are embedded once (with the same embedder
as the requests, so vectors are comparable) and stacked into one unit-norm matrix, rows grouped
by route; ``method="centroid"`` keeps one normalised mean row per route instead. Per request the
request's vector (the one the cache already computed, when there is one) is multiplied by that
matrix -> the best cosine per route (``np.maximum.reduceat`` over each route's rows) -> the
best route whose score clears its threshold wins; if none does, the caller goes on to its
default (the learned router, or a fixed alias).

A spec::

    {"threshold": 0.5, "method": "knn",             # defaults for every route
     "routes": [{"name": "code", "target": "coder", "threshold": 0.55,
                 "utterances": ["write a python function that ...", "fix this bug: ..."]}]}

``method``: ``"knn"`` scores a route by its nearest utterance (good when a route covers several
phrasings), ``"centroid"`` by the mean of its utterances (smoother with many utterances). The
scan is one small matrix-vector product: microseconds for a few hundred utterances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from routeguard.config.routes import SemanticRoutesSettings, parse_semantic
from routeguard.embed.base import Embedder
from routeguard.errors import RouteguardError

F32 = npt.NDArray[np.float32]
Method = Literal["knn", "centroid"]


@dataclass(frozen=True, slots=True)
class SemanticRoute:
    """One named route: where matching requests go and how close they must be."""

    name: str
    target: str
    utterances: tuple[str, ...]
    threshold: float


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    """The best route for a request and its cosine score."""

    route: SemanticRoute
    score: float


class SemanticRoutes:
    """Nearest-utterance (or nearest-centroid) matching of a request vector to named routes."""

    def __init__(
        self,
        routes: Sequence[SemanticRoute],
        embedder: Embedder,
        method: Method = "knn",
    ) -> None:
        if method not in ("knn", "centroid"):
            raise RouteguardError(
                f"semantic routes: method must be 'knn' or 'centroid', got {method!r}"
            )
        if not routes:
            raise RouteguardError("semantic routes: at least one route is needed")
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise RouteguardError(f"semantic routes: duplicate route names in {names}")
        self.routes = list(routes)
        self.method: Method = method
        texts = [u for r in routes for u in r.utterances]
        vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise RouteguardError("semantic routes: the embedder returned an unexpected shape")
        counts = [len(r.utterances) for r in routes]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.intp)
        if method == "centroid":
            means = np.add.reduceat(vectors, starts, axis=0)
            vectors = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
            starts = np.arange(len(routes), dtype=np.intp)
        self._matrix: F32 = np.ascontiguousarray(vectors, dtype=np.float32)
        self._starts = starts
        self._thresholds = np.array([r.threshold for r in routes], dtype=np.float32)

    @property
    def dim(self) -> int:
        """The dimension request vectors must have."""
        return int(self._matrix.shape[1])

    @classmethod
    def from_dict(
        cls, spec: Any, embedder: Embedder, where: str = "semantic_routes"
    ) -> SemanticRoutes:
        """Build from a config mapping (see the module docstring), or a bare list of routes;
        checked, errors name ``where``."""
        return cls.from_settings(parse_semantic(spec, where), embedder)

    @classmethod
    def from_settings(cls, spec: SemanticRoutesSettings, embedder: Embedder) -> SemanticRoutes:
        """Build from checked semantic routes (their utterances embedded once)."""
        routes = [
            SemanticRoute(
                r.name,
                r.target,
                tuple(r.utterances),
                spec.threshold if r.threshold is None else r.threshold,
            )
            for r in spec.routes
        ]
        return cls(routes, embedder, spec.method)

    def scores(self, vector: F32) -> npt.NDArray[np.float32]:
        """Each route's cosine to ``vector`` (best utterance, or the centroid)."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise RouteguardError(
                f"semantic routes: request vector has {v.shape[0]} dimensions, the routes' "
                f"embedder {self.dim}: embed requests and utterances with the same embedder"
            )
        sims = self._matrix @ v
        if self.method == "centroid":
            return sims
        out: npt.NDArray[np.float32] = np.maximum.reduceat(sims, self._starts)
        return out

    def match(self, vector: F32) -> SemanticMatch | None:
        """The best-scoring route whose score reaches its threshold, or None."""
        s = self.scores(vector)
        ok = s >= self._thresholds
        if not ok.any():
            return None
        best = int(np.argmax(np.where(ok, s, -np.inf)))
        return SemanticMatch(self.routes[best], float(s[best]))
