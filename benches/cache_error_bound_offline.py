"""The wrong-hit bound replayed offline: the same decisions as the gateway, in seconds.

Run: ``.venv/bin/python benches/cache_error_bound_offline.py [--dataset qqp-duplicates]
[--orders shuffled ab] [--deltas 0.01 0.02 0.05 0.1]`` (Markdown on stdout).

The traffic, clusters, sampling and warm-up are those of ``benches/cache_error_bound.py``;
what is left out is the gateway around the decision. Per request, the candidate is found as
the semantic tier finds it (the nearest of the four nearest stored entries the verifier
accepts, at or above the floor; its margin over the nearest later entry of another
cluster), :class:`~routeguard.cache.bound.ErrorBound` decides, a compared candidate is
judged by its cluster (the judge the by-meaning upstream makes exact), and every request
not served from the cache is stored, as the gateway does. Fixed thresholds (0.80 to 0.99)
are replayed the same way. It reproduces the gateway replay's fixed-threshold rows exactly
and its bound rows within sampling noise (the gateway's judge compares answer embeddings).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cache_error_bound as replay
from routeguard.cache.bound import FLOOR, Decision, ErrorBound, wilson_lower, wilson_upper
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
) -> Outcome:
    """Replay ``questions`` under ``policy``."""
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


def main() -> int:
    """Replay every delta and the fixed thresholds on every order asked for."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="qqp-duplicates", choices=["qqp", "qqp-duplicates"])
    p.add_argument("--orders", nargs="+", choices=["ab", "ba", "shuffled"], default=["shuffled"])
    p.add_argument("--deltas", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1])
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--seed", type=int, default=7)
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

    for order in args.orders:
        questions = replay.traffic(data, args.pairs, args.seed, order)
        warmup = min(2000, len(questions) // 2)
        clusters = [meanings.of(q) for q in questions]
        near = neighbours(embedder.embed(questions))
        fixed = {
            t: run(Fixed(t), questions, clusters, near, verify, warmup)  # type: ignore[arg-type]
            for t in np.round(np.arange(0.80, 0.995, 0.01), 2).tolist()
        }
        print(f"\n{args.dataset}, {order}, {len(questions)} requests, first {warmup} warm-up\n")
        print(
            "| configuration | semantic hits | wrong | wrong-hit rate [95% CI] | semantic hit "
            "rate | shadow calls / request | thresholds at the end (clear / crowded) |\n"
            "|---|---|---|---|---|---|---|"
        )
        for delta in args.deltas:
            out = run(
                ErrorBound(delta, rng=random.Random(1)), questions, clusters, near, verify, warmup
            )
            print(f"| max_error_rate {delta} | {out.cells()} |")
            if out.hits:
                rate = out.hits / out.lookups
                t = min(fixed, key=lambda t: abs(fixed[t].hits / fixed[t].lookups - rate))
                print(f"| fixed {t} (same hit rate) | {fixed[t].cells()} |")
            ok = [t for t, o in fixed.items() if o.hits and o.wrong <= delta * o.hits]
            if ok:
                print(
                    f"| fixed {min(ok)} (hindsight: most hits within {delta}) | "
                    f"{fixed[min(ok)].cells()} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
