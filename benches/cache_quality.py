"""Semantic-cache hit quality on public data: a plain cosine threshold vs threshold + verifier.

Run: ``.venv/bin/python benches/cache_quality.py`` (markdown tables on stdout, also written
with a PNG plot to ``.bench/cache_quality/``). Data is read in place from
``../shared/data/cache`` (or ``$ROUTEGUARD_DATA/cache``); without it the bench says so and
exits 0. The first run embeds ~137k QQP texts with the local MiniLM (about 15 min on one
core) and keeps the vectors and the nearest neighbours in ``.bench/cache_quality``; later
runs take about a minute.

Protocol (GPTCache QQP, 80,854 pairs): put every ``text_a`` into ONE namespace of a
``SemanticCache``, then look up every ``text_b``. A ``text_a`` that repeats (the same text
after the cache's own normalisation: NFKC, case, spaces) is one entry, as the cache's
exact tier makes it. A hit on a label-1 pair is right when the entry it returns is that
pair's own ``text_a``; every other hit (a label-0 pair, or a label-1 pair served another
entry) is a false hit. Each pair is one lookup, even when its ``text_b`` recurs. The 9,511
lookups whose ``text_b`` is itself a stored ``text_a`` are answered by the exact tier with
that same text at any threshold: no threshold or verifier decides them, so they are left
out of every count. precision = right / hits, recall = right / label-1 pairs, false-hit
rate = false hits / lookups. "precision (closure)" also counts as right a hit on an entry
that QQP labels a duplicate of the query through a chain of label-1 pairs (QQP asks the
same question many times; the strict protocol calls those hits false). Pairs are split
50/50 into dev and test by connected cluster of texts (a text and everything paired with
it, transitively, fall on one side; seed 7): every choice is made on dev, reported on test.

Data flow: texts -> MiniLM vectors (cached .npy) -> the Rust ``VectorIndex`` the cache uses
-> the 4 nearest entries and scores of each ``text_b`` (cached .npz; the cache examines 4)
-> plain hit at threshold t = the best candidate if it scores >= t; ours = the first of the
4 candidates at or above t that ``HitVerifier`` accepts (what ``SemanticCache._semantic``
does) -> counts per threshold. The equivalence of this sweep with the real
``SemanticCache.get`` is checked on a sample of pairs each run. MeanCache's contextual
follow-ups and GPTCache's ``mock_data.json`` go through the real cache.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import random
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.cache.index import VectorIndex
from routeguard.cache.keys import normalise
from routeguard.cache.semantic import _CANDIDATES, SemanticCache
from routeguard.cache.verify import CHECKS, DEFAULT_CHECKS, HitVerifier

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ROUTEGUARD_DATA", ROOT.parent / "shared" / "data")) / "cache"
OUT = ROOT / ".bench" / "cache_quality"
PRECISION = "f32"  # the embedder's; --precision bf16 re-runs everything in cache_quality-bf16/
QQP = DATA / "gptcache-qqp" / "similiar_qqp_full.json.gz"
QQP_MEMBER = "examples/benchmark/similiar_qqp_full.json"
MOCK = DATA / "gptcache-qqp" / "mock_data.json"
MEANCACHE = DATA / "meancache-context" / "contextual_queries.json"
SEED = 7
THRESHOLDS = [round(0.70 + 0.01 * i, 2) for i in range(30)]
TARGET_PRECISION = 0.90
BANDS = [None, 0.02, 0.04, 0.06]  # verifier consulted only for scores in [t, t + band)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


# ---------------------------------------------------------------------------- data


def embed_cached(texts: Sequence[str], name: str) -> F32:
    """MiniLM vectors of ``texts``, computed once and kept in ``.bench/cache_quality``."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = OUT / f"{name}-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path)  # type: ignore[no-any-return]
    from routeguard.embed import default_embedder

    embedder = default_embedder(PRECISION)  # type: ignore[arg-type]
    OUT.mkdir(parents=True, exist_ok=True)
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    t0 = time.perf_counter()
    for i in range(0, len(texts), 2048):
        out[i : i + 2048] = embedder.embed(texts[i : i + 2048])
        done = min(i + 2048, len(texts))
        rate = done / (time.perf_counter() - t0)
        log(f"embedded {done}/{len(texts)} {name} texts ({rate:.0f}/s)")
    np.save(path, out)
    return out


class Precomputed:
    """An embedder answering from precomputed MiniLM rows (the real model for other texts),
    so the real ``SemanticCache`` runs the protocol without embedding anything twice."""

    def __init__(self, texts: Sequence[str], vectors: F32) -> None:
        self.rows = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors
        self.dim = int(vectors.shape[1])

    def embed(self, texts: Sequence[str]) -> F32:
        """Rows for known texts; the others go through the local MiniLM."""
        missing = [t for t in texts if t not in self.rows]
        if missing:
            from routeguard.embed import default_embedder

            extra = default_embedder(PRECISION).embed(missing)  # type: ignore[arg-type]
            self.vectors = np.concatenate([self.vectors, extra])
            for t in missing:
                self.rows[t] = len(self.rows)
        return np.ascontiguousarray(self.vectors[[self.rows[t] for t in texts]])


@dataclass
class Qqp:
    """The protocol's arrays: one row per pair (lookup), one entry per distinct text_a."""

    pairs: list[dict[str, Any]]
    entries: list[str]  # stored prompt of each entry (the last text_a put under its key)
    own: I64  # entry index of each pair's text_a
    exact: I64  # entry whose normalised text equals text_b (an exact-tier hit), else -1
    label: Bools
    test: Bools  # held-out split
    ids: I64  # (pairs, 4) nearest entries of text_b, best first
    scores: F32  # (pairs, 4) their cosines
    embedder: Precomputed
    query_cluster: I64  # duplicate cluster of text_b (label-1 pairs, transitively)
    entry_cluster: I64  # duplicate cluster of each entry


def load_qqp() -> Qqp:
    """Read the pairs, embed (cached), find each text_b's nearest entries (cached)."""
    with tarfile.open(QQP) as tar:
        member = tar.extractfile(QQP_MEMBER)
        assert member is not None, f"{QQP}: no member {QQP_MEMBER}"
        pairs: list[dict[str, Any]] = json.load(member)
    texts = sorted({p["text_a"] for p in pairs} | {p["text_b"] for p in pairs})
    embedder = Precomputed(texts, embed_cached(texts, "qqp"))
    key_of: dict[str, int] = {}
    entries: list[str] = []
    for p in pairs:
        k = normalise(p["text_a"])
        if k not in key_of:
            key_of[k] = len(entries)
            entries.append(p["text_a"])
        entries[key_of[k]] = p["text_a"]  # a later put replaces the earlier one
    own = np.array([key_of[normalise(p["text_a"])] for p in pairs], dtype=np.int64)
    exact = np.array([key_of.get(normalise(p["text_b"]), -1) for p in pairs], dtype=np.int64)
    label = np.array([p["label"] == 1 for p in pairs])
    ids, scores = _neighbours(embedder, entries, [p["text_b"] for p in pairs])
    cluster = _clusters([p for p in pairs if p["label"] == 1])
    qc = np.array([cluster(p["text_b"]) for p in pairs], dtype=np.int64)
    ec = np.array([cluster(e) for e in entries], dtype=np.int64)
    return Qqp(pairs, entries, own, exact, label, _split(pairs), ids, scores, embedder, qc, ec)


def _neighbours(emb: Precomputed, entries: list[str], queries: list[str]) -> tuple[I64, F32]:
    digest = hashlib.sha256("\x00".join(entries + queries).encode()).hexdigest()[:16]
    path = OUT / f"qqp-neighbours-{_CANDIDATES}-{digest}.npz"
    if path.exists():
        z = np.load(path)
        return z["ids"], z["scores"]
    log(f"searching {len(queries)} queries over {len(entries)} entries (cached after)")
    index = VectorIndex(emb.dim)
    index.add(np.arange(len(entries), dtype=np.uint64), emb.embed(entries))
    ids, scores = index.search_batch(emb.embed(queries), _CANDIDATES)
    np.savez(path, ids=ids.astype(np.int64), scores=scores)
    return ids.astype(np.int64), scores


def _clusters(pairs: list[dict[str, Any]]) -> Callable[[str], int]:
    """Connected components of the texts linked by ``pairs``: text -> component number."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = find(normalise(p["text_a"])), find(normalise(p["text_b"]))
        if a != b:
            parent[max(a, b)] = min(a, b)
    numbers: dict[str, int] = {}
    return lambda text: numbers.setdefault(find(normalise(text)), len(numbers))


def _split(pairs: list[dict[str, Any]]) -> Bools:
    """True for held-out pairs: whole clusters of texts (linked by any pair), by seeded coin."""
    cluster = _clusters(pairs)
    rng = random.Random(SEED)
    ids = [cluster(p["text_a"]) for p in pairs]
    side = [rng.random() < 0.5 for _ in range(max(ids) + 1)]
    return np.array([side[i] for i in ids])


# ---------------------------------------------------------------------------- sweep


@dataclass(frozen=True)
class Point:
    """Counts of one configuration at one threshold on one split."""

    threshold: float
    hits: int
    right: int  # strict: a label-1 pair served its own text_a
    right_closure: int  # served an entry labelled a duplicate of the query (transitively)
    positives: int
    lookups: int

    @property
    def false(self) -> int:
        return self.hits - self.right

    @property
    def precision(self) -> float:
        return self.right / self.hits if self.hits else 1.0

    @property
    def recall(self) -> float:
        return self.right / self.positives

    @property
    def false_rate(self) -> float:
        return self.false / self.lookups

    @property
    def precision_closure(self) -> float:
        return self.right_closure / self.hits if self.hits else 1.0


Masks = npt.NDArray[np.uint16]
TWO_SIDED_BIT = len(CHECKS)  # the "numbers" check without one-sided numbers


def refusal_masks(q: Qqp, floor: float) -> Masks:
    """Bit c of ``[pair, k]`` set when ``CHECKS[c]`` alone refuses candidate k (scored >= floor);
    bit ``TWO_SIDED_BIT`` when "numbers" does with ``one_sided_numbers=False``."""
    masks = np.zeros(q.ids.shape, dtype=np.uint16)
    single = [HitVerifier([c]) for c in CHECKS]
    single.append(HitVerifier(["numbers"], one_sided_numbers=False))
    for i, k in zip(*np.nonzero(q.scores >= floor), strict=True):
        query, cached = q.pairs[i]["text_b"], q.entries[q.ids[i, k]]
        for bit, v in enumerate(single):
            if v.explain(query, cached) is not None:
                masks[i, k] |= 1 << bit
    return masks


def bits(checks: Sequence[str], one_sided: bool = True) -> int:
    """The mask bits of ``checks``."""
    out = 0
    for c in checks:
        out |= 1 << (CHECKS.index(c) if c != "numbers" or one_sided else TWO_SIDED_BIT)
    return out


def served(q: Qqp, t: float, refuse: Bools | None, band: float | None = None) -> I64:
    """The entry each lookup is served at threshold ``t`` (-1 = miss), as the cache does:
    exact tier first, then the first candidate >= t that the verifier does not refuse (with
    a band, the verifier is consulted only below ``t + band``)."""
    ok = q.scores >= t
    if refuse is not None:
        consulted = ok if band is None else ok & (q.scores < t + band)
        ok = ok & ~(refuse & consulted)
    first = np.argmax(ok, axis=1)
    rows = np.arange(len(first))
    out = np.where(ok[rows, first], q.ids[rows, first], -1)
    return np.where(q.exact >= 0, q.exact, out)


def point(q: Qqp, hit: I64, mask: Bools, t: float) -> Point:
    """Right and false hits of ``hit`` over the pairs in ``mask``."""
    h = (hit >= 0) & mask
    right = h & q.label & (hit == q.own)
    closure = h & (q.entry_cluster[np.maximum(hit, 0)] == q.query_cluster)
    return Point(
        t,
        int(h.sum()),
        int(right.sum()),
        int(closure.sum()),
        int((q.label & mask).sum()),
        int(mask.sum()),
    )


def curve(q: Qqp, mask: Bools, refuse: Bools | None, band: float | None = None) -> list[Point]:
    return [point(q, served(q, t, refuse, band), mask, t) for t in THRESHOLDS]


def at(points: list[Point], t: float) -> Point:
    return next(p for p in points if abs(p.threshold - t) < 1e-9)


def check_equivalence(q: Qqp, masks: Masks) -> str:
    """Replay a sample through the real ``SemanticCache.get`` with an exact index; the sweep
    must agree exactly. (The default cache searches this many entries through HNSW, whose
    own recall is measured by the cache-search bench.)"""
    sample = random.Random(SEED).sample(range(len(q.pairs)), 1500)
    exact: dict[str, Any] = {}
    if "ann_threshold" in inspect.signature(SemanticCache).parameters:
        exact["ann_threshold"] = None
    lines = []
    for t, v in ((0.90, None), (0.84, HitVerifier())):
        cache = SemanticCache(q.embedder, threshold=t, verifier=v, max_entries=10**6, **exact)
        cache.put_many([(e, i) for i, e in enumerate(q.entries)])
        refuse = None if v is None else (masks & bits(DEFAULT_CHECKS)) != 0
        expected = served(q, t, refuse)
        got = cache.get_many([q.pairs[i]["text_b"] for i in sample])
        diff = sum(
            (-1 if h is None else h.response) != expected[i]
            for i, h in zip(sample, got, strict=True)
        )
        lines.append(f"{diff} of {len(sample)} differ at {t} {'with' if v else 'without'} verifier")
        assert diff == 0, f"sweep and SemanticCache disagree: {lines[-1]}"
    return "; ".join(lines)


# ---------------------------------------------------------------------------- other sets


def meancache(embedder: Precomputed, threshold: float) -> list[tuple[str, int, int]]:
    """MeanCache follow-ups through the real cache: (case, wrong hits, lookups)."""
    items = json.loads(MEANCACHE.read_text())
    conv = [
        [
            {"role": "user", "content": it["Main Query"]},
            {"role": "assistant", "content": it["Main Query Response"]},
        ]
        for it in items
    ]
    follow = [it["Follow-Up Query"] for it in items]
    n = len(items)
    out = []
    cache = SemanticCache(embedder, threshold=threshold, verifier=HitVerifier())
    cache.put_many([(it["Main Query"], ("main", i)) for i, it in enumerate(items)])
    wrong = sum(cache.get(f, context=c) is not None for f, c in zip(follow, conv, strict=True))
    out.append(("follow-up in its conversation; main queries cached standalone", wrong, n))
    ctx = SemanticCache(embedder, threshold=threshold, verifier=HitVerifier())
    for i, (f, c) in enumerate(zip(follow, conv, strict=True)):
        ctx.put(f, ("follow", i), context=c)
    other = [ctx.get(f, context=conv[(i + 1) % n]) for i, f in enumerate(follow)]
    out.append(("same follow-up words under another conversation", sum(map(bool, other)), n))
    own = [ctx.get(f, context=c) for f, c in zip(follow, conv, strict=True)]
    missed = sum(h is None or h.response != ("follow", i) for i, h in enumerate(own))
    out.append(("(sanity: misses) same follow-up in its own conversation", missed, n))
    for name, v in (("plain", None), ("verifier", HitVerifier())):
        blind = SemanticCache(embedder, threshold=threshold, verifier=v)
        blind.put_many([(it["Main Query"], i) for i, it in enumerate(items)])
        wrong = sum(h is not None for h in blind.get_many(follow))
        out.append((f"(for contrast) context ignored, {name}: main answer served", wrong, n))
    return out


def mock(embedder: Precomputed, thresholds: Sequence[float]) -> list[tuple[str, int, int, int]]:
    """GPTCache mock_data: put every origin, look up every similar: (config, right, wrong, miss)."""
    rows = json.loads(MOCK.read_text())
    out = []
    for t in thresholds:
        for name, v in (("plain", None), ("verifier", HitVerifier())):
            cache = SemanticCache(embedder, threshold=t, verifier=v)
            cache.put_many([(r["origin"], i) for i, r in enumerate(rows)])
            hits = cache.get_many([r["similar"] for r in rows])
            right = sum(h is not None and h.response == i for i, h in enumerate(hits))
            miss = sum(h is None for h in hits)
            out.append((f"{name} @ {t:.2f}", right, len(rows) - right - miss, miss))
    return out


# ---------------------------------------------------------------------------- report


def log(msg: str) -> None:
    print(f"  [cache_quality] {msg}", file=sys.stderr, flush=True)


HEAD = (
    "| config | threshold | hits | right | false | precision | recall | false-hit rate "
    "| precision (closure) |\n|---|---|---|---|---|---|---|---|---|"
)


def row(name: str, p: Point, extra: str = "") -> str:
    return (
        f"| {name} | {p.threshold:.2f} | {p.hits} | {p.right} | {p.false} | "
        f"{p.precision:.3f} | {p.recall:.3f} | {p.false_rate:.4f} | "
        f"{p.precision_closure:.3f} |{extra}"
    )


def run_qqp(out: list[str]) -> float:
    """The QQP tables; returns our threshold (recall of plain 0.90, fewer false hits)."""
    t0 = time.perf_counter()
    q = load_qqp()
    log(f"{len(q.pairs)} pairs, {len(q.entries)} entries ready in {time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    masks = refusal_masks(q, THRESHOLDS[0])
    n = int((q.scores >= THRESHOLDS[0]).sum())
    runs = len(CHECKS) + 1
    log(f"verifier: {n} candidates x {runs} single-check runs in {time.perf_counter() - t0:.0f}s")
    scored = q.exact < 0  # an exact-tier hit serves the same text: no threshold decides it
    dev, test = ~q.test & scored, q.test & scored
    out.append(
        f"{len(q.pairs)} pairs ({int(q.label.sum())} label 1), {len(q.entries)} entries "
        f"(distinct text_a). {int((~scored).sum())} lookups whose text_b is itself a stored "
        f"text_a are answered by the exact tier at any threshold and left out; the rest split "
        f"{int(dev.sum())} dev / {int(test.sum())} test. Sweep vs the real "
        f"`SemanticCache.get` on 1,500 lookups: {check_equivalence(q, masks)}.\n"
    )

    def refuse(checks: Sequence[str], one_sided: bool = True) -> Bools:
        return np.asarray((masks & bits(checks, one_sided)) != 0)

    ours = refuse(DEFAULT_CHECKS)
    plain_dev, plain_test = curve(q, dev, None), curve(q, test, None)
    ours_dev, ours_test = curve(q, dev, ours), curve(q, test, ours)

    out.append("### Curves (test split): plain cosine vs cosine + `HitVerifier()`\n")
    out.append(
        "| threshold | plain P | plain R | plain false-hit rate | plain P (closure) "
        "| ours P | ours R | ours false-hit rate | ours P (closure) |\n" + "|---" * 9 + "|"
    )
    for p, o in zip(plain_test, ours_test, strict=True):
        if round(p.threshold * 100) % 2 == 0:
            out.append(
                f"| {p.threshold:.2f} | {p.precision:.3f} | {p.recall:.3f} | "
                f"{p.false_rate:.4f} | {p.precision_closure:.3f} | {o.precision:.3f} | "
                f"{o.recall:.3f} | {o.false_rate:.4f} | {o.precision_closure:.3f} |"
            )

    # Each variant's threshold is the highest whose dev recall reaches plain 0.90's dev recall.
    target = at(plain_dev, 0.90).recall
    p90 = at(plain_test, 0.90)
    variants: list[tuple[str, Bools | None, float | None]] = [
        ("ours: `HitVerifier()`", ours, None),
        ("ours, numbers two-sided only", refuse(DEFAULT_CHECKS, one_sided=False), None),
        ("ours without substitution", refuse([c for c in CHECKS if c != "substitution"]), None),
    ]
    variants += [(f"ours, verifier only below t + {b}", ours, b) for b in BANDS if b]
    out.append("\n### Same recall as plain 0.90: false hits (threshold matched on dev)\n")
    out.append(HEAD.replace(" |\n|", " | vs plain |\n|---|", 1))
    out.append(row("plain cosine", p90, " |"))
    ours_t = 0.90
    for i, (name, ref, band) in enumerate(variants):
        t = max(p.threshold for p in curve(q, dev, ref, band) if p.recall >= target)
        p = point(q, served(q, t, ref, band), test, t)
        out.append(row(name, p, f" {1 - p.false / p90.false:.0%} fewer false hits |"))
        if i == 0:
            ours_t = t

    out.append(f"\n### Precision >= {TARGET_PRECISION}: reachable? (dev)\n")
    for name, pts in (("plain", plain_dev), ("ours", ours_dev)):
        best = max(pts, key=lambda p: p.precision)
        best_c = max(pts, key=lambda p: p.precision_closure)
        out.append(
            f"- {name}: highest strict precision {best.precision:.3f} (t {best.threshold:.2f}, "
            f"recall {best.recall:.3f}); highest closure precision {best_c.precision_closure:.3f} "
            f"(t {best_c.threshold:.2f})"
        )

    out.append(
        f"\n### What each check buys (test, threshold {ours_t:.2f}, checks added in order)\n"
    )
    out.append(
        HEAD.replace(" |\n|", " | false removed | right lost | alone: false removed "
                     "| alone: right lost |\n|---|---|---|---|", 1)
    )  # fmt: skip
    base = point(q, served(q, ours_t, None), test, ours_t)
    prev = base
    out.append(row("plain cosine", base, " | | | |"))
    order = [*DEFAULT_CHECKS, *(c for c in CHECKS if c not in DEFAULT_CHECKS)]
    for i, c in enumerate(order):
        cum = point(q, served(q, ours_t, refuse(order[: i + 1])), test, ours_t)
        alone = point(q, served(q, ours_t, refuse([c])), test, ours_t)
        extra = (
            f" {prev.false - cum.false} | {prev.right - cum.right} | "
            f"{base.false - alone.false} | {base.right - alone.right} |"
        )
        out.append(row(f"+ {c}" + (" (opt-in)" if c not in DEFAULT_CHECKS else ""), cum, extra))
        prev = cum
    out.append("")
    examples(q, masks, dev, ours_t, out)
    plot(plain_test, ours_test, p90)
    return ours_t


def examples(q: Qqp, masks: Masks, dev: Bools, t: float, out: list[str]) -> None:
    """A refused top candidate per check on dev: one false hit and one right hit if any."""
    out.append("Refusals on dev (top candidate; ✗ = would have been a false hit, ✓ = right):\n")
    rng = random.Random(SEED)
    for bit, c in enumerate(CHECKS):
        rows = np.nonzero(dev & (q.scores[:, 0] >= t) & ((masks[:, 0] >> bit) & 1 == 1))[0]
        good = [i for i in rows if q.label[i] and q.ids[i, 0] == q.own[i]]
        bad = [i for i in rows if not (q.label[i] and q.ids[i, 0] == q.own[i])]
        for pool, tag in ((bad, "✗"), (good, "✓")):
            if pool:
                i = rng.choice(pool)
                cached = q.entries[q.ids[i, 0]]
                why = HitVerifier([c]).explain(q.pairs[i]["text_b"], cached)
                out.append(f"- {tag} {why}: {q.pairs[i]['text_b']!r} vs cached {cached!r}")
    out.append("")


def plot(plain: list[Point], ours: list[Point], p90: Point) -> None:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        log("matplotlib not installed: no plot (pip install matplotlib into the venv)")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for pts, name in ((plain, "plain cosine"), (ours, "cosine + HitVerifier")):
        a.plot([p.recall for p in pts], [p.precision for p in pts], marker=".", label=name)
        b.plot([p.threshold for p in pts], [p.false_rate for p in pts], marker=".", label=name)
    a.scatter([p90.recall], [p90.precision], color="black", zorder=3, label="plain @ 0.90")
    a.set(xlabel="recall", ylabel="precision (strict)", title="QQP protocol, held-out split")
    b.set(xlabel="threshold", ylabel="false hits / lookups", title="false-hit rate")
    a.legend()
    b.legend()
    fig.tight_layout()
    path = OUT / "cache_quality.png"
    fig.savefig(path, dpi=110)
    log(f"plot: {path}")


def main() -> int:
    global OUT, PRECISION
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--precision", default="f32", choices=["f32", "f16", "bf16", "int8"],
        help="the MiniLM's precision (vectors and results kept apart per precision)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.precision != "f32":
        PRECISION = args.precision
        OUT = OUT.with_name(f"cache_quality-{PRECISION}")
    missing = [p for p in (QQP, MOCK, MEANCACHE) if not p.exists()]
    if missing:
        print(
            f"cache_quality: skipped, data not found: {', '.join(map(str, missing))} "
            "(set ROUTEGUARD_DATA to the folder holding cache/)"
        )
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    out = ["## Semantic cache hit quality (`benches/cache_quality.py`)\n"]
    ours_t = run_qqp(out)
    texts = [r[k] for r in json.loads(MOCK.read_text()) for k in ("origin", "similar")]
    emb = Precomputed(texts, embed_cached(texts, "mock"))
    out.append(
        "### GPTCache mock_data.json: 999 paraphrase pairs (GPTCache published, ALBERT + "
        "faiss: 804 right / 77 wrong / 118 miss at its 0.90, 904 / 92 / 3 at 0.80)\n"
    )
    out.append("| config | right | wrong | miss |\n|---|---|---|---|")
    for name, right, wrong, miss in mock(emb, sorted({0.80, 0.85, 0.90, ours_t})):
        out.append(f"| {name} | {right} | {wrong} | {miss} |")
    items = json.loads(MEANCACHE.read_text())
    texts = sorted({it[k] for it in items for k in ("Main Query", "Follow-Up Query")})
    emb = Precomputed(texts, embed_cached(texts, "meancache"))
    out.append(f"\n### MeanCache contextual follow-ups (real cache, threshold {ours_t:.2f})\n")
    out.append("| case | wrong hits | lookups |\n|---|---|---|")
    for case, wrong, n in meancache(emb, ours_t):
        out.append(f"| {case} | {wrong} | {n} |")
    text = "\n".join(out) + "\n"
    print(text)
    (OUT / "report.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
