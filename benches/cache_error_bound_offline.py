"""The wrong-hit bound replayed offline: the same decisions as the gateway, in seconds.

Run: ``.venv/bin/python benches/cache_error_bound_offline.py [--dataset qqp-duplicates]
[--orders shuffled ab] [--deltas 0.01 0.02 0.05 0.1]`` (Markdown on stdout); ``--cv`` chooses
the strata's margin cut on half of the clusters (two-fold cross-validation) and replays the
other half with it and with the shipped cut.

The traffic, clusters, sampling and warm-up are those of ``benches/cache_error_bound.py``;
what is left out is the gateway around the decision. Per request, the candidate is found as
the semantic tier finds it (the nearest of the four nearest stored entries the verifier
accepts, at or above the floor; its margin over the nearest later entry of another
cluster), :class:`~routeguard.cache.bound.ErrorBound` decides, a compared candidate is
judged by its cluster (the judge the by-meaning upstream makes exact), and every request
not served from the cache is stored, as the gateway does. Fixed thresholds (0.80 to 0.99)
are replayed the same way, and so is the previous version's single threshold per route (the
same bound with every candidate in one stratum tested at the whole error probability). It
reproduces the gateway replay's fixed-threshold rows exactly and its bound rows within
sampling noise (the gateway's judge compares answer embeddings).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cache_error_bound as replay
from routeguard.cache.bound import (
    FLOOR,
    MARGIN_CUT,
    WALKS,
    Decision,
    ErrorBound,
    start_size,
    wilson_lower,
    wilson_upper,
)
from routeguard.cache.verify import HitVerifier
from routeguard.mock.meanings import Meanings, fold

CANDIDATES = 4
NEIGHBOURS = 24  # nearest earlier requests kept per request (stored or not)


@dataclass
class Outcome:
    """One configuration after warm-up."""

    hits: int
    wrong: int
    lookups: int
    shadow: int
    requests: int
    thresholds: str

    def cells(self) -> str:
        """The table cells."""
        rate = self.wrong / self.hits if self.hits else 0.0
        lo, hi = (
            wilson_lower(rate, self.hits, replay.Z95),
            wilson_upper(rate, self.hits, replay.Z95),
        )
        hit_rate = self.hits / max(1, self.lookups)
        shadow = self.shadow / max(1, self.requests)
        return (
            f"{self.hits} | {self.wrong} | {rate:.2%} [{lo:.2%}, {hi:.2%}] | "
            f"{hit_rate:.1%} | {shadow:.2%} | {self.thresholds}"
        )


class Fixed:
    """A fixed threshold as a policy."""

    def __init__(self, t: float) -> None:
        self.t = t

    def decide(self, score: float, margin: float | None) -> Decision:
        """Serve at or above the threshold."""
        return Decision(score >= self.t, False, False, 1.0)


def single_stratum(delta: float, rng: random.Random) -> ErrorBound:
    """The previous version's bound: one stratum at the whole error probability (a replay
    passes no margin, so every candidate counts as clear)."""
    bound = ErrorBound(delta, rng=rng)
    level = 1.0 - (1.0 - bound.confidence) / WALKS
    first = start_size(delta, level)
    bound.levels = (level, *bound.levels[1:])
    bound.starts = (tuple(first * 4.0**j for j in range(WALKS)), *bound.starts[1:])
    return bound


def neighbours(vectors: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per request: the nearest earlier requests and their similarities, nearest first."""
    out = [(np.zeros(0, int), np.zeros(0))]
    for i in range(1, len(vectors)):
        s = vectors[:i] @ vectors[i]
        k = min(NEIGHBOURS, i)
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.argsort(-s[top])]
        out.append((top, s[top]))
    return out


def run(
    policy: ErrorBound | Fixed,
    questions: Sequence[str],
    clusters: Sequence[str | None],
    near: list[tuple[np.ndarray, np.ndarray]],
    verify: HitVerifier,
    warmup: int,
    cut: float | None = MARGIN_CUT,
) -> Outcome:
    """Replay ``questions`` under ``policy``, with candidates clear from a margin of ``cut``
    over the nearest rival (None: no margin, one stratum)."""
    stored = np.zeros(len(questions), bool)
    exact: set[str] = set()
    hits = wrong = lookups = shadow = 0
    for i, q in enumerate(questions):
        f = fold(q)
        if f in exact:
            continue
        top, sims = near[i]
        live = [
            (int(j), float(s)) for j, s in zip(top, sims, strict=True) if stored[j] and s >= FLOOR
        ][:CANDIDATES]
        cand = None
        margin = None
        for n, (j, s) in enumerate(live):
            if verify(q, questions[j]):
                rivals = [x for jj, x in live[n + 1 :] if clusters[jj] != clusters[j]]
                cand, margin = (j, s), s - max(rivals[0] if rivals else FLOOR, FLOOR)
                break
        lookups += i >= warmup
        if cand is None:
            if isinstance(policy, ErrorBound):
                policy.no_candidate()
            stored[i] = True
            exact.add(f)
            continue
        j, s = cand
        bad = clusters[j] != clusters[i]
        if cut is None:
            margin = None
        elif margin is not None:  # the bound's stratum test, moved to ``cut``
            margin += MARGIN_CUT - cut
        d = policy.decide(s, margin)
        if d.serve:
            if i >= warmup:
                hits += 1
                wrong += bad
            continue
        if d.compare and isinstance(policy, ErrorBound):
            policy.record(s, bad, d)
        shadow += d.shadow and i >= warmup
        stored[i] = True
        exact.add(f)
    if isinstance(policy, ErrorBound):
        ts = policy.estimate(fresh=True).thresholds
        thresholds = " / ".join("-" if t is None else f"{t:.2f}" for t in ts)
    else:
        thresholds = "-"
    return Outcome(hits, wrong, lookups, shadow, len(questions) - warmup, thresholds)


def compare(
    deltas: Sequence[float],
    questions: Sequence[str],
    clusters: Sequence[str | None],
    near: list[tuple[np.ndarray, np.ndarray]],
    verify: HitVerifier,
    warmup: int,
) -> None:
    """Print every delta's rows: both versions of the bound, and fixed thresholds."""
    fixed = {
        t: run(Fixed(t), questions, clusters, near, verify, warmup)  # type: ignore[arg-type]
        for t in np.round(np.arange(0.80, 0.995, 0.01), 2).tolist()
    }
    print(
        "| configuration | semantic hits | wrong | wrong-hit rate [95% CI] | semantic hit "
        "rate | shadow calls / request | thresholds at the end (clear / crowded) |\n"
        "|---|---|---|---|---|---|---|"
    )
    for delta in deltas:
        one = run(single_stratum(delta, random.Random(1)), questions, clusters, near, verify,
                  warmup, cut=None)  # fmt: skip
        print(f"| δ {delta}: one threshold (previous version) | {one.cells()} |")
        out = run(
            ErrorBound(delta, rng=random.Random(1)), questions, clusters, near, verify, warmup
        )
        print(f"| δ {delta}: clear/crowded strata (this version) | {out.cells()} |")
        if out.hits:
            rate = out.hits / out.lookups
            t = min(fixed, key=lambda t: abs(fixed[t].hits / fixed[t].lookups - rate))
            print(f"| δ {delta}: fixed {t} (same hit rate as the strata) | {fixed[t].cells()} |")
        ok = [t for t, o in fixed.items() if o.hits and o.wrong <= delta * o.hits]
        if ok:
            print(
                f"| δ {delta}: fixed {min(ok)} (hindsight: most hits within δ) | "
                f"{fixed[min(ok)].cells()} |"
            )
        else:
            print(f"| δ {delta}: no fixed threshold within δ in hindsight | | | | | | |")


CUTS = (0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)


def halves(data: Sequence[dict[str, Any]], meanings: Meanings, seed: int) -> list[list[Any]]:
    """The pairs split in two by cluster (seeded): no cluster has questions in both."""
    keys = sorted({str(meanings.of(p["text_a"])) for p in data})
    random.Random(seed).shuffle(keys)
    first = set(keys[: len(keys) // 2])
    out: list[list[Any]] = [[], []]
    for p in data:
        out[str(meanings.of(p["text_a"])) not in first].append(p)
    return out


def cross_validate(
    args: argparse.Namespace,
    data: Sequence[dict[str, Any]],
    meanings: Meanings,
    embedder: replay.MemoEmbedder,
    verify: HitVerifier,
) -> None:
    """Choose the cut on half of the clusters (two folds), replay the other half."""
    tune, held = halves(data, meanings, args.seed)
    folds = halves(tune, meanings, args.seed + 1)
    print(f"\n{args.dataset}: {len(tune)} pairs to choose the cut on (folds of "
          f"{len(folds[0])} and {len(folds[1])}), {len(held)} held out; "
          f"{args.orders[0]} order\n")  # fmt: skip

    Traffic = tuple[list[str], list[str | None], list[tuple[np.ndarray, np.ndarray]], int]

    def prepare(pairs: Sequence[dict[str, Any]]) -> Traffic:
        questions = replay.traffic(pairs, args.pairs, args.seed, args.orders[0])
        clusters = [meanings.of(q) for q in questions]
        near = neighbours(embedder.embed(questions))
        return questions, clusters, near, min(2000, len(questions) // 2)

    def curve(traffic: Traffic, delta: float) -> dict[float, Outcome]:
        questions, clusters, near, warmup = traffic
        return {
            c: run(ErrorBound(delta, rng=random.Random(1)), questions, clusters, near, verify,
                   warmup, cut=c)
            for c in CUTS
        }  # fmt: skip

    parts = [prepare(f) for f in folds]
    rest = prepare(held)
    print("| δ | part | " + " | ".join(f"cut {c:.2f}" for c in CUTS) + " | cut chosen |")
    print("|---|---|" + "---|" * (len(CUTS) + 1))

    def cell(o: Outcome) -> str:
        return f"{o.hits / max(1, o.lookups):.1%}, {o.wrong / o.hits if o.hits else 0:.1%}"

    for delta in args.deltas:
        per_fold = [curve(f, delta) for f in parts]
        for n, c in enumerate(per_fold):
            print(f"| {delta} | fold {n + 1} | " + " | ".join(cell(c[x]) for x in CUTS) + " | |")
        # the cut serving most on average among those within delta on both folds
        ok = [x for x in CUTS if all(c[x].wrong <= delta * c[x].hits for c in per_fold)]
        mean = {x: sum(c[x].hits / max(1, c[x].lookups) for c in per_fold) / 2 for x in ok}
        chosen = max(mean, key=lambda x: (mean[x], -abs(x - MARGIN_CUT))) if mean else None
        out = curve(rest, delta)
        pick = "-" if chosen is None else f"{chosen:.2f}"
        print(f"| {delta} | held out | " + " | ".join(cell(out[x]) for x in CUTS) + f" | {pick} |")


def main() -> int:
    """Replay every delta and the fixed thresholds on every order asked for."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="qqp-duplicates",
                   choices=["qqp", "qqp-duplicates", "gptcache-mock", "paraphrases"])  # fmt: skip
    p.add_argument("--orders", nargs="+", choices=["ab", "ba", "shuffled"], default=["shuffled"])
    p.add_argument("--deltas", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1])
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cv", action="store_true", help="choose the margin cut on held-in clusters")
    args = p.parse_args()
    if not replay.QQP.exists():
        print(f"no data at {replay.QQP}: nothing to run", file=sys.stderr)
        return 0
    data, truth = replay.load_data(args.dataset)
    pairs = [(x["text_a"], x["text_b"], int(x["label"])) for x in truth]
    pairs += [(t, t, 1) for x in truth for t in (x["text_a"], x["text_b"])]
    meanings = Meanings.from_pairs(pairs)
    embedder = replay.MemoEmbedder()
    verifier = HitVerifier()
    memo: dict[tuple[str, str], bool] = {}

    def verify(a: str, b: str) -> bool:
        if (a, b) not in memo:
            memo[(a, b)] = verifier(a, b)
        return memo[(a, b)]

    if args.cv:
        cross_validate(args, data, meanings, embedder, verify)  # type: ignore[arg-type]
        return 0
    for order in args.orders:
        questions = replay.traffic(data, args.pairs, args.seed, order)
        warmup = min(2000, len(questions) // 2)
        clusters = [meanings.of(q) for q in questions]
        near = neighbours(embedder.embed(questions))
        print(f"\n{args.dataset}, {order}, {len(questions)} requests, first {warmup} warm-up\n")
        compare(args.deltas, questions, clusters, near, verify, warmup)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
