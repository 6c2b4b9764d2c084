"""What ``cache.max_error_rate`` would do on a logged route, before turning it on.

Needs the answers in the log (``observability.log_content``). The route's cacheable records
are replayed in log order through the same :class:`~routeguard.cache.bound.ErrorBound` the
gateway uses, with the log standing in for the upstream:

1. a request whose normalised prompt was seen in its partition is an exact hit;
2. otherwise its best stored neighbour the :class:`~routeguard.cache.verify.HitVerifier`
   accepts (of the :data:`CANDIDATES` nearest) is handed to the bound, which serves it,
   shadow-checks it or misses;
3. a served hit is *wrong* when the judge finds its cached (logged) answer different from
   the answer the log holds for this very request (cosine of the answers' embeddings below
   ``judge_threshold``, or unequal text with ``judge="exact"``); shadow checks and misses
   are judged the same way and become the bound's evidence; a miss or a shadow check stores
   the request's own answer.

The figures: hit rate, the served hits' wrong share (as the judge sees it, with a 95%
Wilson interval), the threshold the bound ends on, and the shadow calls (extra upstream
calls) per request. A log whose answers vary for the same question (temperature) reads as
wrong hits too: the estimate is conservative, as the judge in production is.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from routeguard.analyze.logs import LogRecord
from routeguard.cache.bound import FLOOR, ErrorBound, wilson_upper
from routeguard.cache.keys import exact_key, partition_key, request_namespace
from routeguard.cache.verify import HitVerifier
from routeguard.embed.base import Embedder

F32 = npt.NDArray[np.float32]
CANDIDATES = 4  # neighbours examined per lookup, as the cache does
_Z95 = 1.959964


@dataclass(slots=True)
class BoundEstimate:
    """A route's replay under ``max_error_rate`` (see the module docstring)."""

    max_error_rate: float
    requests: int  # cacheable requests with a logged answer
    exact_hits: int
    semantic_hits: int
    wrong_hits: int
    wrong_rate: float  # wrong / semantic hits
    wrong_high: float  # its 95% Wilson upper bound
    hit_rate: float  # (exact + semantic hits) / requests
    shadow_calls: int  # would-be hits sent upstream (extra calls)
    shadow_per_request: float
    threshold: float | None  # the bound's threshold at the end (None: no semantic hits)
    note: str = ""


def estimate_bound(
    records: Sequence[LogRecord],
    vector_of: dict[str, int],
    vectors: F32,
    embedder: Embedder,
    *,
    max_error_rate: float = 0.02,
    verify_sample: float = 0.05,
    judge: str = "embedding",
    judge_threshold: float = 0.90,
    seed: int = 0,
) -> BoundEstimate:
    """Replay one route's records under the bound; ``vector_of``/``vectors`` hold the prompts'
    unit embeddings (as :func:`~routeguard.analyze.analysis.analyze` computes them)."""
    usable = [
        r
        for r in records
        if r.prompt is not None
        and r.prompt in vector_of
        and r.response_text
        and r.request.get("n", 1) in (1, None)
    ]
    if not usable:
        return BoundEstimate(max_error_rate, 0, 0, 0, 0, 0.0, 1.0, 0.0, 0, 0.0, None,
                             "no logged answers: set observability.log_content")  # fmt: skip
    answers = list(dict.fromkeys(r.response_text or "" for r in usable))
    answer_row = {a: i for i, a in enumerate(answers)}
    answer_vecs = embedder.embed(answers) if judge != "exact" else None

    def wrong(a: str, b: str) -> bool:
        if " ".join(a.lower().split()) == " ".join(b.lower().split()):
            return False
        if answer_vecs is None:
            return True
        va, vb = answer_vecs[answer_row[a]], answer_vecs[answer_row[b]]
        return float(np.dot(va, vb)) < judge_threshold

    bound = ErrorBound(max_error_rate, verify_sample=verify_sample, rng=random.Random(seed))
    verifier = HitVerifier()
    seen: set[str] = set()
    stored: dict[str, tuple[list[int], list[str], list[str]]] = {}  # part -> rows, prompts, answers
    exact = semantic = wrong_hits = shadow = 0
    for r in usable:
        assert r.prompt is not None and r.response_text is not None
        part = partition_key(request_namespace(r.tenant, r.route, r.request),
                             r.request["messages"][:-1])  # fmt: skip
        key = exact_key(part, r.prompt)
        if key in seen:
            exact += 1
            continue
        rows, prompts, texts = stored.setdefault(part, ([], [], []))
        row = vector_of[r.prompt]
        cand = None
        margin = None
        if rows:
            scores = vectors[rows] @ vectors[row]
            order = np.argsort(-scores)[:CANDIDATES].tolist()
            for pos, i in enumerate(order):
                if verifier(r.prompt, prompts[i]):
                    cand = (float(scores[i]), texts[i])
                    # the nearest later entry with another answer: how far it stands out
                    rivals = [float(scores[j]) for j in order[pos + 1 :] if texts[j] != texts[i]]
                    margin = cand[0] - max(rivals[0] if rivals else FLOOR, FLOOR)
                    break
        if cand is None:
            bound.no_candidate()
        else:
            decision = bound.decide(cand[0], margin)
            bad = wrong(cand[1], r.response_text)
            if decision.serve:
                semantic += 1
                wrong_hits += bad
                continue  # served from the cache: nothing stored
            shadow += decision.shadow
            if decision.compare:
                bound.record(cand[0], bad, decision)
        seen.add(key)
        rows.append(row)
        prompts.append(r.prompt)
        texts.append(r.response_text)
    rate = wrong_hits / semantic if semantic else 0.0
    n = len(usable)
    return BoundEstimate(
        max_error_rate, n, exact, semantic, wrong_hits, rate,
        wilson_upper(rate, semantic, _Z95) if semantic else 1.0, (exact + semantic) / n,
        shadow, shadow / n, bound.estimate(fresh=True).threshold,
    )  # fmt: skip
