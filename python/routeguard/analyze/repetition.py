"""How repetitive a route's traffic is, and what a cache would make of it.

Data flow for one route's records (in log order):

1. cacheable requests (a text-only last user turn, one answer) get the gateway's cache keys:
   partition = namespace (tenant + route + every answer-changing parameter) + a digest of
   the earlier messages, exact key = partition + normalised prompt
   (:mod:`routeguard.cache.keys`). A request whose exact key was seen before is an exact hit.
2. Each first occurrence of an exact key is an *entry*. Per partition (so only prompts with
   the same earlier context can share an answer) the entries' vectors are compared with
   every earlier entry, in blocks, keeping the ``TOP_K`` most similar.
3. Per threshold, the cache is replayed online, as :class:`~routeguard.cache.semantic.
   SemanticCache` behaves: an entry looks at its stored neighbours at or above the
   threshold, best first; the first one the :class:`~routeguard.cache.verify.HitVerifier`
   accepts serves it (and a served entry is not stored), otherwise it is a miss and stored.
4. False-hit risk at a threshold: the share of served semantic hits whose prompts still
   differ by one content word (the opt-in ``substitution`` check: "learn python" / "learn
   java"), i.e. what gets past the verifier and looks wrong. Beside it, the *plain* risk: of
   the entries with a candidate at or above the threshold, the share that differ in a
   decisive detail (every candidate refused by the verifier, or one-word different), i.e.
   what a cache without the verifier would serve wrongly. Both are estimates from the
   prompts alone, not counts of wrong answers.
5. Near-duplicate clusters: entries joined by accepted candidates at the cluster threshold,
   sizes counted in requests (exact repeats included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from routeguard.analyze.logs import LogRecord
from routeguard.cache.keys import exact_key, partition_key, request_namespace
from routeguard.cache.verify import HitVerifier, check_substitution
from routeguard.cache.verify import analyse as verify_analyse

F32 = npt.NDArray[np.float32]

THRESHOLDS: tuple[float, ...] = (0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98)
TOP_K = 8  # stored neighbours looked at per entry (the cache tries a few candidates too)
_BLOCK = 512


@dataclass(slots=True)
class ThresholdRow:
    """What a cache at one similarity threshold would do on the route's traffic."""

    threshold: float
    hit_rate: float  # (exact + semantic hits) / requests
    semantic_hits: int
    candidates: int  # entries with a stored neighbour at or above the threshold
    refused: int  # ... whose every candidate the verifier refused
    flagged: int  # ... served, but by a candidate differing in one content word
    false_hit_risk: float  # flagged / semantic hits: served hits that look wrong
    plain_risk: float  # (refused + flagged) / candidates: a cache without the verifier


@dataclass(slots=True)
class Cluster:
    """A group of near-duplicate requests."""

    requests: int
    distinct: int
    example: str
    others: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Repetition:
    """Repetition figures of one route."""

    requests: int
    cacheable: int
    exact_hits: int
    exact_hit_rate: float
    entries: int  # distinct (partition, normalised prompt) pairs
    partitions: int
    rows: list[ThresholdRow]
    cluster_threshold: float = 0.9
    clusters: list[Cluster] = field(default_factory=list)  # largest first, size >= 2
    near_duplicate_share: float = 0.0  # requests in clusters of two or more

    def row(self, threshold: float) -> ThresholdRow:
        """The row of ``threshold`` (the nearest one on the grid)."""
        return min(self.rows, key=lambda r: abs(r.threshold - threshold))


class _Verdicts:
    """Verifier outcomes per (query, cached) pair, each computed once."""

    def __init__(self, verifier: HitVerifier) -> None:
        self.verifier = verifier
        self._ok: dict[tuple[int, int], bool] = {}
        self._sub: dict[tuple[int, int], bool] = {}

    def ok(self, texts: Sequence[str], q: int, c: int) -> bool:
        key = (q, c)
        v = self._ok.get(key)
        if v is None:
            v = self._ok[key] = self.verifier.explain(texts[q], texts[c]) is None
        return v

    def one_word(self, texts: Sequence[str], q: int, c: int) -> bool:
        key = (q, c)
        v = self._sub.get(key)
        if v is None:
            a, b = verify_analyse(texts[q]), verify_analyse(texts[c])
            v = self._sub[key] = check_substitution(a, b) is not None
        return v


def analyse_repetition(
    records: Sequence[LogRecord],
    vector_of: dict[str, int],
    vectors: F32,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    cluster_threshold: float = 0.90,
    verifier: HitVerifier | None = None,
    max_clusters: int = 10,
) -> Repetition:
    """Repetition figures for one route's records (in log order). ``vector_of`` maps a
    prompt text to its row in ``vectors`` (unit rows)."""
    verdicts = _Verdicts(verifier or HitVerifier())
    seen: dict[str, int] = {}  # exact key -> entry id
    entry_text: list[str] = []
    entry_part: list[str] = []
    entry_count: list[int] = []  # requests per entry (1 + exact repeats)
    exact_hits = cacheable = 0
    for r in records:
        if r.prompt is None or r.request.get("n", 1) not in (1, None):
            continue
        cacheable += 1
        ns = request_namespace(r.tenant, r.route, r.request)
        part = partition_key(ns, r.request["messages"][:-1])
        key = exact_key(part, r.prompt)
        e = seen.get(key)
        if e is not None:
            exact_hits += 1
            entry_count[e] += 1
            continue
        seen[key] = len(entry_text)
        entry_text.append(r.prompt)
        entry_part.append(part)
        entry_count.append(1)

    neighbours = _neighbours(entry_text, entry_part, vector_of, vectors)
    n = len(records)
    rows = [_replay(t, neighbours, entry_text, verdicts, exact_hits, n) for t in sorted(thresholds)]
    clusters, share = _clusters(
        cluster_threshold, neighbours, entry_text, entry_count, verdicts, n, max_clusters
    )
    return Repetition(
        requests=n,
        cacheable=cacheable,
        exact_hits=exact_hits,
        exact_hit_rate=exact_hits / n if n else 0.0,
        entries=len(entry_text),
        partitions=len(set(entry_part)),
        rows=rows,
        cluster_threshold=cluster_threshold,
        clusters=clusters,
        near_duplicate_share=share,
    )


Neighbours = list[list[tuple[int, float]]]  # per entry: (earlier entry, cosine), best first


def _neighbours(
    texts: list[str], parts: list[str], vector_of: dict[str, int], vectors: F32
) -> Neighbours:
    """Each entry's ``TOP_K`` most similar earlier entries of the same partition."""
    out: Neighbours = [[] for _ in texts]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(parts):
        groups.setdefault(p, []).append(i)
    for ids in groups.values():
        if len(ids) < 2:
            continue
        v = vectors[[vector_of[texts[i]] for i in ids]]
        for r0 in range(1, len(ids), _BLOCK):
            r1 = min(r0 + _BLOCK, len(ids))
            sims = v[r0:r1] @ v[:r1].T  # rows r0..r1 against every entry before r1
            for j in range(r0, r1):
                row = sims[j - r0, :j]
                k = min(TOP_K, j)
                top = np.argpartition(-row, k - 1)[:k] if k < j else np.arange(j)
                top = top[np.argsort(-row[top], kind="stable")]
                out[ids[j]] = [(ids[int(c)], float(row[c])) for c in top]
    return out


def _replay(
    t: float,
    neighbours: Neighbours,
    texts: list[str],
    verdicts: _Verdicts,
    exact_hits: int,
    n: int,
) -> ThresholdRow:
    stored = np.ones(len(texts), dtype=bool)
    hits = candidates = refused = flagged = 0
    for j, cands in enumerate(neighbours):
        tried = False
        served = None
        for c, score in cands:
            if score < t:
                break
            if not stored[c]:
                continue
            tried = True
            if verdicts.ok(texts, j, c):
                served = c
                break
        if not tried:
            continue
        candidates += 1
        if served is None:
            refused += 1
            continue
        hits += 1
        stored[j] = False
        if verdicts.one_word(texts, j, served):
            flagged += 1
    return ThresholdRow(
        threshold=t,
        hit_rate=(exact_hits + hits) / n if n else 0.0,
        semantic_hits=hits,
        candidates=candidates,
        refused=refused,
        flagged=flagged,
        false_hit_risk=flagged / hits if hits else 0.0,
        plain_risk=(refused + flagged) / candidates if candidates else 0.0,
    )


def _clusters(
    t: float,
    neighbours: Neighbours,
    texts: list[str],
    counts: list[int],
    verdicts: _Verdicts,
    n: int,
    limit: int,
) -> tuple[list[Cluster], float]:
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for j, cands in enumerate(neighbours):
        for c, score in cands:
            if score < t:
                break
            if verdicts.ok(texts, j, c):
                parent[find(j)] = find(c)
    members: dict[int, list[int]] = {}
    for i in range(len(texts)):
        members.setdefault(find(i), []).append(i)
    groups = [m for m in members.values() if sum(counts[i] for i in m) >= 2]
    groups.sort(key=lambda m: -sum(counts[i] for i in m))
    in_groups = sum(counts[i] for m in groups for i in m)
    clusters = [
        Cluster(
            requests=sum(counts[i] for i in m),
            distinct=len(m),
            example=texts[max(m, key=lambda i: counts[i])],
            others=[texts[i] for i in m[:4] if i != max(m, key=lambda i: counts[i])][:3],
        )
        for m in groups[:limit]
    ]
    return clusters, in_groups / n if n else 0.0
